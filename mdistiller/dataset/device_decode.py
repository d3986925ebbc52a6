"""``DATASET.DECODE device``: decode a batch of JPEG bytes on the training device, then crop.

The workers hand over each image's bytes and its crop boxes (see
:class:`~mdistiller.dataset.imagenet.ImageFolderDataset`); :class:`DeviceDecoder` decodes the
batch with ``torchvision.io.decode_jpeg`` on the device (nvJPEG on CUDA; on a CPU device the
same call runs on the CPU), cuts each box out and resizes it to the output size with
torch's antialiased bilinear filter (the ``cpu`` workers decode and resize an RGB JPEG with
the same calls, so on a CPU device the two agree to within one grey level: see
``docs/performance.md``). Without boxes
(validation) an image is resized to ``size * 256 / 224`` on its shorter side and
centre-cropped. The result is what the ``cpu`` workers return (uint8 ``image`` and
``crop_strong``), so the flip, the strong view and the normalization follow unchanged.

An image the device decoder refuses (on CUDA: CMYK, often greyscale; anywhere: a PNG named
``.JPEG``, a corrupt file) is decoded on the CPU with PIL, per image, and counted in the log.
A file neither can read (e.g. a truncated JPEG PIL refuses) is replaced for that step by
another sample of the batch (its image, boxes, label and index) and named once in the log.
"""

import logging

import torch
from torchvision.transforms.v2 import functional as TF

from ..utils.errors import DataError
from .imagenet import IMAGE_ERRORS, centre_view, decode_jpeg_rgb, open_rgb, resized_crops

log = logging.getLogger("mdistiller.data")


class DeviceDecoder:
    """Callable turning a ``DECODE device`` batch (``jpeg``, ``path``, ``box``(, ``box_strong``))
    into the ``cpu`` workers' batch (``image``(, ``crop_strong``) uint8 at ``size``) on ``device``."""

    def __init__(self, size, device):
        self.size, self.device = size, torch.device(device)
        self.fallbacks, self.unreadable = set(), set()  # files decoded on the CPU; files nobody reads

    def decode(self, jpegs, paths):
        """Decoded uint8 (3, H, W) images on the device; None where no decoder reads the file."""
        try:
            return list(decode_jpeg_rgb(jpegs, self.device))
        except RuntimeError:  # one image spoils a batched call: decode one by one
            return [self.decode_one(data, path) for data, path in zip(jpegs, paths)]

    def decode_one(self, data, path):
        try:
            return decode_jpeg_rgb(data, self.device)
        except RuntimeError:
            pass
        try:
            image = TF.pil_to_tensor(open_rgb(data.numpy().tobytes())[0]).to(self.device, non_blocking=True)
        except IMAGE_ERRORS:
            if path not in self.unreadable:
                self.unreadable.add(path)
                log.warning(f"device decode: neither the device decoder nor PIL reads '{path}'; another sample of "
                            f"the batch takes its place (named once)")
            return None
        if path not in self.fallbacks:
            self.fallbacks.add(path)
            log.info(f"device decode: '{path}' decoded on the CPU (not a JPEG the device decodes); "
                     f"{len(self.fallbacks)} such file(s) so far")
        return image

    def crop(self, image, box):
        top, left, h, w = box
        if not (h and w):  # the header was unreadable but the decoder was not: the whole image
            top, left, h, w = 0, 0, *image.shape[-2:]
        return resized_crops(image, (1.0, 1.0), [(top, left, h, w)], self.size)[0]

    def centre(self, image):
        return centre_view(image, self.size)

    def __call__(self, batch):
        out = dict(batch)
        paths = out.pop("path")
        images = self.decode(out.pop("jpeg"), paths)
        keep = [i for i, im in enumerate(images) if im is not None]
        if not keep:
            raise DataError(f"no image of a batch could be decoded (e.g. '{paths[0]}'); check the data folder")
        if len(keep) < len(images):  # sample i becomes a copy of a readable sample j
            src = [i if images[i] is not None else keep[0] for i in range(len(images))]
            images = [images[j] for j in src]
            for key in ("box", "box_strong"):
                if key in out:
                    out[key] = [out[key][j] for j in src]
            index = torch.tensor(src)
            for key in ("target", "index"):
                out[key] = out[key][index.to(out[key].device)]
        if "box" not in out:  # validation geometry
            out["image"] = torch.stack([self.centre(im) for im in images])
            return out
        out["image"] = torch.stack([self.crop(im, b) for im, b in zip(images, out.pop("box"))])
        if "box_strong" in out:
            out["crop_strong"] = torch.stack([self.crop(im, b) for im, b in zip(images, out.pop("box_strong"))])
        return out
