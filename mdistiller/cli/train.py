"""``python3 tools/train_ours.py --cfg FILE [--resume [--new-teacher]] [--overwrite] [--quiet] [KEY VALUE ...]``

Trains a teacher (``DISTILLER.TYPE NONE``) or distils a student, on one device or under
``torchrun``. Everything that can be wrong with the input (config, names, files, data) is
checked before the first step and reported as one line on stderr. The run itself is
:func:`mdistiller.engine.run.train`.
"""

import argparse
import sys

from ..engine.run import train
from .common import ArgumentParser, add_debug_flag

FLAGS = ("--resume", "--overwrite", "--new-teacher", "--debug", "--quiet")


def parse_args(argv):
    p = ArgumentParser(description="Train or distil an image classifier.")
    p.add_argument("--cfg", type=str, default=None, help="YAML config file")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's run folder")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start afresh")
    p.add_argument("--new-teacher", action="store_true",
                   help="with --resume: accept a teacher checkpoint file other than the one the run started with "
                        "(recorded in config_history.jsonl)")
    add_debug_flag(p)
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = p.parse_args(argv)
    if args.cfg is not None and not args.cfg.strip():
        p.error("argument --cfg: is empty; give a YAML config file (or leave --cfg out for the defaults)")
    # the flags may also come among or after the KEY VALUE pairs (where a key would be)
    opts, i = list(args.opts or []), 0
    args.opts = []
    while i < len(opts):
        if opts[i] in FLAGS:
            setattr(args, opts[i][2:].replace("-", "_"), True)
            i += 1
        else:
            args.opts += opts[i:i + 2]
            i += 2
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    return train(args.cfg or None, args.opts, resume=args.resume, overwrite=args.overwrite, debug=args.debug,
                 quiet=args.quiet, argv=argv, new_teacher=args.new_teacher)


if __name__ == "__main__":
    sys.exit(main())
