"""Two CPU processes over gloo, started as torchrun would: a full run writes each file once
from rank 0 and resumes across world sizes; one DDP step equals one single-process step on
the same global batch; distributed validation counts every sample once; a mid-epoch resume on
two processes is exact; config errors.

Spawning is expensive, so each of the two jobs runs once per module (a fixture) and
writes what it saw to files that several tests check.
"""

import contextlib
import io
import json
import math
import os
import re

import pytest
import torch
import torch.nn as nn

from mdistiller.dataset.loader import build_loaders
from mdistiller.engine import hooks as hooks_mod
from mdistiller.engine import trainer as trainer_mod
from mdistiller.runs.checkpoint import load_checkpoint, load_model_weights

from ..engine.helpers import make_teacher, metrics, run_dir, tiny_argv, train_main
from .launch import run_ranks, use_port

SIZE, BATCH = 48, 16  # tiny_argv's synthetic training set and global batch
COMMON = ["DISTILLER.TYPE", "KD"]


# ---------------------------------------------------------------------------------------
# instrumentation shared by the parent (1 process) and the children (2 processes)
# ---------------------------------------------------------------------------------------
CURRENT = {"run": None, "rank": 0, "out": None, "stop_after": None}


def _append(name, line):
    with open(os.path.join(CURRENT["out"], f"{name}.{CURRENT['rank']}"), "a") as f:
        f.write(line + "\n")


def recording_save(obj, path, _real=hooks_mod.save_checkpoint):
    name = re.sub(r"\.e\d+\.stage$", "", os.path.basename(path))  # an epoch commit's staged side file
    _append("writes", json.dumps([CURRENT["rank"], CURRENT["run"], obj.get("epoch"), name]))
    _real(obj, path)


def recording_step(self, batch, epoch, _real=trainer_mod.Trainer.train_step):
    _append("steps", json.dumps({"run": CURRENT["run"], "rank": CURRENT["rank"], "epoch": epoch,
                                 "index": batch["index"].tolist(), "seed": torch.initial_seed(),
                                 "aug_seed": self.generator.initial_seed()}))
    out = _real(self, batch, epoch)
    if CURRENT["stop_after"] is not None:  # a stop request (as SIGTERM makes) after that many steps
        CURRENT["stop_after"] -= 1
        self._stop = CURRENT["stop_after"] == 0
    return out


def _train(run, *argv):
    CURRENT["run"] = run
    return train_main(list(argv))


def _argv(tmp, name, epochs, teacher):
    return tiny_argv(tmp, name, *COMMON, "SOLVER.EPOCHS", epochs, "LOG.SAVE_CHECKPOINT_FREQ", 1, teacher=teacher)


def _read(out, name):
    lines = []
    for f in sorted(os.listdir(out)):
        if f.startswith(name + "."):
            lines += [json.loads(line) for line in open(os.path.join(out, f))]
    return lines


# ---------------------------------------------------------------------------------------
# job A: a run, and resumes across world sizes, through the command-line entry point
# ---------------------------------------------------------------------------------------
def _run_job(rank, ports, tmp, teacher):
    CURRENT.update(rank=rank, out=os.path.join(tmp, "log"))
    hooks_mod.save_checkpoint = recording_save  # the checkpoint hooks' writer
    trainer_mod.Trainer.train_step = recording_step
    use_port(ports[0])
    assert _train("dist", *_argv(tmp, "dist", 1, teacher)) == 0
    use_port(ports[1])
    assert _train("dist", "--resume", *_argv(tmp, "dist", 2, teacher)) == 0
    use_port(ports[2])  # a run started by one process, continued by two
    assert _train("single", "--resume", *_argv(tmp, "single", 2, teacher)) == 0
    use_port(ports[3])  # 'dist' again, stopped at epoch 2, step 2
    CURRENT["stop_after"] = SIZE // BATCH + 2
    assert _train("cut", *_argv(tmp, "cut", 2, teacher)) == 130
    CURRENT["stop_after"] = None
    use_port(ports[4])
    assert _train("cut", "--resume", *_argv(tmp, "cut", 2, teacher)) == 0


@pytest.fixture(scope="module")
def job_a(tmp_path_factory):
    """'single': epoch 1 on 1 process, epoch 2 on 2; 'dist': epochs 1-2 on 2, epoch 3 on 1;
    'cut': 2 processes stopped at epoch 2, step 2, then resumed on 2."""
    tmp = tmp_path_factory.mktemp("dist_run")
    teacher = tmp / "teacher.pth"
    make_teacher(teacher)
    os.makedirs(tmp / "log")
    patch = pytest.MonkeyPatch()
    patch.setitem(CURRENT, "out", str(tmp / "log"))
    patch.setitem(CURRENT, "rank", "1p")
    patch.setattr(hooks_mod, "save_checkpoint", recording_save)
    patch.setattr(trainer_mod.Trainer, "train_step", recording_step)
    try:
        assert _train("single", *_argv(tmp, "single", 1, teacher)) == 0
        run_ranks(_run_job, tmp, teacher, num_ports=5, timeout=150)
        assert _train("dist", "--resume", *_argv(tmp, "dist", 3, teacher)) == 0
    finally:
        patch.undo()
    return tmp


def test_only_rank0_writes_each_checkpoint_once(job_a):
    writes = _read(str(job_a / "log"), "writes")
    dist_writes = [w for w in writes if w[0] != "1p"]
    assert dist_writes and {w[0] for w in dist_writes} == {0}
    keys = [(run, epoch, name) for _, run, epoch, name in writes]
    assert len(keys) == len(set(keys)), "a checkpoint was written twice in one epoch"
    for run, epochs in (("dist", [1, 2, 3]), ("single", [1, 2]), ("cut", [1, 2])):
        assert sorted(e for r, e, n in keys if r == run and n == "latest") == epochs
        assert sorted(e for r, e, n in keys if r == run and n == "student_latest") == epochs
    d = run_dir(job_a, "dist")
    latest = load_checkpoint(os.path.join(d, "latest"))
    assert latest["epoch"] == 3 and not any(k.startswith("module.") for k in latest["model"])
    from mdistiller.models import build_model

    load_model_weights(build_model("resnet8", "cifar", 10), os.path.join(d, "student_latest"), "resnet8")


def test_resume_continues_across_world_sizes(job_a):
    assert [r["epoch"] for r in metrics(job_a, "dist")] == [1, 2, 3]
    assert [r["epoch"] for r in metrics(job_a, "single")] == [1, 2]
    steps = _read(str(job_a / "log"), "steps")
    # each epoch trained once, by the expected processes: none replayed or skipped on resume
    counts = {}
    for s in steps:
        key = (s["run"], s["epoch"], s["rank"])
        counts[key] = counts.get(key, 0) + 1
    assert counts == {key: SIZE // BATCH for key in [
        ("single", 1, "1p"), ("single", 2, 0), ("single", 2, 1),
        ("dist", 1, 0), ("dist", 1, 1), ("dist", 2, 0), ("dist", 2, 1), ("dist", 3, "1p"),
        ("cut", 1, 0), ("cut", 1, 1), ("cut", 2, 0), ("cut", 2, 1)]}


def test_mid_epoch_stop_under_two_processes(job_a):
    """Both ranks stop after the same step, rank 0 alone writes 'interrupted', and --resume
    trains the rest of that epoch once (counted above) and removes it."""
    writes = [w for w in _read(str(job_a / "log"), "writes") if w[1] == "cut" and w[3] == "interrupted"]
    assert writes == [[0, "cut", 1, "interrupted"]]
    assert [r["epoch"] for r in metrics(job_a, "cut")] == [1, 2]
    assert not os.path.exists(os.path.join(run_dir(job_a, "cut"), "interrupted"))
    steps = [s["index"] for s in _read(str(job_a / "log"), "steps") if s["run"] == "cut" and s["epoch"] == 2]
    assert sorted(sum(steps, [])) == list(range(SIZE))  # nothing replayed, nothing skipped


def test_mid_epoch_resume_under_two_processes_is_exact(job_a):
    cut, dist = (_student_file(job_a, run, "student_2") for run in ("cut", "dist"))
    assert all(torch.equal(cut[k], dist[k]) for k in cut)
    assert metrics(job_a, "cut")[1]["train_loss"] == metrics(job_a, "dist")[1]["train_loss"]


def test_validation_during_a_distributed_run_is_that_of_the_checkpoint(job_a):
    """The epoch's test accuracy (two ranks, each on its share) is that of the saved student
    on one process: every rank validates with rank 0's BN statistics."""
    from mdistiller.dataset import build_batch_transform, get_dataset
    from mdistiller.config.load import load_cfg
    from mdistiller.utils.dist import DistContext
    from mdistiller.models import build_model

    cfg = load_cfg(None, _argv(job_a, "dist", 3, "unused"))
    spec = get_dataset(cfg)
    model = build_model("resnet8", "cifar", spec.num_classes).eval()
    model.load_state_dict(_student_file(job_a, "dist", "student_2"))
    loader = build_loaders(cfg, spec)[1]
    res = trainer_mod.evaluate(lambda x: model(x)[0], loader, build_batch_transform(spec, 1, False, "cpu"),
                               DistContext())
    rec = metrics(job_a, "dist")[1]
    assert rec["epoch"] == 2
    assert res["top1"] == pytest.approx(rec["test_acc"], abs=1e-9)
    assert res["loss"] == pytest.approx(rec["test_loss"], rel=1e-6)


def _student_file(tmp, run, name):
    return load_checkpoint(os.path.join(run_dir(tmp, run), name))["model"]


def test_ranks_shard_the_global_batch_and_reseed_each_epoch(job_a):
    steps = _read(str(job_a / "log"), "steps")

    def order(run, epoch, rank):
        return [s["index"] for s in steps if (s["run"], s["epoch"], s["rank"]) == (run, epoch, rank)]

    for epoch in (1, 2):
        r0, r1 = order("dist", epoch, 0), order("dist", epoch, 1)
        assert len(r0) == len(r1) == SIZE // BATCH and all(len(b) == BATCH // 2 for b in r0 + r1)
        flat0, flat1 = sum(r0, []), sum(r1, [])
        assert sorted(flat0 + flat1) == list(range(SIZE))  # disjoint and complete
    # global step k holds the same samples on 1 process and on 2 (DistributedSampler-like)
    single, r0, r1 = order("single", 1, "1p"), order("dist", 1, 0), order("dist", 1, 1)
    assert [sorted(b) for b in single] == [sorted(a + b) for a, b in zip(r0, r1)]
    assert order("dist", 1, 0) != order("dist", 2, 0)  # a new order each epoch
    # per-rank, per-epoch seeds: distinct across ranks and epochs, fixed within an epoch
    seeds = {}
    for s in steps:
        if s["run"] == "dist" and s["rank"] != "1p":
            seeds.setdefault((s["rank"], s["epoch"]), set()).add((s["seed"], s["aug_seed"]))
    assert all(len(v) == 1 for v in seeds.values())
    flat = [next(iter(v)) for v in seeds.values()]
    assert len(flat) == 4 and len({a for a, _ in flat}) == 4 and len({b for _, b in flat}) == 4


# ---------------------------------------------------------------------------------------
# job B: exactness of one DDP step and of validation; config errors
# ---------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    """A student without batch norm: its gradient is a mean over samples, so one step on
    two halves of a batch equals one step on the whole batch."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        pooled = h.mean((2, 3))
        return self.fc(pooled), {"feats": [h], "pooled_feat": pooled, "preact_feats": [h]}


def _kd_distiller(cfg, teacher_state, student_seed=0):
    from mdistiller.distillers import DISTILLERS
    from mdistiller.models import build_model

    torch.manual_seed(student_seed)
    student = TinyNet()
    teacher = build_model("resnet8", "cifar", 10)
    teacher.load_state_dict(teacher_state)
    return DISTILLERS["KD"](student, teacher, cfg)


def _trainer(cfg, ctx, distiller):
    to_float = lambda b: {**b, "image": b["image"].float() / 255}  # noqa: E731
    return trainer_mod.Trainer(cfg, distiller.to(ctx.device), (None, None), (to_float, to_float), ctx)


def _student(distiller):
    return {k: v.detach().clone() for k, v in distiller.student.state_dict().items()}


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _exact_job(rank, ports, tmp, teacher):
    from mdistiller.dataset.augment import build_batch_transform
    from mdistiller.dataset.base import DatasetSpec, TensorImageDataset
    from mdistiller.dataset.synthetic import make_images
    from mdistiller.config.load import load_cfg
    from mdistiller.utils.dist import DistContext, init_distributed, shutdown_distributed
    from mdistiller.models import build_model

    result = {}
    for port, (key, extra) in zip(ports, [("sync_bn", ["SOLVER.SYNC_BN", "True"]),
                                          ("batch", ["SOLVER.BATCH_SIZE", "15"])]):
        use_port(port)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = train_main(tiny_argv(tmp, key, *COMMON, *extra, teacher=teacher))
        result[key] = {"code": code, "stderr": err.getvalue()}

    use_port(ports[2])
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size) == (rank, 2)
    cfg = load_cfg(None, ["SOLVER.LR", "0.5", "SOLVER.MOMENTUM", "0.9", "SOLVER.WEIGHT_DECAY", "0.01",
                          "SOLVER.BATCH_SIZE", "8", "DATASET.TEST.BATCH_SIZE", "4",
                          "DATASET.NUM_WORKERS", "0"])
    teacher_state = load_checkpoint(teacher)["model"]

    # two steps with a global batch of 8: on 2 ranks (4 samples each) and on 1 process.
    # Each rank starts from its own random student and its own teacher bias: wrapping
    # broadcasts rank 0's student, and leaves the (ignored) teacher alone.
    images, targets = make_images(16, 10, seed=5)
    batches = [{"image": images[i:i + 8], "target": targets[i:i + 8], "index": torch.arange(i, i + 8)}
               for i in (0, 8)]
    distiller = _kd_distiller(cfg, teacher_state, student_seed=rank)
    with torch.no_grad():
        distiller.teacher.fc.bias.add_(rank)
    trainer = _trainer(cfg, ctx, distiller)
    result["teacher_bias_shift"] = (distiller.teacher.fc.bias - teacher_state["fc.bias"]).mean().item()
    with torch.no_grad():
        distiller.teacher.fc.bias.copy_(teacher_state["fc.bias"])
    start = ctx.gather_objects(_student(distiller))
    for b in batches:
        trainer.train_step({k: v[rank::2] for k, v in b.items()}, epoch=1)
    weights = ctx.gather_objects(_student(distiller))
    if rank == 0:
        single = _kd_distiller(cfg, teacher_state, student_seed=0)
        initial = _student(single)
        single_trainer = _trainer(cfg, DistContext(), single)
        for b in batches:
            single_trainer.train_step(b, epoch=1)
        ref = _student(single)
        result["step"] = {"start_between_ranks": _max_diff(start[0], start[1]),
                          "start_to_single": _max_diff(start[0], initial),
                          "moved": _max_diff(ref, initial),
                          "to_single": _max_diff(weights[0], ref),
                          "between_ranks": _max_diff(weights[0], weights[1])}

    # validation of 13 samples: ranks hold 7 and 6 (different batch counts)
    train_set = TensorImageDataset(*make_images(8, 10, seed=0))
    val_set = TensorImageDataset(*make_images(13, 10, seed=1))
    spec = DatasetSpec(train_set, val_set, num_classes=10, model_family="cifar", mean=(0.5,) * 3,
                       std=(0.25,) * 3, image_size=32, pad=4)
    torch.manual_seed(3)
    model = build_model("resnet8", "cifar", 10).eval()
    transform = build_batch_transform(spec, 1, train=False, device="cpu")
    fn = lambda x: model(x)[0]  # noqa: E731
    val_loader = build_loaders(cfg, spec, 1, rank=rank, world_size=2)[1]
    result["val_rank_samples"] = len(val_loader.batch_sampler.indices())
    result["val_rank_batches"] = len(val_loader)
    result["val_dist"] = trainer_mod.evaluate(fn, val_loader, transform, ctx)
    result["val_single"] = trainer_mod.evaluate(fn, build_loaders(cfg, spec, 1)[1], transform, DistContext())
    shutdown_distributed()
    with open(os.path.join(tmp, f"result.{rank}.json"), "w") as f:
        json.dump(result, f)


@pytest.fixture(scope="module")
def job_b(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist_exact")
    teacher = tmp / "teacher.pth"
    make_teacher(teacher)
    run_ranks(_exact_job, tmp, str(teacher), num_ports=3, timeout=120)
    return [json.load(open(tmp / f"result.{r}.json")) for r in (0, 1)]


def test_ddp_step_equals_single_process_step(job_b):
    step = job_b[0]["step"]
    assert step["start_between_ranks"] == 0 and step["start_to_single"] == 0  # rank 0's student everywhere
    assert step["moved"] > 1e-3  # the two steps changed the weights
    assert step["to_single"] < 1e-6 and step["between_ranks"] == 0
    # the teacher is not synchronised (ignored by DDP): rank 1 keeps its own
    assert [r["teacher_bias_shift"] for r in job_b] == [0.0, 1.0]


def test_distributed_validation_counts_every_sample_once(job_b):
    assert [r["val_rank_samples"] for r in job_b] == [7, 6]
    assert [r["val_rank_batches"] for r in job_b] == [4, 3]
    for r in job_b:
        d, s = r["val_dist"], r["val_single"]
        assert d["count"] == s["count"] == 13
        assert d["top1"] == pytest.approx(s["top1"], abs=1e-9) and d["top5"] == pytest.approx(s["top5"], abs=1e-9)
        assert d["loss"] == pytest.approx(s["loss"], rel=1e-6)


@pytest.mark.parametrize("key,message", [("sync_bn", "SOLVER.SYNC_BN needs CUDA"),
                                         ("batch", "SOLVER.BATCH_SIZE 15 (the global batch) does not divide by 2")])
def test_distributed_config_errors_are_one_line(job_b, key, message):
    for r in job_b:
        out = r[key]
        assert out["code"] == 2
        lines = out["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out["stderr"]


# ---------------------------------------------------------------------------------------
# job C: DATASET.HOLDOUT under two processes (issue #23)
# ---------------------------------------------------------------------------------------
HOLDOUT = ["DATASET.HOLDOUT", "0.25", "EXPERIMENT.SEED", "5"]


def _holdout_job(rank, ports, tmp, teacher):
    CURRENT.update(rank=rank, out=os.path.join(tmp, "log"))
    trainer_mod.Trainer.train_step = recording_step
    use_port(ports[0])
    assert _train("held", *_argv(tmp, "held", 1, teacher), *HOLDOUT) == 0


@pytest.fixture(scope="module")
def job_c(tmp_path_factory):
    """'held': one epoch with a holdout on two processes; 'held1': the same split on one."""
    tmp = tmp_path_factory.mktemp("dist_holdout")
    teacher = tmp / "teacher.pth"
    make_teacher(teacher)
    os.makedirs(tmp / "log")
    run_ranks(_holdout_job, tmp, teacher, num_ports=1, timeout=120)
    assert _train("held1", *_argv(tmp, "held1", 1, teacher), "DATASET.HOLDOUT", "0.25") == 0
    return tmp


def test_holdout_under_two_processes(job_c):
    """Both ranks train on the same split (none of the holdout), which split.json records,
    and val_acc is the saved student's top-1 on the holdout, each image counted once."""
    from mdistiller.dataset import build_batch_transform, build_eval_loader, get_dataset
    from mdistiller.engine.cfg import load_cfg
    from mdistiller.engine.dist import DistContext
    from mdistiller.models import build_model

    splits = [json.load(open(os.path.join(run_dir(job_c, n), "split.json"))) for n in ("held", "held1")]
    assert splits[0] == splits[1] and splits[0]["num_train"] == SIZE - len(splits[0]["holdout_indices"])
    spec = get_dataset(load_cfg(None, _argv(job_c, "held", 1, "unused") + HOLDOUT))
    assert spec.split == splits[0]
    steps = [s for s in _read(str(job_c / "log"), "steps") if s["run"] == "held"]
    assert {s["rank"] for s in steps} == {0, 1}
    trained = {int(spec.train.indices[i]) for s in steps for i in s["index"]}
    assert trained == set(range(SIZE)) - set(splits[0]["holdout_indices"])
    model = build_model("resnet8", "cifar", spec.num_classes).eval()
    model.load_state_dict(_student_file(job_c, "held", "student_1"))
    cfg = load_cfg(None, _argv(job_c, "held", 1, "unused") + HOLDOUT)
    res = trainer_mod.evaluate(lambda x: model(x)[0], build_eval_loader(cfg, spec.holdout),
                               build_batch_transform(spec, 1, False, "cpu"), DistContext())
    rec = metrics(job_c, "held")[0]
    assert res["count"] == len(spec.holdout) and res["top1"] == pytest.approx(rec["val_acc"], abs=1e-9)
    assert rec["selected_epoch"] == 1


# ---------------------------------------------------------------------------------------
# job D: issue #25's recipe keys under two processes (AdamW, cosine + warmup, EMA, clip,
# label smoothing, two teachers): a mid-epoch stop and resume ends as the straight run
# ---------------------------------------------------------------------------------------
RECIPE = ["SOLVER.TYPE", "AdamW", "SOLVER.LR", "0.001", "SOLVER.WEIGHT_DECAY", "0.05",
          "SOLVER.WEIGHT_DECAY_NORM_BIAS", "False", "SOLVER.SCHEDULER", "cosine", "SOLVER.WARMUP_EPOCHS", "0.5",
          "SOLVER.EMA", "0.9", "SOLVER.CLIP_GRAD", "0.5", "SOLVER.LABEL_SMOOTHING", "0.1",
          "EXPERIMENT.DETERMINISTIC", "True", "DISTILLER.TEACHER", "['resnet8', 'resnet8']"]


def _recipe_argv(tmp, name, teachers):
    argv = _argv(tmp, name, 2, teachers[0]) + RECIPE
    return argv + ["DISTILLER.TEACHER_CKPT", f"['{teachers[0]}', '{teachers[1]}']"]


def _recipe_job(rank, ports, tmp, teachers):
    CURRENT.update(rank=rank, out=os.path.join(tmp, "log"))
    trainer_mod.Trainer.train_step = recording_step
    use_port(ports[0])
    assert _train("rstraight", *_recipe_argv(tmp, "rstraight", teachers)) == 0
    use_port(ports[1])
    CURRENT["stop_after"] = SIZE // BATCH + 2  # epoch 2, step 2
    assert _train("rcut", *_recipe_argv(tmp, "rcut", teachers)) == 130
    CURRENT["stop_after"] = None
    use_port(ports[2])
    assert _train("rcut", "--resume", *_recipe_argv(tmp, "rcut", teachers)) == 0


@pytest.fixture(scope="module")
def job_d(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist_recipe")
    teachers = [tmp / "t1.pth", tmp / "t2.pth"]
    for seed, path in enumerate(teachers):
        make_teacher(path, seed=seed)
    os.makedirs(tmp / "log")
    run_ranks(_recipe_job, tmp, [str(t) for t in teachers], num_ports=3, timeout=150)
    return tmp


def test_recipe_mid_epoch_resume_under_two_processes_is_exact(job_d):
    for name in ("student_latest", "student_ema"):
        a, b = (_student_file(job_d, run, name) for run in ("rstraight", "rcut"))
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    ma, mb = metrics(job_d, "rstraight"), metrics(job_d, "rcut")
    for key in ("lr", "ema_acc", "test_acc", "train_loss"):
        assert [r[key] for r in ma] == [r[key] for r in mb], key
    # 3 steps per epoch on each rank (8 of the global 16 images each): W = 2 (1.5 rounded), S = 6
    assert [r["lr"] for r in ma] == pytest.approx([0.001 * (1 + math.cos(math.pi * (s - 2) / (6 - 2))) / 2
                                                   for s in (2, 5)], rel=1e-12)
