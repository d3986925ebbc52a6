#!/usr/bin/env python3
"""Command-line wrapper: mdistiller.cli.train parses the arguments, mdistiller.engine.run runs."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mdistiller.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
