"""``python3 tools/train_ours.py --cfg FILE [--resume [--new-teacher]] [--overwrite] [--quiet] [--print-config]
[--logit-stand [--base-temp T] [--kd-weight W]] [KEY VALUE ...]``

Trains a teacher (``DISTILLER.TYPE NONE``) or distils a student, on one device or under
``torchrun``. Everything that can be wrong with the input (config, names, files, data) is
checked before the first step and reported as one line on stderr. The run itself is
:func:`mdistiller.engine.run.train`.

``--logit-stand``, ``--base-temp`` and ``--kd-weight`` are the logit-standardization
repository's flags, with its semantics (:func:`mdistiller.config.load.apply_ls_flags`), so its
README's commands run unchanged. ``--print-config`` prints the effective config (what the run
folder's ``config.yaml`` would hold) on stdout and exits, reading no data, teacher or run folder.
"""

import argparse
import sys

from ..engine.run import train
from .common import ArgumentParser, add_debug_flag, number

FLAGS = ("--resume", "--overwrite", "--new-teacher", "--debug", "--quiet", "--print-config", "--logit-stand")
VALUE_FLAGS = ("--base-temp", "--kd-weight")

BASE_TEMP = number(float, above=0.0, what="a temperature, e.g. 2")
KD_WEIGHT = number(float, low=0.0, what="e.g. 9")


def parse_args(argv):
    p = ArgumentParser(description="Train or distil an image classifier.")
    p.add_argument("--cfg", type=str, default=None, help="YAML config file")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's run folder")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start afresh")
    p.add_argument("--new-teacher", action="store_true",
                   help="with --resume: accept a teacher checkpoint file other than the one the run started with "
                        "(recorded in config_history.jsonl)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective config (as the run folder's config.yaml) on stdout and exit")
    p.add_argument("--logit-stand", action="store_true",
                   help="the logit-standardization repository's flag: for KD, DKD and MLKD, standardize the "
                        "logits and apply --base-temp and --kd-weight (other methods: no change)")
    p.add_argument("--base-temp", type=BASE_TEMP, default=None,
                   help="with --logit-stand: the base temperature (default 2)")
    p.add_argument("--kd-weight", type=KD_WEIGHT, default=None,
                   help="with --logit-stand: the KD weight; DKD's ALPHA and BETA are multiplied by it (default 9)")
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
        elif opts[i] in VALUE_FLAGS:
            if i + 1 >= len(opts):
                p.error(f"argument {opts[i]}: expected one argument")
            parse = BASE_TEMP if opts[i] == "--base-temp" else KD_WEIGHT
            try:
                setattr(args, opts[i][2:].replace("-", "_"), parse(opts[i + 1]))
            except argparse.ArgumentTypeError as e:
                p.error(f"argument {opts[i]}: {e}")
            i += 2
        else:
            args.opts += opts[i:i + 2]
            i += 2
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ls_flags = {"logit_stand": args.logit_stand, "base_temp": args.base_temp, "kd_weight": args.kd_weight}
    return train(args.cfg or None, args.opts, resume=args.resume, overwrite=args.overwrite, debug=args.debug,
                 quiet=args.quiet, argv=argv, ls_flags=ls_flags, print_config=args.print_config,
                 new_teacher=args.new_teacher)


if __name__ == "__main__":
    sys.exit(main())
