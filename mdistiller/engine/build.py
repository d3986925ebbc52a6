"""Build a run's pieces from its config: dataset, student, teacher (with weights), distiller,
loaders and device-side transforms. Every bad name or file fails here, before training."""

import os

import torch

from ..dataset import get_dataset
from ..dataset.augment import build_batch_transform
from ..dataset.loader import build_loaders
from ..distillers import DISTILLERS
from ..models import MODEL_FAMILIES, build_model
from ..utils.errors import CheckpointError, ConfigError
from .checkpoint import CKPT_FIX, load_model_weights
from .utils import REPO_ROOT


def teacher_checkpoint_path(cfg, family):
    """DISTILLER.TEACHER_CKPT, else mdistiller's download_ckpts location for the model."""
    path = cfg.DISTILLER.TEACHER_CKPT
    if not path and family == "cifar":
        entry = MODEL_FAMILIES["cifar"][cfg.DISTILLER.TEACHER]
        path = entry[1] or ""
    if path and not os.path.isabs(path) and not os.path.exists(path):
        in_repo = os.path.join(REPO_ROOT, path)
        path = in_repo if os.path.exists(in_repo) else path
    return path


def build_teacher(cfg, family, num_classes):
    name = cfg.DISTILLER.TEACHER
    teacher = build_model(name, family, num_classes)
    path = teacher_checkpoint_path(cfg, family)
    if not path:
        how = "e.g. torchvision's weights saved as {'model': state_dict}" if family == "imagenet" else CKPT_FIX
        raise CheckpointError(f"no teacher checkpoint for {name}: set DISTILLER.TEACHER_CKPT to a file ({how})")
    if not os.path.isfile(path):
        raise CheckpointError(f"teacher checkpoint '{path}' not found; {CKPT_FIX}")
    return load_model_weights(teacher, path, name, part="student")


def distiller_class(name):
    return DISTILLERS[name]


def num_views(cfg):
    names = [cfg.DISTILLER.TYPE] + list(cfg.DISTILLER.EXTRA)
    return max(distiller_class(n).views_for(cfg) for n in names)


def build_distiller(cfg, student, teacher, spec):
    """The configured distiller (or a combination when DISTILLER.EXTRA is set)."""
    extra_kwargs = {}
    classes = [distiller_class(n) for n in [cfg.DISTILLER.TYPE] + list(cfg.DISTILLER.EXTRA)]
    if any(getattr(c, "needs_num_data", False) for c in classes):
        extra_kwargs = {"num_data": spec.num_train, "train_targets": spec.train_targets}
    if cfg.DISTILLER.EXTRA:
        from ..distillers.feature.combine import build_distiller as build_combined

        return build_combined(cfg, student, teacher, **extra_kwargs)
    cls = classes[0]
    if getattr(cls, "needs_num_data", False):
        return cls(student, teacher, cfg, **extra_kwargs)
    return cls(student, teacher, cfg)


def place_distiller(cfg, distiller, device):
    """Move ``distiller`` to ``device``, in channels_last if SOLVER.CHANNELS_LAST; under
    SOLVER.COMPILE, ``torch.compile`` the student and the teacher's cached inference copy
    (:meth:`Distiller._run_teacher`) in SOLVER.COMPILE_MODE (``reduce-overhead``: CUDA
    graphs on a GPU, for small models whose steps are launch-bound). Returns ``distiller``."""
    distiller.to(device)
    if cfg.SOLVER.CHANNELS_LAST:
        distiller.to(memory_format=torch.channels_last)
    if cfg.SOLVER.COMPILE:
        if device.type == "cpu":
            check_cpp_compiler()
        mode = None if cfg.SOLVER.COMPILE_MODE == "default" else cfg.SOLVER.COMPILE_MODE
        distiller.student.compile(mode=mode)
        distiller.compile_teacher = True
        distiller.compile_mode = mode
    return distiller


def check_cpp_compiler():
    """Inductor builds C++ kernels for the CPU: fail before training when it has no compiler."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError:  # another torch layout: let torch.compile report it
        return
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        raise ConfigError("SOLVER.COMPILE on the CPU needs a C++ compiler for inductor: install g++ "
                          "(or set CXX), or set SOLVER.COMPILE False") from None


def build_run(cfg, ctx, seed=0):
    """Return ``(spec, distiller, (train_loader, val_loader), (train_tf, val_tf), generator)``.

    The distiller is placed by :func:`place_distiller`. Raises the project's errors for
    unknown names and bad files.
    """
    for name in [cfg.DISTILLER.TYPE] + list(cfg.DISTILLER.EXTRA):
        distiller_class(name)  # unknown names fail before any data is read
    spec = get_dataset(cfg)
    family = spec.model_family
    MODEL_FAMILIES[family][cfg.DISTILLER.STUDENT]
    student = build_model(cfg.DISTILLER.STUDENT, family, spec.num_classes)
    teacher = build_teacher(cfg, family, spec.num_classes) if cfg.DISTILLER.TYPE != "NONE" else None
    if cfg.SOLVER.SYNC_BN and ctx.distributed:
        if ctx.device.type != "cuda":
            raise ConfigError("SOLVER.SYNC_BN needs CUDA (PyTorch's SyncBatchNorm is CUDA-only); set SOLVER.SYNC_BN False on CPU")
        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
    distiller = place_distiller(cfg, build_distiller(cfg, student, teacher, spec), ctx.device)
    views = num_views(cfg)
    loaders = build_loaders(cfg, spec, views, rank=ctx.rank, world_size=ctx.world_size, seed=seed)
    generator = torch.Generator()  # augmentation parameters are drawn on the CPU
    generator.manual_seed(seed)
    transforms = (build_batch_transform(spec, views, train=True, device=ctx.device, generator=generator),
                  build_batch_transform(spec, 1, train=False, device=ctx.device))
    return spec, distiller, loaders, transforms, generator
