"""DATASET.DECODE: the crop boxes' law, cpu (libjpeg or PIL, reduced-size decoding) against device
(``torchvision.io.decode_jpeg`` on the training device, here the CPU) on the same boxes, and
a mixed folder (CMYK, greyscale, PNG named .JPEG, truncated and unreadable files) trained
with ``device``."""

import io
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from mdistiller.dataset import build_batch_transform, build_loaders, get_dataset
from mdistiller.dataset.bench import make_jpeg_folder, photo_like
from mdistiller.dataset.device_decode import DeviceDecoder
from mdistiller.dataset.imagenet import (ImageFolderDataset, crop_box, draft_scale, open_rgb, resized_crops)
from mdistiller.engine.cfg import get_default_cfg
from mdistiller.utils.errors import ConfigError, DataError

#: torch's antialiased bilinear resize (device, and cpu for RGB JPEGs) against PIL's (cpu for
#: other files and for reduced-size decodes), on the same libjpeg-turbo decode: they round
#: differently by at most one grey level
RESIZE_TOLERANCE = 1


def read_bytes(path):
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def test_crop_boxes_are_torchvisions_random_resized_crop_draws(tmp_path):
    """The same RNG state gives the boxes torchvision's RandomResizedCrop draws (its own
    get_params on an image of that size), in both decode modes; two views draw two boxes."""
    image = torch.zeros(3, 375, 500)
    torch.manual_seed(3)
    expected = [RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(50)]
    torch.manual_seed(3)
    assert [list(crop_box(375, 500)) for _ in range(50)] == [list(b) for b in expected]

    folder = make_jpeg_folder(str(tmp_path), 1, size=(500, 375))
    ds = ImageFolderDataset(folder, True, decode="device")
    ds.set_views(2)
    torch.manual_seed(5)
    item = ds[0]
    torch.manual_seed(5)
    first, second = RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)), \
        RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
    assert list(item["box"]) == list(first) and list(item["box_strong"]) == list(second)
    assert item["jpeg"].dtype == torch.uint8 and "image" not in item


def test_device_and_cpu_give_the_same_crops_within_the_resize_tolerance(tmp_path):
    folder = make_jpeg_folder(str(tmp_path), 3, size=(500, 375))
    decoder = DeviceDecoder(224, "cpu")
    torch.manual_seed(0)
    for i in range(3):
        path = os.path.join(folder, "c0", f"{i}.JPEG")
        boxes = [crop_box(375, 500) for _ in range(12)] + [(0, 0, 375, 500), (100, 200, 9, 7)]
        cpu = torch.stack(resized_crops(*open_rgb(path), boxes, 224))
        decoded = decoder.decode([read_bytes(path)], [path])[0]
        device = torch.stack([decoder.crop(decoded, b) for b in boxes])
        assert (cpu.int() - device.int()).abs().max() <= RESIZE_TOLERANCE
        # validation: shorter side to 256, centre 224
        val = ImageFolderDataset(folder, False, decode="cpu")[i]["image"]
        assert (val.int() - decoder.centre(decoded).int()).abs().max() <= RESIZE_TOLERANCE


def test_reduced_size_decoding_keeps_the_crop_geometry(tmp_path):
    """PIL's draft decodes at 1/2 when both crops keep >= 224 pixels a side; the boxes stay in
    the original coordinates, so the crops differ from full-size decoding only by the DCT
    scaling's filtering (a wrong box would move the content: tens of grey levels)."""
    folder = make_jpeg_folder(str(tmp_path), 1, size=(1200, 900))
    path = os.path.join(folder, "c0", "0.JPEG")
    boxes = [(10, 20, 460, 600), (300, 500, 500, 470)]
    assert draft_scale(1200, 900, 460, 224) == 2 and draft_scale(500, 375, 375, 224) == 1
    full = torch.stack(resized_crops(*open_rgb(path), boxes, 224)).float()
    image, scale = open_rgb(path, 2)
    assert image.size == (600, 450) and scale == (2, 2)
    reduced = torch.stack(resized_crops(image, scale, boxes, 224)).float()
    assert (reduced - full).abs().mean() < 2.5
    shifted = torch.stack(resized_crops(image, (1.0, 1.0), boxes, 224)).float()  # boxes not rescaled
    assert (shifted - full).abs().mean() > 10


def write_mixed_folder(root):
    """train/ and val/ with photo-like RGB JPEGs plus, in train/a: CMYK and greyscale JPEGs, a
    PNG named .JPEG, a truncated JPEG (PIL and decode_jpeg refuse it) and bytes no decoder reads."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            os.makedirs(os.path.join(root, split, c))
            for i in range(3):
                photo_like(rng, 64, 48).save(os.path.join(root, split, c, f"{i}.JPEG"))
    odd = os.path.join(root, "train", "a")
    image = photo_like(rng, 64, 48)
    image.convert("CMYK").save(os.path.join(odd, "cmyk.JPEG"))
    image.convert("L").save(os.path.join(odd, "grey.JPEG"))
    image.save(os.path.join(odd, "png.JPEG"), format="PNG")
    data = io.BytesIO()
    image.save(data, format="JPEG")
    with open(os.path.join(odd, "truncated.JPEG"), "wb") as f:
        f.write(data.getvalue()[:300])
    with open(os.path.join(odd, "garbage.JPEG"), "wb") as f:
        f.write(b"not an image at all" * 20)
    return odd


def test_unreadable_files_are_replaced_and_others_fall_back_to_the_cpu(tmp_path, caplog):
    odd = write_mixed_folder(str(tmp_path))
    ds = ImageFolderDataset(os.path.join(str(tmp_path), "train"), True, size=32, decode="device")
    ds.set_views(2)
    decoder = DeviceDecoder(32, "cpu")
    names = [os.path.basename(p) for p, _ in ds.folder.samples]
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    with caplog.at_level(logging.INFO, logger="mdistiller"):
        out = decoder(dict(batch))
        decoder(dict(batch))  # a second pass names nothing again
    n = len(ds)
    assert out["image"].shape == out["crop_strong"].shape == (n, 3, 32, 32) and out["image"].dtype == torch.uint8
    bad = [names.index("truncated.JPEG"), names.index("garbage.JPEG")]
    for i in bad:  # a copy of another sample of the batch, label and index included
        j = out["index"][i].item()
        assert j not in bad and torch.equal(out["image"][i], out["image"][j]) and out["target"][i] == out["target"][j]
    good = [i for i in range(n) if i not in bad]
    assert out["index"][good].tolist() == good
    assert {os.path.basename(p) for p in decoder.fallbacks} == {"png.JPEG"}  # CMYK and grey: decode_jpeg on a CPU
    assert {os.path.basename(p) for p in decoder.unreadable} == {"truncated.JPEG", "garbage.JPEG"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all(os.path.join(odd, "truncated.JPEG") in m or "garbage" in m for m in warned)
    assert sum("png.JPEG" in r.getMessage() and "1 such file" in r.getMessage() for r in caplog.records) == 1


def test_cpu_items_decode_rgb_jpegs_with_libjpeg_and_the_rest_with_pil(tmp_path, monkeypatch):
    """A ``cpu`` training item decodes an RGB JPEG with ``decode_jpeg`` and crops it with
    torch; CMYK and greyscale JPEGs and a PNG named .JPEG go through PIL; a truncated file is
    refused with PIL's error, as before. Either way the crops are PIL's decode + PIL's
    crop-and-resize of the same boxes to within one grey level (RESIZE_TOLERANCE)."""
    import mdistiller.dataset.imagenet as imagenet

    write_mixed_folder(str(tmp_path))
    ds = ImageFolderDataset(os.path.join(str(tmp_path), "train"), True, size=32, decode="cpu")
    ds.set_views(2)
    used = []
    real = imagenet.decode_jpeg_rgb
    monkeypatch.setattr(imagenet, "decode_jpeg_rgb", lambda data, device="cpu": used.append(1) or real(data, device))
    for i, (path, _) in enumerate(ds.folder.samples):
        name = os.path.basename(path)
        used.clear()
        torch.manual_seed(i)
        if name in ("truncated.JPEG", "garbage.JPEG"):  # refused in one line naming the file
            with pytest.raises(DataError, match=f"image '{path}' cannot be read .*; replace or remove it") as err:
                ds[i]
            assert "BytesIO" not in str(err.value)
            continue
        item = ds[i]
        assert bool(used) == (name not in ("cmyk.JPEG", "grey.JPEG", "png.JPEG")), name
        with Image.open(path) as im:
            image = im.convert("RGB")
        torch.manual_seed(i)  # the same two draws, from the header's size
        boxes = [crop_box(image.height, image.width) for _ in range(2)]
        for key, (top, left, h, w) in zip(("image", "crop_strong"), boxes):
            pil = TF.pil_to_tensor(image.crop((left, top, left + w, top + h)).resize((32, 32), Image.BILINEAR))
            assert item[key].shape == (3, 32, 32) and item[key].is_contiguous()
            assert (item[key].int() - pil.int()).abs().max() <= RESIZE_TOLERANCE, (name, key)


def test_a_mixed_folder_trains_with_device_decoding(tmp_path, caplog):
    """SLD (two views: both boxes) from MobileNetV1 to MobileNetV1 on a 32-pixel ImageNet-style
    folder holding every kind of odd file, two epochs with validation, decoded on the device."""
    from mdistiller.engine.run import train
    from mdistiller.models import build_model

    write_mixed_folder(str(tmp_path / "data"))
    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model("MobileNetV1", "imagenet", 2).state_dict()}, teacher)
    argv = ["DATASET.TYPE", "imagefolder", "DATASET.ROOT", str(tmp_path / "data"), "DATASET.IMAGE_SIZE", "40",
            "DATASET.DECODE", "device", "DATASET.NUM_WORKERS", "0", "DATASET.TEST.BATCH_SIZE", "4",
            "SOLVER.BATCH_SIZE", "4", "SOLVER.EPOCHS", "2", "SOLVER.DEVICE", "cpu", "LOG.WANDB", "False",
            "LOG.PROGRESS", "False", "DISTILLER.TYPE", "SLD", "DISTILLER.TEACHER", "MobileNetV1",
            "DISTILLER.STUDENT", "MobileNetV1", "DISTILLER.TEACHER_CKPT", str(teacher),
            "LOG.PREFIX", str(tmp_path / "out"), "EXPERIMENT.PROJECT", "tests", "EXPERIMENT.NAME", "mixed"]
    with caplog.at_level(logging.INFO, logger="mdistiller"):
        assert train(None, argv) == 0
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("truncated.JPEG") == 1 and text.count("garbage.JPEG") == 1  # named once over two epochs
    assert "png.JPEG" in text


def test_eval_view_loads_training_images_as_validation_does(tmp_path):
    folder = make_jpeg_folder(str(tmp_path), 2, size=(80, 60))
    for decode in ("cpu", "device"):
        ds = ImageFolderDataset(folder, True, size=48, decode=decode)
        ds.set_views(2)
        view = ds.eval_view()
        assert ds.train and ds.views == 2 and not view.train and view.views == 1 and view.collate_fn is ds.collate_fn
        item = view[0]
        assert "box" not in item and "crop_strong" not in item
        if decode == "cpu":
            assert item["image"].shape == (3, 48, 48)


def test_decode_is_checked():
    cfg = get_default_cfg()
    cfg.DATASET.TYPE, cfg.DATASET.ROOT, cfg.DATASET.DECODE = "imagenet", "/nowhere", "gpu"
    with pytest.raises(ConfigError, match="DATASET.DECODE must be one of cpu, device"):
        get_dataset(cfg)


def test_device_batches_make_the_same_views_as_cpu_batches(tmp_path):
    """Through the loaders and the batch transform, both modes give views of the same shapes
    and the validation batches agree within the resize tolerance (after normalization)."""
    make_jpeg_folder(str(tmp_path), 4, size=(80, 60))
    os.rename(tmp_path / "train", tmp_path / "val")
    make_jpeg_folder(str(tmp_path), 4, size=(80, 60))
    for split in ("train", "val"):  # a classifier needs two classes
        shutil.copytree(tmp_path / split / "c0", tmp_path / split / "c1")
    views = {}
    for mode in ("cpu", "device"):
        cfg = get_default_cfg()
        cfg.DATASET.TYPE, cfg.DATASET.ROOT, cfg.DATASET.DECODE = "imagefolder", str(tmp_path), mode
        cfg.DATASET.IMAGE_SIZE, cfg.DATASET.NUM_WORKERS, cfg.SOLVER.BATCH_SIZE = 48, 0, 4
        spec = get_dataset(cfg)
        train, val = build_loaders(cfg, spec, num_views=2)
        out = build_batch_transform(spec, 2, True, "cpu", generator=torch.Generator().manual_seed(0))(next(iter(train)))
        assert out["image_weak"].shape == out["image_strong"].shape == (4, 3, 48, 48)
        views[mode] = build_batch_transform(spec, 1, False, "cpu")(next(iter(val)))["image"]
    assert (views["cpu"] - views["device"]).abs().max() <= RESIZE_TOLERANCE / 255 / 0.224 + 1e-5
