"""``python3 tools/make_image_folder.py DEST [--classes K] [--train N] [--val N] [--size S]``

Writes a small image-folder dataset, ``DEST/{train,val}/class_<k>/<i>.png``, from the
synthetic dataset's learnable stripes (PNG files of ``--size`` pixels), to try the
``imagefolder`` dataset and docs/models_and_data.md offline. Refuses a DEST that exists.
"""

import logging
import os
import shutil
import tempfile

import torch.nn.functional as F
from PIL import Image

from ..dataset.synthetic import make_images
from ..runs.folder import describe_os_error, file_mode, missing_folders, remove_empty
from ..utils.errors import ConfigError, DataError
from .common import ArgumentParser, add_debug_flag, new_folder, number, run_tool


def write_split(folder, n, classes, size, seed):
    images, targets = make_images(n, classes, seed)
    if size != images.shape[-1]:
        images = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
        images = images.round().clamp(0, 255).byte()
    for i, (image, target) in enumerate(zip(images, targets.tolist())):
        path = os.path.join(folder, f"class_{target:03d}")
        os.makedirs(path, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(os.path.join(path, f"{i}.png"))


#: the largest dataset this tool writes (images per split, classes, pixels per side)
MAX_IMAGES, MAX_CLASSES, MAX_SIZE = 1_000_000, 10_000, 1024


def check(args):
    """Settings the image-folder dataset could not train on are refused before writing."""
    for flag, count in (("--train", args.train), ("--val", args.val)):
        if count < args.classes:
            raise ConfigError(f"{flag} {count} gives some of the {args.classes} classes no image; set {flag} to at "
                              f"least --classes ({args.classes}), e.g. {10 * args.classes}")
    if os.path.lexists(args.dest):
        raise ConfigError(f"'{args.dest}' already exists; choose another folder (nothing was written)")


def run(args):
    check(args)
    parent = os.path.dirname(os.path.abspath(args.dest))
    created = missing_folders(parent)
    staging = None
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(args.dest))}.", dir=parent)
        os.chmod(staging, file_mode(0o777))  # the umask's mode, not mkdtemp's 0700
        write_split(os.path.join(staging, "train"), args.train, args.classes, args.size, seed=0)
        write_split(os.path.join(staging, "val"), args.val, args.classes, args.size, seed=1)
        os.rename(staging, args.dest)  # whole or nothing
        staging = None
    except OSError as e:
        raise DataError(describe_os_error(e, getattr(e, "filename", None) or args.dest,
                                          then="then run again")) from None
    finally:
        if staging is not None:  # not renamed into place: nothing is left behind
            shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isdir(args.dest):
            remove_empty(created)
    logging.getLogger("mdistiller.data").info(f"wrote {args.train} training and {args.val} validation images of "
                                              f"{args.classes} classes to {args.dest}")
    return 0


def main(argv=None):
    p = ArgumentParser(description="Write a small synthetic image-folder dataset.")
    p.add_argument("dest", type=new_folder, help="folder to create")
    p.add_argument("--classes", type=number(int, low=2, high=MAX_CLASSES), default=10,
                   help="number of classes (default 10)")
    p.add_argument("--train", type=number(int, low=1, high=MAX_IMAGES), default=1000,
                   help="training images (default 1000)")
    p.add_argument("--val", type=number(int, low=1, high=MAX_IMAGES), default=200,
                   help="validation images (default 200)")
    p.add_argument("--size", type=number(int, low=8, high=MAX_SIZE), default=96,
                   help="image side in pixels (default 96)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    return run_tool(lambda: run(args), args.debug, args.quiet)
