"""Dataset registry, the four datasets, missing-data errors and fixed subsets."""

import gzip
import os

import pytest
import torch
import torchvision

from mdistiller.dataset import DATASETS, get_dataset, subset_indices
from mdistiller.dataset import fashion_mnist as fm
from mdistiller.engine.cfg import get_default_cfg
from mdistiller.utils.errors import ConfigError, DataError, UnknownNameError


def make_cfg(**dataset):
    cfg = get_default_cfg()
    for k, v in dataset.items():
        setattr(cfg.DATASET, k, v)
    return cfg


def check_item(item, index, shape):
    assert set(item) == {"image", "target", "index"}
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == shape
    assert isinstance(item["target"], int) and item["index"] == index


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------
def test_registry_lists_known_names_for_unknown_dataset():
    assert {"cifar100", "imagenet", "fashion_mnist", "synthetic"} <= set(DATASETS)
    with pytest.raises(UnknownNameError) as e:
        get_dataset(make_cfg(TYPE="cifar10"))
    msg = str(e.value)
    assert "cifar10" in msg and "cifar100" in msg and "fashion_mnist" in msg and "synthetic" in msg


# ---------------------------------------------------------------------------------------
# Synthetic
# ---------------------------------------------------------------------------------------
def test_synthetic_is_small_deterministic_and_learnable():
    cfg = make_cfg(TYPE="synthetic", SYNTHETIC_SIZE=200, SYNTHETIC_CLASSES=5)
    spec, again = get_dataset(cfg), get_dataset(cfg)
    assert len(spec.train) == spec.num_train == 200 and len(spec.val) == 50
    assert spec.num_classes == 5 and spec.model_family == "cifar" and spec.image_size == 32 and spec.pad == 4
    assert len(spec.mean) == len(spec.std) == 3 and all(s > 0 for s in spec.std)
    check_item(spec.train[7], 7, (3, 32, 32))
    assert torch.equal(spec.train.images, again.train.images) and torch.equal(spec.val.images, again.val.images)
    assert not torch.equal(spec.train.images[:50], spec.val.images)
    assert sorted(set(spec.train.targets.tolist())) == list(range(5))
    # nearest class mean on raw pixels already beats chance by far
    x_tr, x_va = spec.train.images.flatten(1).float(), spec.val.images.flatten(1).float()
    means = torch.stack([x_tr[spec.train.targets == c].mean(0) for c in range(5)])
    pred = torch.cdist(x_va, means).argmin(1)
    assert (pred == spec.val.targets).float().mean() > 0.6


# ---------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------
def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


def write_fashion(root, n_train=6, n_val=3):
    g = torch.Generator().manual_seed(0)
    data = {}
    for split, n in (("train", n_train), ("val", n_val)):
        images = torch.randint(1, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        img_name, lbl_name = fm.FILES[split]
        write_idx(os.path.join(root, img_name), images)
        write_idx(os.path.join(root, lbl_name), labels)
        data[split] = images, labels
    return data


def test_fashion_mnist_reads_idx_files_pads_and_repeats_channels(tmp_path):
    data = write_fashion(tmp_path)
    spec = get_dataset(make_cfg(TYPE="fashion_mnist", ROOT=str(tmp_path)))
    assert len(spec.train) == 6 and len(spec.val) == 3 and spec.num_classes == 10
    assert spec.model_family == "cifar" and spec.image_size == 32 and spec.pad == 4
    item = spec.train[4]
    check_item(item, 4, (3, 32, 32))
    img = item["image"]
    assert torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])
    assert torch.equal(img[0, 2:30, 2:30], data["train"][0][4])
    assert img[0].sum() == img[0, 2:30, 2:30].sum()  # zero border
    assert item["target"] == 4 and spec.val[2]["target"] == 2


def test_fashion_mnist_bad_or_missing_files_raise_data_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=str(tmp_path)):
        get_dataset(make_cfg(TYPE="fashion_mnist", ROOT=str(tmp_path)))
    write_fashion(tmp_path)
    with gzip.open(tmp_path / fm.FILES["train"][0], "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x00" * 7)  # truncated body
    with pytest.raises(DataError, match="re-download"):
        get_dataset(make_cfg(TYPE="fashion_mnist", ROOT=str(tmp_path)))

    # no system copy and no internet: the message says how to get the data
    def offline(*args, **kwargs):
        raise RuntimeError("no route to host")

    monkeypatch.setattr(fm, "SYSTEM_ROOT", str(tmp_path / "absent"))
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError) as e:
        get_dataset(make_cfg(TYPE="fashion_mnist"))
    assert "apt-get install dataset-fashion-mnist" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(not os.path.isdir(fm.SYSTEM_ROOT), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian_package():
    spec = get_dataset(make_cfg(TYPE="fashion_mnist", VAL_SUBSET=0.1))
    assert len(spec.train) == 60000 and len(spec.val) == 1000
    assert spec.train.targets.bincount().tolist() == [6000] * 10
    x = spec.train.images[:5000].float() / 255
    assert abs(x.mean() - spec.mean[0]) < 0.02 and abs(x.std() - spec.std[0]) < 0.02


# ---------------------------------------------------------------------------------------
# ImageNet and CIFAR-100 (local files only; no download in tests)
# ---------------------------------------------------------------------------------------
def test_imagenet_folder_items_are_cropped_uint8(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c, wnid in enumerate(("n001", "n002")):
            os.makedirs(tmp_path / split / wnid)
            for i in range(2):
                Image.new("RGB", (40 + 10 * i, 30), (80 * c, 20, 200)).save(tmp_path / split / wnid / f"{i}.png")
    spec = get_dataset(make_cfg(TYPE="imagenet", ROOT=str(tmp_path)))
    assert spec.num_classes == 2 and spec.model_family == "imagenet" and spec.pad == 0 and spec.image_size == 224
    assert len(spec.train) == len(spec.val) == 4 and spec.train_targets.tolist() == [0, 0, 1, 1]
    for ds in (spec.train, spec.val):
        item = ds[3]
        check_item(item, 3, (3, 224, 224))
        assert item["target"] == 1 and item["image"][0].float().mean().round() == 80


def coordinate_imagenet(tmp_path, width=256, height=200):
    """An ImageNet folder whose training image encodes its coordinates (R = x, G = y), so a
    crop's box can be read from its corner pixels."""
    from PIL import Image

    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([xs, ys, torch.zeros_like(xs)], -1).to(torch.uint8).numpy()
    for split in ("train", "val"):
        os.makedirs(tmp_path / split / "n001")
        Image.fromarray(pixels).save(tmp_path / split / "n001" / "0.png")
    return get_dataset(make_cfg(TYPE="imagenet", ROOT=str(tmp_path))), width * height


def crop_box(crop):
    """(left, top, width, height) of a RandomResizedCrop of the coordinate image, from the
    crop's first and last pixels (bilinear resampling: within about a pixel)."""
    r, g = crop[0].double(), crop[1].double()
    n = crop.shape[-1]
    width = (r[0, -1] - r[0, 0]).item() * n / (n - 1)
    height = (g[-1, 0] - g[0, 0]).item() * n / (n - 1)
    return r[0, 0].item(), g[0, 0].item(), max(width, 1.0), max(height, 1.0)


def two_sample_ks(a, b):
    a, b = torch.sort(torch.as_tensor(a, dtype=torch.float64))[0], torch.sort(torch.as_tensor(b, dtype=torch.float64))[0]
    grid = torch.cat([a, b])
    fa = torch.searchsorted(a, grid, right=True) / len(a)
    fb = torch.searchsorted(b, grid, right=True) / len(b)
    return (fa - fb).abs().max().item()


def test_imagenet_two_views_are_independent_random_resized_crops(tmp_path):
    """With two views each training item carries a second crop, drawn independently of the
    first, whose scale and aspect ratio follow RandomResizedCrop's law (scale 0.08..1 of the
    area, ratio 3/4..4/3, log-uniform; torchvision's own draws as the reference)."""
    from torchvision.transforms import RandomResizedCrop

    from mdistiller.dataset import build_loaders

    spec, area = coordinate_imagenet(tmp_path)
    cfg = make_cfg(TYPE="imagenet", ROOT=str(tmp_path), NUM_WORKERS=0)
    build_loaders(cfg, spec, num_views=2)
    assert "crop_strong" not in spec.val[0]
    torch.manual_seed(0)
    n = 400
    boxes = {"image": [], "crop_strong": []}
    for _ in range(n):
        item = spec.train[0]
        assert item["crop_strong"].shape == item["image"].shape == (3, 224, 224)
        for key in boxes:
            boxes[key].append(crop_box(item[key]))
    weak, strong = (torch.tensor(boxes[k], dtype=torch.float64) for k in ("image", "crop_strong"))
    # independent: different boxes, uncorrelated scales and positions (99.9% |r| < 0.165 at n = 400)
    assert (weak[:, :2] - strong[:, :2]).abs().amax(1).gt(2).double().mean() > 0.9
    for j in range(4):
        r = torch.corrcoef(torch.stack([weak[:, j], strong[:, j]]))[0, 1].item()
        assert abs(r) < 0.165, j
    # the law: two-sample KS against torchvision's own parameters (99.9%: 1.95 * sqrt(2 / n))
    image = torch.zeros(3, 200, 256)
    ref = torch.tensor([RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)],
                       dtype=torch.float64)  # (top, left, height, width)
    ref_scale, ref_ratio = ref[:, 2] * ref[:, 3] / area, ref[:, 3] / ref[:, 2]
    for views in (weak, strong):
        scale, ratio = views[:, 2] * views[:, 3] / area, views[:, 2] / views[:, 3]
        assert scale.min() > 0.07 and scale.max() < 1.02 and ratio.min() > 0.72 and ratio.max() < 1.39
        assert two_sample_ks(scale, ref_scale) < 1.95 * (2 / n) ** 0.5
        assert two_sample_ks(ratio.log(), ref_ratio.log()) < 1.95 * (2 / n) ** 0.5
    # one view: no second crop
    build_loaders(cfg, spec, num_views=1)
    assert "crop_strong" not in spec.train[0]


def test_strong_view_is_made_from_the_second_crop():
    """The batch transform builds the strong view from ``crop_strong`` when the batch has it,
    with its own flip (the weak view keeps its own)."""
    from mdistiller.dataset import DatasetSpec, build_batch_transform

    spec = DatasetSpec(None, None, num_classes=10, model_family="imagenet", mean=(0.5,) * 3, std=(0.25,) * 3,
                       image_size=16, pad=0)
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8),
             "crop_strong": torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8),
             "target": torch.arange(6), "index": torch.arange(6)}
    t = build_batch_transform(spec, 2, True, "cpu", generator=torch.Generator().manual_seed(1), record=True)
    out = t(batch)
    assert set(out) == {"image_weak", "image_strong", "target", "index"}
    p = t.last_params["strong"]
    torch.testing.assert_close(out["image_strong"], t.normalize(t.strong(batch["crop_strong"], p)))
    assert not torch.allclose(out["image_strong"], t.normalize(t.strong(batch["image"], p)))
    one = build_batch_transform(spec, 1, True, "cpu")(batch)
    assert set(one) == {"image", "target", "index"}


def test_imagenet_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(DataError) as e:
        get_dataset(make_cfg(TYPE="imagenet", ROOT=str(tmp_path / "nowhere")))
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "train/<wnid>" in msg and "\n" not in msg


def test_cifar100_converts_to_nchw_tensor_and_reports_failed_download(tmp_path, monkeypatch):
    class FakeCIFAR:
        def __init__(self, root, train, download):
            n = 5 if train else 2
            self.data = torch.arange(n * 32 * 32 * 3).remainder(251).to(torch.uint8).view(n, 32, 32, 3).numpy()
            self.targets = list(range(n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR)
    spec = get_dataset(make_cfg(TYPE="cifar100", ROOT=str(tmp_path)))
    assert len(spec.train) == 5 and len(spec.val) == 2 and spec.num_classes == 100
    item = spec.train[3]
    check_item(item, 3, (3, 32, 32))
    assert torch.equal(item["image"], torch.from_numpy(FakeCIFAR("", True, 0).data[3]).permute(2, 0, 1))

    def offline(*args, **kwargs):
        raise RuntimeError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataError, match=f"CIFAR-100 not found in '{tmp_path}'"):
        get_dataset(make_cfg(TYPE="cifar100", ROOT=str(tmp_path)))


# ---------------------------------------------------------------------------------------
# Subsets
# ---------------------------------------------------------------------------------------
def test_subset_indices_are_fixed_and_nested():
    a, b = subset_indices(1000, 0.1), subset_indices(1000, 0.1)
    assert torch.equal(a, b) and len(a) == 100 and len(set(a.tolist())) == 100
    large = set(subset_indices(1000, 0.3).tolist())
    assert set(a.tolist()) <= large and len(large) == 300
    assert not torch.equal(a, torch.arange(100))  # a scattered sample, not the first images
    assert len(subset_indices(10, 0.01)) == 1


def test_get_dataset_applies_subsets_with_dense_indices():
    full = get_dataset(make_cfg(TYPE="synthetic", SYNTHETIC_SIZE=400))
    spec = get_dataset(make_cfg(TYPE="synthetic", SYNTHETIC_SIZE=400, SUBSET=0.25, VAL_SUBSET=0.5))
    assert len(spec.train) == spec.num_train == 100 and len(spec.val) == 50
    chosen = subset_indices(400, 0.25)
    for i in (0, 57, 99):
        item = spec.train[i]
        assert item["index"] == i
        assert torch.equal(item["image"], full.train[int(chosen[i])]["image"])
        assert item["target"] == int(spec.train_targets[i]) == full.train[int(chosen[i])]["target"]
    assert spec.train_targets.dtype == torch.int64 and len(spec.train_targets) == 100
    with pytest.raises(ConfigError):
        get_dataset(make_cfg(TYPE="synthetic", SUBSET=0.0))
