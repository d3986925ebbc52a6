#!/usr/bin/env python3
"""Run a grid of experiments (or print their commands); see mdistiller/cli/sweep.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, always

from mdistiller.cli.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
