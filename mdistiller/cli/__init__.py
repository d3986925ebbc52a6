"""Implementations of the command-line tools in tools/ (each has main(argv) -> exit code)."""
