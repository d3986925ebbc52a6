#!/usr/bin/env python3
"""Command-line wrapper; the implementation is mdistiller.cli.download (see its docstring)."""

import os
import sys

try:
    import mdistiller  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mdistiller.cli.download import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
