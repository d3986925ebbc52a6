#!/usr/bin/env python3
"""Command-line wrapper; the implementation is mdistiller.cli.export (see its docstring)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mdistiller.cli.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
