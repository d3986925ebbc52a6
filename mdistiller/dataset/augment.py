"""Device-side batched views: weak (crop + flip) and strong (crop + flip + RandAugment + Cutout).

The trainer moves the collated uint8 batch to the device and calls the transform built by
:func:`build_batch_transform`; it replaces ``image`` by normalized float views. All random
parameters are drawn on the CPU (a ``torch.Generator`` passed in, or the global RNG), so the
views do not depend on the device and drawing them never waits for the device.

The strong view follows the FixMatch-style RandAugment of SLD and MLKD: per sample two ops
drawn uniformly with replacement from :data:`OPS`, each with a magnitude
``v = lo + (hi - lo) * U(0, 1)``, then Cutout. Ops reproduce PIL's definitions on uint8
images (ImageEnhance blends, ImageOps LUTs, ``Image.transform`` affine maps with nearest
sampling and black fill).
"""

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as TF

from ..utils.errors import ConfigError
from .device_decode import DeviceDecoder

CUTOUT_FILL = (125, 123, 114)


def _to(t, device):
    """Copy a small CPU tensor to ``device`` without waiting for the device (pinned on CUDA)."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------
# Pixel ops: (uint8 images (n, 3, H, W), magnitudes (n,) float on the same device) -> uint8
# ---------------------------------------------------------------------------------------
def _gray(x):
    """PIL ``convert("L")``: (19595 R + 38470 G + 7471 B + 2**15) >> 16, as int32 (n, 1, H, W)."""
    w = torch.tensor([19595, 38470, 7471], dtype=torch.int32, device=x.device).view(1, 3, 1, 1)
    return ((x.int() * w).sum(1, keepdim=True) + 32768) >> 16


def _blend(degenerate, x, factor):
    """PIL ``Image.blend(degenerate, x, factor)`` for factor in [0, 1] (truncates as PIL does)."""
    d = degenerate.float()
    return (d + factor.view(-1, 1, 1, 1) * (x.float() - d)).to(torch.uint8)


def _brightness(x, v):
    return _blend(torch.zeros_like(x), x, v)


def _color(x, v):
    return _blend(_gray(x), x, v)


def _contrast(x, v):
    return _blend(_gray(x).float().mean((1, 2, 3), keepdim=True).add(0.5).floor(), x, v)


def _sharpness(x, v):
    return _blend(TF.adjust_sharpness(x, 0.0), x, v)  # factor 0 = PIL's SMOOTH-filtered image


def _autocontrast(x, v):
    """PIL ``ImageOps.autocontrast``: per channel, stretch [min, max] onto [0, 255] (a float64
    LUT as PIL computes it: ``int(i * scale + offset)``)."""
    lo = x.amin((2, 3)).double().unsqueeze(-1)
    hi = x.amax((2, 3)).double().unsqueeze(-1)
    scale = torch.full_like(hi, 255.0).div_((hi - lo).clamp_(min=1))
    offset = -lo * scale
    i = torch.arange(256, dtype=torch.float64, device=x.device)
    lut = torch.where(hi > lo, (i * scale).add_(offset).clamp_(0, 255), i).to(torch.uint8)
    return lut.gather(2, x.flatten(2).long()).view_as(x)


def _posterize(x, v):
    bits = v.long().clamp(1, 8)
    mask = torch.bitwise_left_shift(torch.full_like(bits, 255), 8 - bits) & 255
    return x & mask.to(torch.uint8).view(-1, 1, 1, 1)


def _solarize(x, v):
    return torch.where(x >= v.view(-1, 1, 1, 1), 255 - x, x)


# ---------------------------------------------------------------------------------------
# Affine ops: magnitudes (n,) float64 on the CPU -> PIL ``Image.transform`` AFFINE
# coefficients (a, b, c, d, e, f): output pixel (x, y) samples input (ax+by+c, dx+ey+f),
# pixel coordinates with the origin at the top-left corner.
# ---------------------------------------------------------------------------------------
def _coeffs(n, a=1.0, b=0.0, c=0.0, d=0.0, e=1.0, f=0.0):
    return torch.stack([torch.as_tensor(t, dtype=torch.float64).expand(n) for t in (a, b, c, d, e, f)], 1)


def _rotate(v, h, w):
    """``Image.rotate(v)``: counter-clockwise by v degrees about the centre (PIL's arithmetic)."""
    t = -torch.deg2rad(torch.remainder(v, 360.0))
    cx, cy = w / 2, h / 2
    a, b, d, e = t.cos(), t.sin(), -t.sin(), t.cos()
    return _coeffs(len(v), a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy)


def _shear_x(v, h, w):
    return _coeffs(len(v), b=v)


def _shear_y(v, h, w):
    return _coeffs(len(v), d=v)


def _translate_x(v, h, w):
    return _coeffs(len(v), c=v * w)


def _translate_y(v, h, w):
    return _coeffs(len(v), f=v * h)


# The reference's table, in its order: (name, lo, hi, pixel op or None, affine coefficients or None).
OPS = (
    ("AutoContrast", 0.0, 1.0, _autocontrast, None),
    ("Brightness", 0.05, 0.95, _brightness, None),
    ("Color", 0.05, 0.95, _color, None),
    ("Contrast", 0.05, 0.95, _contrast, None),
    ("Equalize", 0.0, 1.0, lambda x, v: TF.equalize(x), None),
    ("Identity", 0.0, 1.0, None, None),
    ("Posterize", 4.0, 8.0, _posterize, None),
    ("Rotate", -30.0, 30.0, None, _rotate),
    ("Sharpness", 0.05, 0.95, _sharpness, None),
    ("ShearX", -0.3, 0.3, None, _shear_x),
    ("ShearY", -0.3, 0.3, None, _shear_y),
    ("Solarize", 0.0, 256.0, _solarize, None),
    ("TranslateX", -0.3, 0.3, None, _translate_x),
    ("TranslateY", -0.3, 0.3, None, _translate_y),
)
OP_NAMES = tuple(op[0] for op in OPS)
OP_LO = torch.tensor([op[1] for op in OPS], dtype=torch.float64)
OP_HI = torch.tensor([op[2] for op in OPS], dtype=torch.float64)
_AFFINE = [j for j, op in enumerate(OPS) if op[4] is not None]
_PIXEL = [j for j, op in enumerate(OPS) if op[4] is None]
_EXEC_RANK = torch.empty(len(OPS), dtype=torch.int64)
_EXEC_RANK[_PIXEL + _AFFINE] = torch.arange(len(OPS))  # affine ops last, so they form one chunk


def _warp(x, coeffs):
    """PIL's nearest-neighbour AFFINE transform with black fill, per sample, as an index gather.

    PIL evaluates general maps in 16.16 fixed point: input x = (A2 + y A1 + x A0) >> 16 with
    A = round(65536 * coefficient) and A2 = round(65536 (c + a/2 + b/2)), likewise for y.
    Maps without cross terms take its double-precision scaling path; here those are
    translations (a = e = 1), which shift by floor(c + 1/2).
    """
    m, ch, h, w = x.shape
    a, b, c, d, e, f = coeffs.unbind(1)
    fixed = torch.stack([a, b, c + a / 2 + b / 2, d, e, f + d / 2 + e / 2], 1).mul(65536).add(0.5).floor()
    one, zero = torch.full_like(a, 65536.0), torch.zeros_like(a)
    shift = torch.stack([one, zero, (c + 0.5).floor() * 65536, zero, one, (f + 0.5).floor() * 65536], 1)
    k = _to(torch.where(((b == 0) & (d == 0)).view(-1, 1), shift, fixed).long(), x.device).view(m, 6, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    xin = (k[:, 2] + ys * k[:, 1] + xs * k[:, 0]) >> 16
    yin = (k[:, 5] + ys * k[:, 4] + xs * k[:, 3]) >> 16
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    lin = torch.where(inside, yin * w + xin, 0).view(m, 1, h * w).expand(m, ch, h * w)
    return x.flatten(2).gather(2, lin).view_as(x) * inside.unsqueeze(1)


def apply_randaugment(x, ops, mags):
    """Apply op ``ops[i, k]`` with magnitude ``mags[i, k]`` to image ``i``, for k = 0, 1, ...

    ``x``: uint8 (n, 3, H, W) on any device; ``ops`` (n, k) int64 indices into :data:`OPS` and
    ``mags`` (n, k) on the CPU. Samples are grouped by op (one sort per slot), each group is
    transformed in one batched call, and the affine ops share one gather.
    """
    n, _, h, w = x.shape
    perm = torch.arange(n)  # x[i] holds original sample perm[i]
    for k in range(ops.shape[1]):
        order = torch.argsort(_EXEC_RANK[ops[perm, k]], stable=True)
        perm = perm[order]
        x = x[_to(order, x.device)]
        col, mag = ops[perm, k], mags[perm, k].double()
        counts = torch.bincount(_EXEC_RANK[col], minlength=len(OPS)).tolist()
        mag_dev = _to(mag.float(), x.device)
        start = 0
        for j, count in zip(_PIXEL, counts):
            fn, end = OPS[j][3], start + count
            if count and fn is not None:
                x[start:end] = fn(x[start:end], mag_dev[start:end])
            start = end
        if start < n:
            coeffs = torch.stack([OPS[j][4](mag[start:], h, w) for j in _AFFINE])  # (5, m, 6)
            pick = _EXEC_RANK[col[start:]] - len(_PIXEL)
            x[start:] = _warp(x[start:], coeffs[pick, torch.arange(n - start)])
    return x[_to(torch.argsort(perm), x.device)]


def cutout(x, cy, cx, side):
    """Fill a square of about ``side`` pixels centred at (cy, cx) with :data:`CUTOUT_FILL`.

    As the reference (PIL ``ImageDraw.rectangle``, corners included): the top-left corner is
    ``floor(max(0, centre - side / 2))``, the box covers ``floor(side) + 1`` pixels (none for
    side 0) and is clipped at the bottom/right border. ``cy``, ``cx``, ``side``: (n,), CPU;
    the centres may be floats (the reference draws them continuous).
    """
    n, _, h, w = x.shape
    y0 = (cy - side / 2).clamp(min=0).floor()
    x0 = (cx - side / 2).clamp(min=0).floor()
    extent = torch.where(side > 0, side.floor() + 1, 0)
    bounds = _to(torch.stack([y0, y0 + extent, x0, x0 + extent], 1).float(), x.device)
    ys = torch.arange(h, device=x.device).view(1, h)
    xs = torch.arange(w, device=x.device).view(1, w)
    rows = (ys >= bounds[:, 0:1]) & (ys < bounds[:, 1:2])
    cols = (xs >= bounds[:, 2:3]) & (xs < bounds[:, 3:4])
    mask = (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)
    fill = torch.tensor(CUTOUT_FILL, dtype=torch.uint8, device=x.device).view(1, 3, 1, 1)
    return torch.where(mask, fill, x)


def crop_flip(x, oy, ox, flip, pad):
    """Per-sample crop at offset (oy, ox) of the ``pad``-zero-padded image, then flip where ``flip``.

    One gather over the batch; ``oy``, ``ox`` (n,) int64 and ``flip`` (n,) bool on the CPU.
    """
    n, c, h, w = x.shape
    if pad:
        x = nnf.pad(x, (pad, pad, pad, pad))
    oy, ox, flip = (_to(t.view(-1, 1), x.device) for t in (oy, ox, flip))
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = oy + ar_h
    cols = ox + torch.where(flip, w - 1 - ar_w, ar_w)
    lin = (rows[:, :, None] * x.shape[-1] + cols[:, None, :]).view(n, 1, h * w)
    return x.flatten(2).gather(2, lin.expand(n, c, h * w)).view(n, c, h, w)


# ---------------------------------------------------------------------------------------
# Parameter sampling (CPU)
# ---------------------------------------------------------------------------------------
def sample_crop_flip(n, pad, generator=None, rotate=0.0):
    """Crop offsets in [0, 2 pad] and flips with probability 1/2; with ``rotate`` > 0 also
    ``angle``, uniform in [-rotate, rotate] degrees (torchvision's ``RandomRotation(rotate)``)."""
    out = {
        "oy": torch.randint(2 * pad + 1, (n,), generator=generator),
        "ox": torch.randint(2 * pad + 1, (n,), generator=generator),
        "flip": torch.rand(n, generator=generator) < 0.5,
    }
    if rotate:
        out["angle"] = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * rotate
    return out


def rotate_crop_flip(x, oy, ox, flip, pad, angle=None):
    """The weak view's geometry: rotation by ``angle`` degrees (counter-clockwise about the
    centre, nearest pixel, black fill: PIL's ``Image.rotate`` as torchvision's RandomRotation
    calls it) when given, then :func:`crop_flip`."""
    if angle is not None:
        x = _warp(x, _rotate(angle, x.shape[-2], x.shape[-1]))
    return crop_flip(x, oy, ox, flip, pad)


def _reference_uniform(size, n, generator):
    """``n`` draws of numpy's ``uniform(low=size, high=1.0)`` (float64): values in (1, size]."""
    return size - (size - 1) * torch.rand(n, generator=generator, dtype=torch.float64)


def sample_randaugment(n, h, w, num_ops=2, generator=None):
    """Ops (uniform, with replacement), magnitudes (uniform in each op's range), Cutout box.

    Cutout's side is ``w * U(0, 0.5)`` (32 * U(0, 0.5) at 32x32). Its centre follows the
    reference's ``np.random.uniform(w)``, which is numpy's ``uniform(low=w, high=1.0)``: each
    coordinate is ``size - (size - 1) * U[0, 1)``, a float in (1, size], not a uniform pixel
    (the corner is truncated to an int only when the box is drawn, see :func:`cutout`).
    """
    ops = torch.randint(len(OPS), (n, num_ops), generator=generator)
    u = torch.rand(n, num_ops, generator=generator, dtype=torch.float64)
    return {
        "ops": ops,
        "mags": OP_LO[ops] + (OP_HI - OP_LO)[ops] * u,
        "cutout_side": w * 0.5 * torch.rand(n, generator=generator, dtype=torch.float64),
        "cutout_cy": _reference_uniform(h, n, generator),
        "cutout_cx": _reference_uniform(w, n, generator),
    }


# ---------------------------------------------------------------------------------------
# The transform
# ---------------------------------------------------------------------------------------
class BatchTransform:
    """Callable turning a collated batch's uint8 ``image`` into normalized float views.

    eval: ``image`` (normalized); train, one view: ``image`` = weak view; two views:
    ``image_weak`` and ``image_strong``. A batch that carries ``crop_strong`` (a second,
    independent worker crop, e.g. ImageNet's RandomResizedCrop) makes the strong view from it;
    otherwise both views start from ``image``. With ``record=True`` the drawn parameters of
    the last call are kept in ``last_params`` (``{"weak": ..., "strong": ...}``).
    """

    def __init__(self, spec, num_views, train, device, generator=None, record=False):
        if num_views not in (1, 2):
            raise ConfigError(f"the input pipeline makes 1 or 2 views, not {num_views}")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("the batch transform draws its random parameters on the CPU; pass a CPU torch.Generator")
        self.num_views, self.train, self.pad, self.rotate = num_views, train, spec.pad, spec.rotate
        self.generator, self.record, self.last_params = generator, record, None
        std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale, self.shift = 1 / (255 * std), -mean / std
        self.decoder = None  # DATASET.DECODE device batches (they carry "jpeg"): made on first use
        self.size, self.device = spec.image_size, torch.device(device)

    def normalize(self, x):
        """uint8 -> (x / 255 - mean) / std, as float32."""
        return torch.addcmul(self.shift, x.float(), self.scale)

    def strong(self, x, p):
        x = apply_randaugment(rotate_crop_flip(x, p["oy"], p["ox"], p["flip"], self.pad, p.get("angle")),
                              p["ops"], p["mags"])
        return cutout(x, p["cutout_cy"], p["cutout_cx"], p["cutout_side"])

    def __call__(self, batch):
        if "jpeg" in batch:  # undecoded (DATASET.DECODE device): decode and crop on the device first
            if self.decoder is None:
                self.decoder = DeviceDecoder(self.size, self.device)
            batch = self.decoder(batch)
        out = dict(batch)
        x = out.pop("image")
        x_strong = out.pop("crop_strong", x)
        if not self.train:
            out["image"] = self.normalize(x)
            return out
        n, _, h, w = x.shape
        params = {"weak": sample_crop_flip(n, self.pad, self.generator, self.rotate)}
        weak = self.normalize(rotate_crop_flip(x, **params["weak"], pad=self.pad))
        if self.num_views == 1:
            out["image"] = weak
        else:
            params["strong"] = {**sample_crop_flip(n, self.pad, self.generator, self.rotate),
                                **sample_randaugment(n, h, w, generator=self.generator)}
            out["image_weak"], out["image_strong"] = weak, self.normalize(self.strong(x_strong, params["strong"]))
        if self.record:
            self.last_params = params
        return out


def build_batch_transform(spec, num_views, train, device, generator=None, record=False):
    """The device-side view maker for ``spec`` (see :class:`BatchTransform`)."""
    return BatchTransform(spec, num_views, train, torch.device(device), generator, record)
