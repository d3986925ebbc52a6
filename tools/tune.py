#!/usr/bin/env python3
"""Search hyper-parameters on the holdout with Optuna; see mdistiller/cli/tune.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, always

from mdistiller.cli.tune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
