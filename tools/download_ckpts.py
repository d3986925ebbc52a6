#!/usr/bin/env python3
"""Command-line wrapper; the implementation is mdistiller.cli.download (see its docstring)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, always

from mdistiller.cli.download import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
