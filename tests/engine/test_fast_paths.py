"""The fast paths of the training step compute the plain path's losses.

On a tiny pair (resnet20 teacher with calibrated BN statistics -> resnet8 student, 10
classes, batch 8, float32), for SLD, MLKD, KD and DKD:

* one teacher forward over the concatenated views (on the teacher's BN-folded copy) equals
  one forward per view, and the copy follows the teacher;
* ``Trainer.train_step`` with channels_last models and inputs equals the contiguous step;
* under bf16 autocast the losses are float32 and close to the fp32 ones;
* ``Trainer.train_step`` never synchronises with the host;
* with SOLVER.COMPILE (``torch.compile`` of the student and of the teacher's copy) the
  step equals the eager one.
"""

import contextlib
import copy
import os
import tempfile

import pytest
import torch
from torch.utils.data import default_collate

from mdistiller.dataset import get_dataset
from mdistiller.dataset.augment import build_batch_transform
from mdistiller.engine.build import build_distiller, num_views, place_distiller
from mdistiller.config.load import load_cfg
from mdistiller.utils.dist import DistContext
from mdistiller.engine.trainer import Trainer
from mdistiller.models import build_model
from mdistiller.utils.errors import ConfigError
from tests.conftest import torch_threads

METHODS = ["SLD", "MLKD", "KD", "DKD"]
BATCH, CLASSES, EPOCH = 8, 10, 240  # late epoch: SLD's student swap and DKD's full weight are on


def make_cfg(method, amp="none", channels_last=False, compile=False, compile_mode="default"):
    return load_cfg(None, ["DISTILLER.TYPE", method, "DISTILLER.TEACHER", "resnet20", "DISTILLER.STUDENT", "resnet8",
                           "DATASET.TYPE", "synthetic", "DATASET.SYNTHETIC_SIZE", "32",
                           "DATASET.SYNTHETIC_CLASSES", str(CLASSES), "SOLVER.BATCH_SIZE", str(BATCH),
                           "SOLVER.AMP", amp, "SOLVER.CHANNELS_LAST", str(channels_last), "SOLVER.DEVICE", "cpu",
                           "SOLVER.COMPILE", str(compile), "SOLVER.COMPILE_MODE", compile_mode])


@pytest.fixture(autouse=True, scope="module")
def one_thread_module():
    """Tiny models: one thread is as fast, and not slowed down by other processes' load."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def spec():
    return get_dataset(make_cfg("KD"))


@pytest.fixture(scope="module")
def models(spec):
    """A teacher whose BN statistics come from the data (as a trained one's) and a student."""
    torch.manual_seed(0)
    teacher = build_model("resnet20", "cifar", CLASSES)
    student = build_model("resnet8", "cifar", CLASSES)
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    x = torch.stack([spec.train[i]["image"] for i in range(len(spec.train))]).float().div(255).sub(0.5).div(0.25)
    with torch.no_grad():
        for chunk in x.split(2 * BATCH):  # the step's teacher batch shape
            teacher(chunk)
    return teacher, student


@pytest.fixture(scope="module")
def raw_batch(spec):
    return default_collate([spec.train[i] for i in range(BATCH)])


def make_distiller(method, models, spec, cfg=None):
    teacher, student = copy.deepcopy(models)
    return build_distiller(cfg or make_cfg(method), student, teacher, spec)


def make_trainer(method, models, spec, amp="none", channels_last=False, device="cpu", compile=False,
                 compile_mode="default"):
    cfg = make_cfg(method, amp, channels_last, compile, compile_mode)
    distiller = place_distiller(cfg, make_distiller(method, models, spec, cfg), torch.device(device))
    g = torch.Generator().manual_seed(0)  # the views' random parameters are drawn on the host
    transforms = (build_batch_transform(spec, num_views(cfg), train=True, device=device, generator=g),
                  build_batch_transform(spec, 1, train=False, device=device))
    trainer = Trainer(cfg, distiller, (None, None), transforms, DistContext(device=torch.device(device)))
    distiller.train()
    return trainer


def assert_rel(actual, expected, rel, what=""):
    """max |actual - expected| <= rel * max |expected| (elementwise scale of the tensor)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    err, scale = (actual - expected).abs().max().item(), expected.abs().max().item()
    assert err <= rel * scale, f"{what}: |diff| {err:.3g} > {rel:g} x {scale:.3g}"


def step_losses(trainer, batch):
    _, _, losses, total, _ = trainer.train_step(batch, EPOCH)
    return {k: v.detach() for k, v in losses.items()}, total.detach()


def assert_same_step_losses(fast, plain, rel):
    """Two :func:`step_losses` results have the same terms, each and the total within ``rel``."""
    (losses_fast, total_fast), (losses, total) = fast, plain
    assert sorted(losses_fast) == sorted(losses)
    for k in losses:
        assert_rel(losses_fast[k], losses[k], rel, k)
    assert_rel(total_fast, total, rel, "total")


@pytest.mark.parametrize("method", METHODS)
def test_one_teacher_forward_equals_per_view_forwards(method, models, spec, raw_batch):
    """(a) The distiller's single concatenated teacher forward gives the per-view teacher
    logits (1e-5 relative) and the losses of a plain step with one forward per view."""
    distiller = make_distiller(method, models, spec).train()
    g = torch.Generator().manual_seed(1)
    batch = build_batch_transform(spec, distiller.num_views, train=True, device="cpu", generator=g)(raw_batch)
    views = [batch[k] for k in ("image_weak", "image_strong", "image") if k in batch]
    sizes = []  # batch sizes seen by the stem convolutions (the models' only 3-channel input)

    def spy(module, args):
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3:
            sizes.append(args[0].shape[0])

    hook = torch.nn.modules.module.register_module_forward_pre_hook(spy)  # global: the fast path stays on
    try:
        _, losses = distiller(**batch, epoch=EPOCH)
    finally:
        hook.remove()
    assert sorted(sizes) == [BATCH] * len(views) + [BATCH * len(views)]  # a student forward per view, one teacher

    with torch.no_grad():
        per_view = [distiller.teacher(v)[0] for v in views]
    for joint, single in zip(distiller.teacher_logits(*views), per_view):
        assert joint.dtype == torch.float32 and not joint.is_inference()
        assert_rel(joint, single, 1e-5, "teacher logits")
    student = [distiller.student(v)[0] for v in views]  # train-mode BN: batch statistics, same outputs
    plain = distiller.losses(student, per_view, batch["target"], EPOCH)
    assert sorted(plain) == sorted(losses)
    for k in plain:
        assert_rel(losses[k].detach(), plain[k].detach(), 1e-5, k)


def test_teacher_copy_follows_the_teacher(models, spec):
    """The teacher's forwards run on a cached copy (BN folded, channels_last on the CPU):
    it follows new teacher weights and in-place changes; a teacher with hooks runs as it is."""
    distiller = make_distiller("KD", models, spec).train()
    x = torch.randn(BATCH, 3, 32, 32)

    def plain():
        with torch.no_grad():
            return distiller.teacher(x)[0]

    (logits,) = distiller.teacher_logits(x)
    assert_rel(logits, plain(), 1e-5, "copy")
    torch.manual_seed(5)
    distiller.teacher.load_state_dict(build_model("resnet20", "cifar", CLASSES).state_dict())
    (logits,) = distiller.teacher_logits(x)
    assert_rel(logits, plain(), 1e-5, "after load_state_dict")
    with torch.no_grad():
        distiller.teacher.bn1.running_var.mul_(4)  # an in-place change of a folded statistic
    (logits,) = distiller.teacher_logits(x)
    assert_rel(logits, plain(), 1e-5, "after an in-place change")
    calls = []
    distiller.teacher.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    distiller.teacher_logits(x, x)
    assert calls == [2 * BATCH]


@pytest.mark.parametrize("method", METHODS)
def test_channels_last_step_equals_contiguous_step(method, models, spec, raw_batch):
    """(b) ``train_step`` with channels_last models and inputs gives the contiguous step's
    losses (1e-5 relative) and the same update of the student's weights.

    The update is compared in two ways. In float64, channels_last and contiguous student
    gradients are the same computation (1e-9 of each tensor's largest entry; measured 4e-14).
    In float32, after the trainer's step, each weight is within 1e-2 of the largest change in
    the student: some gradients are ill-conditioned (a BatchNorm backward subtracts the
    channel's mean gradient, nearly equal to each entry when the gradient is almost constant
    over the batch), and the channels_last kernels sum in another order than the contiguous
    ones; measured on an AMD EPYC (plain, ATEN_CPU_CAPABILITY=default/avx2,
    ONEDNN_MAX_CPU_ISA=AVX2): up to 1e-3 of the largest change, 4e-3 of a tensor's largest
    gradient entry, while the float64 gradients agree. A wrong layout or a lost gradient
    would be off by order 1."""
    distiller = make_distiller(method, models, spec).double().train()
    g = torch.Generator().manual_seed(1)
    batch = build_batch_transform(spec, distiller.num_views, train=True, device="cpu", generator=g)(raw_batch)
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    grads = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        d = copy.deepcopy(distiller).to(memory_format=memory_format)
        views = {k: v.contiguous(memory_format=memory_format) if v.dim() == 4 else v for k, v in batch.items()}
        sum(d(**views, epoch=EPOCH)[1].values()).backward()
        grads.append({n: p.grad for n, p in d.student.named_parameters()})
    for name, grad in grads[0].items():
        assert_rel(grads[1][name], grad, 1e-9, name)

    plain = make_trainer(method, models, spec)
    fast = make_trainer(method, models, spec, channels_last=True)
    before = [p.detach().clone() for p in plain.distiller.student.parameters()]
    expected = step_losses(plain, raw_batch)
    assert_same_step_losses(step_losses(fast, raw_batch), expected, 1e-5)
    params = list(zip(plain.distiller.student.named_parameters(), fast.distiller.student.parameters(), before))
    largest = max((p.detach() - p0).abs().max().item() for (_, p), _, p0 in params)
    assert largest > 0
    for (name, p), q, p0 in params:
        assert q.is_contiguous(memory_format=torch.channels_last) or q.dim() != 4, name
        err = (q.detach() - p.detach()).abs().max().item()
        assert err <= 1e-2 * largest, f"{name}: |diff| {err:.3g} > 1e-2 x largest change {largest:.3g}"


@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_losses_are_float32_and_close(method, models, spec, raw_batch):
    """(c) Under bf16 autocast (with channels_last) every loss term and the total are
    float32 and within 5e-2 relative of the fp32 step's (bf16 keeps 8 bits of mantissa,
    ~4e-3 per rounding; the convolutions accumulate a few of them)."""
    plain = make_trainer(method, models, spec)
    fast = make_trainer(method, models, spec, amp="bf16", channels_last=True)
    (losses, total), (losses_bf, total_bf) = step_losses(plain, raw_batch), step_losses(fast, raw_batch)
    assert total_bf.dtype == torch.float32
    for k in losses:
        assert losses_bf[k].dtype == torch.float32, k
        assert_rel(losses_bf[k], losses[k], 5e-2, k)
    assert_rel(total_bf, total, 5e-2, "total")


HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def no_host_reads(monkeypatch):
    """Make the tensor methods that copy device data to the host raise; yields a context
    manager lifting the ban (for the batch transform, which reads only the random
    parameters it draws on the host)."""
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def forbid(name):
        def raise_(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} called during train_step (a host synchronisation)")
        return raise_

    @contextlib.contextmanager
    def lifted():
        for name, fn in originals.items():
            monkeypatch.setattr(torch.Tensor, name, fn)
        try:
            yield
        finally:
            for name in originals:
                monkeypatch.setattr(torch.Tensor, name, forbid(name))

    for name in originals:
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    try:
        yield lifted
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("amp,channels_last", [("none", False), ("bf16", True)])
@pytest.mark.parametrize("method", METHODS)
def test_train_step_does_not_synchronise(method, amp, channels_last, models, spec, raw_batch, monkeypatch):
    """(d) On CUDA: ``torch.cuda.set_sync_debug_mode("error")`` around the step. On the CPU:
    ``Tensor.item``/``tolist``/``cpu``/``numpy`` and bool/float/int conversions raise during
    the step, outside the batch transform (whose random parameters are host tensors)."""
    if torch.cuda.is_available():
        trainer = make_trainer(method, models, spec, amp, channels_last, device="cuda")
        trainer.train_step(raw_batch, EPOCH)
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer.train_step(raw_batch, EPOCH)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return
    trainer = make_trainer(method, models, spec, amp, channels_last)
    transform = trainer.train_transform
    with no_host_reads(monkeypatch) as lifted:
        with pytest.raises(AssertionError, match="host synchronisation"):
            torch.ones(1).item()  # the guard is armed

        def host_side_transform(batch):
            with lifted():
                return transform(batch)

        trainer.train_transform = host_side_transform
        for _ in range(2):  # the first step also creates the optimizer's state
            logits, target, losses, total, finite = trainer.train_step(raw_batch, EPOCH)
    assert bool(finite) and torch.isfinite(total) and logits.shape == (BATCH, CLASSES)


def test_compiled_step_equals_eager_step(models, spec, raw_batch, monkeypatch):
    """(e) SOLVER.COMPILE: the student and the teacher's cached copy are ``torch.compile``d
    (inductor; the teacher's with freezing) and two SLD steps give the eager steps' losses
    (1e-5 relative) and student weights (1e-4 relative, 1e-5 absolute). One method:
    compiling is slow.

    Under ``ATEN_CPU_CAPABILITY=default`` inductor (torch 2.14) still emits vectorized C++
    that its own build does not declare (``'at::vec' has not been declared``), so compiling
    fails whatever the model; the test then asks inductor for scalar code (``cpp.simdlen 1``).
    Under ``ONEDNN_MAX_CPU_ISA`` or ``ATEN_CPU_CAPABILITY`` it uses an inductor cache of that
    setting's own: inductor's on-disk cache key leaves these settings out, and kernels cached
    under another one abort the process or raise from the kernel (torch 2.14, measured on an
    AMD EPYC; a fresh cache passes under each)."""
    isa = "_".join(f"{k}-{os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k))
    if isa:
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"torchinductor_{isa}"))
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "default":
        import torch._inductor.config as inductor_config

        monkeypatch.setattr(inductor_config.cpp, "simdlen", 1)
    eager = make_trainer("SLD", models, spec)
    compiled = make_trainer("SLD", models, spec, compile=True)
    for _ in range(2):  # the second step runs on the compiled graphs, with updated weights
        plain = step_losses(eager, raw_batch)
        assert_same_step_losses(step_losses(compiled, raw_batch), plain, 1e-5)
    assert isinstance(compiled.distiller._teacher_cache["model"], torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.distiller.student._compiled_call_impl is not None
    assert not isinstance(eager.distiller._teacher_cache["model"], torch._dynamo.eval_frame.OptimizedModule)
    for (name, p), q in zip(eager.distiller.student.named_parameters(), compiled.distiller.student.parameters()):
        # BN biases start at 0, so they are all update: an absolute floor of 1e-5 (the two
        # updates' sizes are ~1e-2; reduction order in their gradients' sums differs)
        err, scale = (q - p).abs().max().item(), p.abs().max().item()
        assert err <= 1e-4 * scale + 1e-5, f"{name}: |diff| {err:.3g} > 1e-4 x {scale:.3g} + 1e-5"


def test_compile_without_cpp_compiler_is_a_config_error(models, spec, monkeypatch):
    """SOLVER.COMPILE on the CPU with no C++ compiler fails at setup, naming the fix."""
    import torch._inductor.config as inductor_config  # torch._inductor takes a second to import

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "no-such-c++-compiler"))
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler.*SOLVER.COMPILE False"):
        make_trainer("KD", models, spec, compile=True)
