"""Device-side batched views: shapes, crop/flip, RandAugment distribution and PIL semantics."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mdistiller.dataset import DatasetSpec, build_batch_transform
from mdistiller.dataset.augment import (
    CUTOUT_FILL,
    OP_HI,
    OP_LO,
    OP_NAMES,
    apply_randaugment,
    crop_flip,
    cutout,
    sample_randaugment,
)
from mdistiller.dataset.bench import PIL_OPS

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def make_spec(pad=4, size=32):
    return DatasetSpec(None, None, num_classes=10, model_family="cifar", mean=MEAN, std=STD,
                       image_size=size, pad=pad)


def make_batch(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
            "target": torch.arange(n) % 3, "index": torch.arange(n) + 10}


def normalize(x):
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def as_pil(t):
    return Image.fromarray(t.permute(1, 2, 0).numpy())


def from_pil(im):
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)


# ---------------------------------------------------------------------------------------
# Shapes, labels, normalization, crop and flip
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("train,views,keys", [(False, 1, ["image"]), (False, 2, ["image"]),
                                             (True, 1, ["image"]), (True, 2, ["image_weak", "image_strong"])])
def test_views_keep_labels_shapes_and_dtype(train, views, keys):
    batch = make_batch()
    out = build_batch_transform(make_spec(), views, train, "cpu")(batch)
    assert set(out) == set(keys) | {"target", "index"}
    assert out["target"] is batch["target"] and out["index"] is batch["index"]
    for k in keys:
        assert out[k].dtype == torch.float32 and out[k].shape == (6, 3, 32, 32)
    if not train:
        torch.testing.assert_close(out["image"], normalize(batch["image"]))


def test_weak_view_is_padded_crop_and_flip_of_recorded_parameters():
    batch = make_batch(n=64)
    t = build_batch_transform(make_spec(), 1, True, "cpu", generator=torch.Generator().manual_seed(1), record=True)
    out = t(batch)["image"]
    p = t.last_params["weak"]
    assert p["oy"].min() == 0 and p["oy"].max() == 8 and 0.2 < p["flip"].float().mean() < 0.8
    padded = torch.nn.functional.pad(batch["image"], (4, 4, 4, 4))
    for i in range(64):
        oy, ox = int(p["oy"][i]), int(p["ox"][i])
        crop = padded[i, :, oy:oy + 32, ox:ox + 32]
        expected = crop.flip(-1) if p["flip"][i] else crop
        torch.testing.assert_close(out[i], normalize(expected[None])[0])


def test_rotation_view_is_torchvision_random_rotation_then_flip():
    """Tiny-ImageNet's view (upstream: RandomRotation(20), RandomHorizontalFlip): each sample
    is PIL's nearest-neighbour rotation by its recorded angle (torchvision's call, black
    fill), then flipped where recorded, with no crop; the angles are uniform in [-20, 20]."""
    import torchvision.transforms.functional as TF

    batch = make_batch(n=48, size=64)
    spec = DatasetSpec(None, None, num_classes=10, model_family="tiny_imagenet", mean=MEAN, std=STD,
                       image_size=64, pad=0, rotate=20.0)
    t = build_batch_transform(spec, 1, True, "cpu", generator=torch.Generator().manual_seed(3), record=True)
    out = t(batch)["image"]
    p = t.last_params["weak"]
    assert p["oy"].eq(0).all() and p["ox"].eq(0).all()
    assert -20 <= p["angle"].min() < -10 and 10 < p["angle"].max() <= 20
    for i in range(48):
        im = TF.rotate(as_pil(batch["image"][i]), float(p["angle"][i]))  # NEAREST, fill 0, as RandomRotation
        expected = from_pil(TF.hflip(im) if p["flip"][i] else im)
        torch.testing.assert_close(out[i], normalize(expected[None])[0])


def test_imagenet_size_weak_view_is_flip_only():
    x = make_batch(n=8, size=40)["image"]
    flip = torch.tensor([True, False] * 4)
    zeros = torch.zeros(8, dtype=torch.int64)
    out = crop_flip(x, zeros, zeros, flip, pad=0)
    assert torch.equal(out[flip], x[flip].flip(-1)) and torch.equal(out[~flip], x[~flip])


def test_same_generator_seed_gives_same_views_and_strong_differs_from_weak():
    outs = [build_batch_transform(make_spec(), 2, True, "cpu", generator=torch.Generator().manual_seed(5))(make_batch())
            for _ in range(2)]
    assert torch.equal(outs[0]["image_strong"], outs[1]["image_strong"])
    assert torch.equal(outs[0]["image_weak"], outs[1]["image_weak"])
    assert not torch.equal(outs[0]["image_weak"], outs[0]["image_strong"])


def test_strong_view_is_reproduced_from_its_recorded_parameters():
    batch = make_batch(n=16)
    t = build_batch_transform(make_spec(), 2, True, "cpu", generator=torch.Generator().manual_seed(2), record=True)
    out = t(batch)
    p = t.last_params["strong"]
    x = crop_flip(batch["image"], p["oy"], p["ox"], p["flip"], pad=4)
    # one image at a time through the same ops gives the same result as the grouped batch
    single = torch.cat([cutout(apply_randaugment(x[i:i + 1], p["ops"][i:i + 1], p["mags"][i:i + 1]),
                               p["cutout_cy"][i:i + 1], p["cutout_cx"][i:i + 1], p["cutout_side"][i:i + 1])
                        for i in range(16)])
    torch.testing.assert_close(out["image_strong"], normalize(single))


# ---------------------------------------------------------------------------------------
# Distribution of the strong augmentation's parameters
# ---------------------------------------------------------------------------------------
def test_randaugment_parameter_distribution():
    n = 14000
    p = sample_randaugment(n, 32, 32, generator=torch.Generator().manual_seed(0))
    ops, mags = p["ops"], p["mags"]
    assert ops.shape == mags.shape == (n, 2)
    # uniform op choice: chi-square with 13 degrees of freedom (99.9% quantile is 34.5)
    counts = torch.bincount(ops.flatten(), minlength=14).double()
    expected = 2 * n / 14
    assert ((counts - expected) ** 2 / expected).sum() < 34.5
    # with replacement and independent slots: both slots equal for about 1/14 of samples
    assert abs((ops[:, 0] == ops[:, 1]).double().mean() - 1 / 14) < 0.01
    assert abs((ops[:, 0] == 3).double().mean() - (ops[:, 1] == 3).double().mean()) < 0.02
    # magnitudes uniform in each op's range
    for j, name in enumerate(OP_NAMES):
        v = mags[ops == j]
        lo, hi = float(OP_LO[j]), float(OP_HI[j])
        width = hi - lo
        assert v.min() >= lo and v.max() <= hi, name
        assert v.min() < lo + 0.01 * width and v.max() > hi - 0.01 * width, name
        assert abs(v.mean() - (lo + hi) / 2) < 0.03 * width, name
        assert abs(v.std() - width / 12 ** 0.5) < 0.03 * width, name
    assert dict(zip(OP_NAMES, zip(OP_LO.tolist(), OP_HI.tolist())))["Solarize"] == (0.0, 256.0)
    # Cutout side 32 * U(0, 0.5)
    side = p["cutout_side"]
    assert side.min() >= 0 and side.max() <= 16 and side.max() > 15.9 and abs(side.mean() - 8) < 0.15


def test_cutout_centre_follows_numpy_uniform_with_the_size_as_low():
    """The reference draws each centre coordinate with ``np.random.uniform(32)``, i.e.
    ``uniform(low=32, high=1.0)``: continuous in (1, 32], not a whole pixel in 0..31."""
    n = 20000
    p = sample_randaugment(n, 32, 32, generator=torch.Generator().manual_seed(1))
    reference = np.sort(np.random.RandomState(1).uniform(32, size=n))
    for key in ("cutout_cx", "cutout_cy"):
        c = p[key]
        assert c.dtype == torch.float64 and c.min() > 1 and c.max() <= 32
        assert (c != c.round()).double().mean() > 0.99  # continuous, not whole pixels
        # two-sample Kolmogorov-Smirnov distance to numpy's own draws (99.9%: 1.95 * sqrt(2 / n))
        ours = np.sort(c.numpy())
        grid = np.concatenate([ours, reference])
        ks = np.abs(np.searchsorted(ours, grid, "right") - np.searchsorted(reference, grid, "right")).max() / n
        assert ks < 1.95 * (2 / n) ** 0.5, key
    assert abs(float(p["cutout_cx"].mean()) - 16.5) < 0.2 and abs(float(p["cutout_cx"].std()) - 31 / 12 ** 0.5) < 0.2
    # a 224-pixel image draws in (1, 224]
    wide = sample_randaugment(2000, 224, 224, generator=torch.Generator().manual_seed(2))["cutout_cx"]
    assert wide.min() > 1 and wide.max() <= 224 and wide.max() > 223


def test_transform_records_the_parameters_it_draws():
    t = build_batch_transform(make_spec(), 2, True, "cpu", generator=torch.Generator().manual_seed(3), record=True)
    t(make_batch(n=500, size=8))
    p = t.last_params["strong"]
    assert p["ops"].shape == (500, 2) and p["cutout_side"].max() <= 4  # side scales with the image: 8 * U(0, 0.5)
    assert len(torch.unique(p["ops"])) == 14


def reference_cutout(im, cy, cx, v):
    """The reference's CutoutAbs with a given centre: PIL rectangle, corners included."""
    w, h = im.size
    x0, y0 = int(max(0, cx - v / 2.0)), int(max(0, cy - v / 2.0))
    im = im.copy()
    ImageDraw.Draw(im).rectangle((x0, y0, min(w, x0 + v), min(h, y0 + v)), CUTOUT_FILL)
    return im


def test_cutout_matches_the_reference_rectangle():
    n = 200
    x = smooth_images(n, 32, seed=4)
    g = torch.Generator().manual_seed(4)
    # continuous centres in (1, 32] as the reference draws them
    cy, cx = (32 - 31 * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(2))
    side = 16 * torch.rand(n, generator=g, dtype=torch.float64)
    side[:3] = torch.tensor([6.0, 16.0, 0.0], dtype=torch.float64)
    cy[:3], cx[:3] = torch.tensor([10.9, 1.2, 5.0]), torch.tensor([20.4, 32.0, 5.0])
    out = cutout(x, cy, cx, side)
    for i in range(n):
        expected = x[i] if side[i] == 0 else from_pil(reference_cutout(as_pil(x[i]), float(cy[i]), float(cx[i]), float(side[i])))
        assert torch.equal(out[i], expected), i
    fill = torch.tensor(CUTOUT_FILL, dtype=torch.uint8).view(3, 1, 1)
    # 6 px at (10.9, 20.4): corner int(7.9) = 7, int(17.4) = 17, rows/cols 7..13 and 17..23
    assert torch.equal(out[0, :, 7:14, 17:24], fill.expand(3, 7, 7))
    assert torch.equal(out[1, :, 0:17, 24:32], fill.expand(3, 17, 8))  # clipped at the top and right borders
    assert torch.equal(out[2], x[2])


# ---------------------------------------------------------------------------------------
# Op semantics versus PIL (the reference applies them with PIL)
# ---------------------------------------------------------------------------------------
# PIL_OPS (mdistiller.dataset.bench): the reference's op table as PIL applies it


def smooth_images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return torch.nn.functional.avg_pool2d(x.float(), 3, 1, 1).to(torch.uint8)  # photo-like, narrower range


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_matches_pil(name):
    j = OP_NAMES.index(name)
    x = smooth_images(6, 32, seed=j)
    v = OP_LO[j] + (OP_HI[j] - OP_LO[j]) * torch.rand(6, generator=torch.Generator().manual_seed(j), dtype=torch.float64)
    out = apply_randaugment(x, torch.full((6, 1), j), v.view(-1, 1))
    expected = torch.stack([from_pil(PIL_OPS[name](as_pil(x[i]), float(v[i]))) for i in range(6)])
    assert torch.equal(out, expected)


def test_random_op_chains_match_pil():
    n = 300
    x = smooth_images(n, 16, seed=21)
    p = sample_randaugment(n, 16, 16, generator=torch.Generator().manual_seed(21))
    out = apply_randaugment(x, p["ops"], p["mags"])
    for i in range(n):
        im = as_pil(x[i])
        for j, v in zip(p["ops"][i].tolist(), p["mags"][i].tolist()):
            im = PIL_OPS[OP_NAMES[j]](im, v)
        assert torch.equal(out[i], from_pil(im)), (i, p["ops"][i], p["mags"][i])


def test_two_ops_apply_in_order_like_pil():
    x = smooth_images(4, 16, seed=9)
    ops = torch.tensor([[OP_NAMES.index("Solarize"), OP_NAMES.index("Rotate")]] * 2
                       + [[OP_NAMES.index("Rotate"), OP_NAMES.index("Solarize")]] * 2)
    mags = torch.tensor([[100.0, 20.0]] * 2 + [[20.0, 100.0]] * 2, dtype=torch.float64)
    out = apply_randaugment(x, ops, mags)
    for i in range(4):
        im = as_pil(x[i])
        for j, v in zip(ops[i].tolist(), mags[i].tolist()):
            im = PIL_OPS[OP_NAMES[j]](im, v)
        assert torch.equal(out[i], from_pil(im))


@pytest.mark.parametrize("name,v,moves", [
    ("Rotate", 90.0, ((0, 3), (0, 0))),       # counter-clockwise: top-right corner -> top-left
    ("ShearX", 0.5, ((3, 2), (3, 0))),        # output (y, x) samples input x + v * y
    ("TranslateX", 0.25, ((1, 2), (1, 1))),   # positive v moves content left by v * width
    ("TranslateY", -0.25, ((1, 2), (2, 2))),  # negative v moves content down
])
def test_affine_sign_conventions_on_tiny_asymmetric_image(name, v, moves):
    (src, dst) = moves
    x = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    x[0, :, src[0], src[1]] = 255
    out = apply_randaugment(x, torch.tensor([[OP_NAMES.index(name)]]), torch.tensor([[v]], dtype=torch.float64))
    assert out[0, 0, dst[0], dst[1]] == 255 and out[0, 0].sum() == 255
    assert torch.equal(out[0], from_pil(PIL_OPS[name](as_pil(x[0]), v)))


def test_posterize_and_solarize_boundaries():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    post = apply_randaugment(x, torch.full((2, 1), OP_NAMES.index("Posterize")), torch.tensor([[4.99], [8.0]], dtype=torch.float64))
    assert torch.equal(post[0], x[0] & 0xF0) and torch.equal(post[1], x[1])
    sol = apply_randaugment(x, torch.full((2, 1), OP_NAMES.index("Solarize")), torch.tensor([[128.0], [256.0]], dtype=torch.float64))
    assert torch.equal(sol[0], torch.where(x[0] >= 128, 255 - x[0], x[0])) and torch.equal(sol[1], x[1])
