"""The imagefolder and tiny_imagenet datasets on small folders generated in tmp_path."""

import os

import pytest
import torch
from PIL import Image

from mdistiller.dataset import build_batch_transform, get_dataset
from mdistiller.dataset import tiny_imagenet
from mdistiller.engine.cfg import get_default_cfg
from mdistiller.utils.errors import ConfigError, DataError


def make_cfg(**dataset):
    cfg = get_default_cfg()
    for k, v in dataset.items():
        setattr(cfg.DATASET, k, v)
    return cfg


def colour(c):
    return (60 * c, 120, 250 - 60 * c)


def write_folder(root, classes=("cat", "dog", "eel"), per_class=2, size=(50, 40), ext="png"):
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            os.makedirs(root / split / name)
            for i in range(per_class):
                Image.new("RGB", size, colour(c)).save(root / split / name / f"{i}.{ext}")


def check_views(spec, side):
    """Both views of a two-view batch and the eval view have the dataset's size."""
    batch = {"image": torch.stack([spec.train[i]["image"] for i in range(len(spec.train))]),
             "target": torch.as_tensor(spec.train.targets)}
    views = build_batch_transform(spec, 2, train=True, device="cpu", generator=torch.Generator().manual_seed(0))(batch)
    assert views["image_weak"].shape == views["image_strong"].shape == (len(spec.train), 3, side, side)
    assert build_batch_transform(spec, 1, train=False, device="cpu")(batch)["image"].dtype == torch.float32


@pytest.mark.parametrize("size,family,pad", [(32, "cifar", 4), (48, "imagenet", 0)])
def test_imagefolder_sizes_pick_the_pipeline(tmp_path, size, family, pad):
    write_folder(tmp_path, ext="jpg" if size == 32 else "png")
    spec = get_dataset(make_cfg(TYPE="imagefolder", ROOT=str(tmp_path), IMAGE_SIZE=size))
    assert (spec.num_classes, spec.model_family, spec.pad, spec.image_size) == (3, family, pad, size)
    assert spec.train_targets.tolist() == [0, 0, 1, 1, 2, 2] and len(spec.val) == 6
    for ds in (spec.train, spec.val):
        item = ds[4]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, size, size)
        assert item["target"] == 2 and item["index"] == 4
        mean = item["image"].float().mean((1, 2))  # a flat image keeps its colour through resize and crop
        assert torch.allclose(mean, torch.tensor(colour(2), dtype=torch.float32), atol=3)
    check_views(spec, size)


def test_imagefolder_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="needs DATASET.ROOT"):
        get_dataset(make_cfg(TYPE="imagefolder"))
    with pytest.raises(DataError, match="train/<class>"):
        get_dataset(make_cfg(TYPE="imagefolder", ROOT=str(tmp_path / "nowhere")))
    write_folder(tmp_path)
    os.rename(tmp_path / "val" / "eel", tmp_path / "val" / "emu")
    with pytest.raises(DataError, match="different class folders .*eel"):
        get_dataset(make_cfg(TYPE="imagefolder", ROOT=str(tmp_path)))
    with pytest.raises(ConfigError, match="IMAGE_SIZE must be at least 8"):
        get_dataset(make_cfg(TYPE="imagefolder", ROOT=str(tmp_path), IMAGE_SIZE=4))


def write_tiny(root, wnids=("n01443537", "n01629819"), per_class=2):
    """The standard layout (64x64 JPEGs) for ``wnids``, plus a validation image of a class
    outside wnids.txt (a subset); no test/ nor words.txt."""
    os.makedirs(root / "val" / "images")
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    lines = []
    for c, w in enumerate(wnids):
        os.makedirs(root / "train" / w / "images")
        for i in range(per_class):
            Image.new("RGB", (64, 64), colour(c)).save(root / "train" / w / "images" / f"{w}_{i}.JPEG")
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        Image.new("RGB", (64, 64), colour(c)).save(root / "val" / "images" / f"val_{c}.JPEG")
        lines.append(f"val_{c}.JPEG\t{w}\t0\t0\t63\t63")
    Image.new("RGB", (64, 64), colour(2)).save(root / "val" / "images" / "val_9.JPEG")
    lines.insert(0, "val_9.JPEG\tn99999999\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet_layout(tmp_path):
    write_tiny(tmp_path)
    spec = get_dataset(make_cfg(TYPE="tiny_imagenet", ROOT=str(tmp_path)))
    assert (spec.num_classes, spec.model_family, spec.image_size, spec.pad, spec.rotate) == \
        (2, "tiny_imagenet", 64, 0, 20.0)  # upstream's view: RandomRotation(20) + flip, no crop
    assert spec.mean == tiny_imagenet.MEAN and spec.std == tiny_imagenet.STD
    assert spec.train_targets.tolist() == [0, 0, 1, 1]
    assert [spec.val[i]["target"] for i in range(len(spec.val))] == [0, 1]  # the extra class is skipped
    item = spec.val[1]
    assert item["image"].shape == (3, 64, 64) and item["image"][:, 0, 0].tolist() == list(colour(1))
    check_views(spec, 64)


def test_tiny_imagenet_classes_follow_sorted_wnids(tmp_path):
    """Class indices are ImageFolder's (sorted folder names, as upstream), not wnids.txt's order."""
    write_tiny(tmp_path, wnids=("n02", "n01", "n03"), per_class=1)
    spec = get_dataset(make_cfg(TYPE="tiny_imagenet", ROOT=str(tmp_path)))
    assert [os.path.basename(os.path.dirname(os.path.dirname(p))) for p, _ in spec.train.samples] == ["n01", "n02", "n03"]
    assert spec.train_targets.tolist() == [0, 1, 2]
    # write_tiny colours class c of its list with colour(c): n02 (colour 0) is class 1 here
    red = {spec.val[i]["target"]: round(int(spec.val[i]["image"][0, 0, 0]) / 60) for i in range(len(spec.val))}
    assert red == {0: 1, 1: 0, 2: 2}  # colour(c) has red 60 c (JPEG: within a few levels)


def test_tiny_imagenet_padded_crop_view_is_an_option(tmp_path):
    write_tiny(tmp_path)
    spec = get_dataset(make_cfg(TYPE="tiny_imagenet", ROOT=str(tmp_path), TINY_IMAGENET_VIEW="crop_flip"))
    assert (spec.pad, spec.rotate) == (4, 0.0)
    check_views(spec, 64)
    from mdistiller.engine.cfg import load_cfg

    with pytest.raises(ConfigError, match="TINY_IMAGENET_VIEW 'crop' is not a view; set rotate_flip or crop_flip"):
        load_cfg(None, ["DATASET.TINY_IMAGENET_VIEW", "crop"])


def test_tiny_imagenet_errors_and_offline_download(tmp_path, monkeypatch):
    write_tiny(tmp_path / "t")
    os.remove(tmp_path / "t" / "val" / "images" / "val_1.JPEG")
    with pytest.raises(DataError, match="val_1.JPEG' is missing"):
        get_dataset(make_cfg(TYPE="tiny_imagenet", ROOT=str(tmp_path / "t")))
    (tmp_path / "t" / "wnids.txt").write_text("n01443537\nn00000001\n")
    with pytest.raises(DataError, match="n00000001 .* has no images"):
        get_dataset(make_cfg(TYPE="tiny_imagenet", ROOT=str(tmp_path / "t")))
    with pytest.raises(DataError, match="no wnids.txt in DATASET.ROOT"):
        get_dataset(make_cfg(TYPE="tiny_imagenet", ROOT=str(tmp_path)))

    def offline(*args, **kwargs):
        raise OSError("no network")

    import torchvision.datasets.utils

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        get_dataset(make_cfg(TYPE="tiny_imagenet"))
    assert tiny_imagenet.URL in str(e.value) and "data/tiny-imagenet-200/wnids.txt" in str(e.value)


def test_corrupt_image_is_named_also_from_a_worker(tmp_path):
    """#21: a corrupt image is named (not reported as a run folder write error), in one line,
    also when a DataLoader worker re-raises it."""
    from torch.utils.data import DataLoader

    from mdistiller.dataset.imagefolder import ImageListDataset

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    ds = ImageListDataset([(str(bad), 0)], 32)
    with pytest.raises(DataError, match=r"image '.*broken.png' cannot be read .*replace or remove it"):
        ds[0]
    with pytest.raises(DataError) as e:
        next(iter(DataLoader(ds, batch_size=None, num_workers=1)))
    assert str(e.value).startswith(f"image '{bad}' cannot be read") and "\n" not in str(e.value)


def test_one_class_and_empty_class_folders_are_refused(tmp_path):
    """#21: an image folder with one class, or with an empty class folder (named), is refused."""
    for split in ("train", "val"):
        d = tmp_path / "one" / split / "only"
        d.mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(d / "0.png")
    with pytest.raises(DataError, match="has 1 class folder; a classifier needs at least 2"):
        get_dataset(make_cfg(TYPE="imagefolder", ROOT=str(tmp_path / "one"), IMAGE_SIZE=32))
    for split in ("train", "val"):
        (tmp_path / "one" / split / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder empty under .* holds no images"):
        get_dataset(make_cfg(TYPE="imagefolder", ROOT=str(tmp_path / "one"), IMAGE_SIZE=32))
