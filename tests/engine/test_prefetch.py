"""SOLVER.PREFETCH: batches handed to the step one ahead, on the device; same training."""

import torch

from mdistiller.dataset.loader import prefetch_to_device
from mdistiller.runs.checkpoint import load_checkpoint

from .helpers import metrics, run_dir, tiny_argv
from .test_trainer import teacher_ckpt, train_main  # noqa: F401


def test_prefetch_fetches_one_batch_ahead_in_order():
    fetched = []

    def batches():
        for i in range(4):
            fetched.append(i)
            yield {"image": torch.full((2, 1), i), "id": i}

    seen = []
    for batch in prefetch_to_device(batches(), torch.device("cpu")):
        seen.append(batch["id"])
        assert fetched[-1] == min(batch["id"] + 1, 3)  # the next batch is already fetched and copied
        assert torch.equal(batch["image"], torch.full((2, 1), batch["id"]))
    assert seen == [0, 1, 2, 3]
    assert list(prefetch_to_device(iter([]), torch.device("cpu"))) == []


def test_prefetched_training_equals_plain(tmp_path, teacher_ckpt):  # noqa: F811
    """Two epochs of SLD with and without SOLVER.PREFETCH: same metrics and weights."""
    common = ["DISTILLER.TYPE", "SLD", "SLD.GAMMA", "1", "SOLVER.EPOCHS", "2", "EXPERIMENT.DETERMINISTIC", "True"]
    for name, prefetch in (("plain", "False"), ("prefetch", "True")):
        assert train_main(tiny_argv(tmp_path, name, *common, "SOLVER.PREFETCH", prefetch, teacher=teacher_ckpt)) == 0
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert drop_time(metrics(tmp_path, "plain")) == drop_time(metrics(tmp_path, "prefetch"))
    a, b = (load_checkpoint(run_dir(tmp_path, n) + "/student_latest")["model"] for n in ("plain", "prefetch"))
    assert all(torch.equal(a[k], b[k]) for k in a)
