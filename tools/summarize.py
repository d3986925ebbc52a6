#!/usr/bin/env python3
"""Summarize a project's runs as a table and plots; see mdistiller/cli/summarize.py."""

import importlib.util
import os
import sys

if importlib.util.find_spec("mdistiller") is None:  # not installed: use this checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mdistiller.cli.summarize import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
