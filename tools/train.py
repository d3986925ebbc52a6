#!/usr/bin/env python3
"""The reference repos' name for tools/train_ours.py: the same code path."""

import os
import runpy

if __name__ == "__main__":
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_ours.py"), run_name="__main__")
