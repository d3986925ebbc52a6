#!/usr/bin/env python3
"""Summarize a project's runs as a table and plots; see mdistiller/cli/summarize.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, always

from mdistiller.cli.summarize import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
