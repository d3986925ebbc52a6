"""``python3 tools/export.py RUN_DIR``: ship a run's student as ONNX, TorchScript or a ``torch.export`` program.

Writes ``student.onnx`` (or ``.torchscript`` / ``.pt2``), ``model_card.json``, ``README.md``
and a copy of ``config.yaml`` into ``--out`` (default ``RUN_DIR/export/``), after checking
that the exported model gives PyTorch's logits on the run's own test images and on random
inputs (see docs/export.md). The implementation is :mod:`mdistiller.export.run_export`.
"""

import argparse
import sys

from ..export.formats import DEFAULT_OPSET, FORMATS
from ..export.run_export import CHECKPOINTS, DEFAULT_TOLERANCE, export_run
from .common import ArgumentParser, add_debug_flag, run_tool


def batch_arg(text):
    """``dynamic`` (None) or a positive int."""
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a number of images nor 'dynamic'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of images")
    return value


def parse_args(argv):
    summary, details = __doc__.split("\n\n", 1)
    p = ArgumentParser(description=summary, epilog=details, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run folder (holding config.yaml and student_best)")
    p.add_argument("--checkpoint", choices=list(CHECKPOINTS), default="best",
                   help="best = student_best (default), last = student_latest, ema = student_ema")
    p.add_argument("--format", choices=list(FORMATS), default="onnx",
                   help="onnx (default; run by onnxruntime), torchscript, or pt2 (a torch.export program)")
    p.add_argument("--out", default="", help="output folder (default RUN_DIR/export)")
    p.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--batch", type=batch_arg, default=None, metavar="N|dynamic",
                   help="a fixed batch size N, or dynamic (default)")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="the graph takes uint8 NCHW RGB (0..255) and normalises it itself")
    p.add_argument("--images", type=int, default=128, help="test images for the parity check (default 128)")
    p.add_argument("--random-inputs", type=int, default=8, help="random inputs for the parity check (default 8)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"largest allowed |logit difference| from PyTorch (default {DEFAULT_TOLERANCE:g})")
    add_debug_flag(p)
    return p.parse_args(argv)


def export(args):
    path, card = export_run(args.run_dir, args.checkpoint, args.format, args.out or None, args.opset, args.batch,
                            args.with_preprocessing, args.images, args.random_inputs, args.tolerance)
    p = card["parity"]
    print(f"{path}: {card['student']}, {card['parameters']:,} parameters, {card['flops'] / 1e6:.1f} MFLOPs; "
          f"max |logit diff| {p['max_abs_logit_diff']:.2e}, top-1 agreement {100 * p['top1_agreement']:.1f}%")
    return 0


def main(argv=None):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_tool(lambda: export(args), args.debug, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
