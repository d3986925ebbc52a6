"""``python3 tools/make_image_folder.py DEST [--classes K] [--train N] [--val N] [--size S]``

Writes a small image-folder dataset, ``DEST/{train,val}/class_<k>/<i>.png``, from the
synthetic dataset's learnable stripes (PNG files of ``--size`` pixels), to try the
``imagefolder`` dataset and docs/models_and_data.md offline. Refuses a DEST that exists.
"""

import argparse
import logging
import os

import torch.nn.functional as F
from PIL import Image

from ..dataset.synthetic import make_images
from ..utils.errors import MdistillerError
from .common import add_debug_flag, run_tool


def write_split(folder, n, classes, size, seed):
    images, targets = make_images(n, classes, seed)
    if size != images.shape[-1]:
        images = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
        images = images.round().clamp(0, 255).byte()
    for i, (image, target) in enumerate(zip(images, targets.tolist())):
        path = os.path.join(folder, f"class_{target:03d}")
        os.makedirs(path, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(os.path.join(path, f"{i}.png"))


def run(args):
    if os.path.exists(args.dest):
        raise MdistillerError(f"'{args.dest}' already exists; choose another folder (nothing was written)")
    write_split(os.path.join(args.dest, "train"), args.train, args.classes, args.size, seed=0)
    write_split(os.path.join(args.dest, "val"), args.val, args.classes, args.size, seed=1)
    logging.getLogger("mdistiller.data").info(f"wrote {args.train} training and {args.val} validation images of "
                                              f"{args.classes} classes to {args.dest}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description="Write a small synthetic image-folder dataset.")
    p.add_argument("dest", help="folder to create")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    p.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    return run_tool(lambda: run(args), args.debug, args.quiet)
