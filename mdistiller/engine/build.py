"""Build a run's pieces from its config: dataset, student, teacher (with weights), distiller
(through the one builder of :mod:`mdistiller.distillers.combine`), loaders and device-side
transforms. Every bad name or file fails here, before training."""

import os

import torch

from ..dataset import get_dataset
from ..dataset.augment import build_batch_transform
from ..dataset.loader import build_eval_loader, build_loaders
from ..distillers import build_distiller, views_for_cfg  # noqa: F401  (build_distiller: re-exported)
from ..distillers.combine import method_classes, uses_teacher
from ..distillers.ensemble import build_ensemble, teacher_ckpts, teacher_names
from ..models import MODEL_FAMILIES, build_model, check_model_name, split_source
from ..models.external import check_input_size, resize_inputs
from ..runs.checkpoint import CKPT_FIX, load_model_weights, verify_recorded_sha256
from ..utils.errors import CheckpointError, ConfigError
from ..utils.runtime import REPO_ROOT


def teacher_checkpoint_path(cfg, family, name=None, path=None):
    """DISTILLER.TEACHER_CKPT, else mdistiller's download_ckpts location for the model (of
    teacher ``name`` with checkpoint ``path`` when given: one of several teachers)."""
    name = cfg.DISTILLER.TEACHER if name is None else name
    path = cfg.DISTILLER.TEACHER_CKPT if path is None else path
    if not path and family == "cifar" and split_source(name)[0] is None:
        entry = MODEL_FAMILIES["cifar"][name]
        path = entry[1] or ""
    if path and not os.path.isabs(path) and not os.path.exists(path):
        in_repo = os.path.join(REPO_ROOT, path)
        path = in_repo if os.path.exists(in_repo) else path
    return path


def build_teacher(cfg, family, num_classes, image_size=None):
    """The teacher with its weights (DISTILLER.TEACHER_CKPT, the download_ckpts location, or
    for timm:/torchvision: names DISTILLER.TEACHER_PRETRAINED), taking DISTILLER.TEACHER_INPUT_SIZE
    inputs (resized on the device) or the dataset's ``image_size``. Several teachers (lists):
    a :class:`~mdistiller.distillers.ensemble.TeacherEnsemble` of them."""
    teachers = [build_one_teacher(cfg, family, num_classes, image_size, name, ckpt)
                for name, ckpt in zip(teacher_names(cfg), teacher_ckpts(cfg))]
    return build_ensemble(teachers, cfg)


def build_one_teacher(cfg, family, num_classes, image_size, name, ckpt):
    """Teacher ``name`` with the weights of ``ckpt`` (see :func:`build_teacher`)."""
    d = cfg.DISTILLER
    size = d.TEACHER_INPUT_SIZE or image_size
    external = split_source(name)[0] is not None
    if d.TEACHER_INPUT_SIZE < 0:
        raise ConfigError(f"DISTILLER.TEACHER_INPUT_SIZE must be a positive side in pixels (0 = the dataset's), "
                          f"got {d.TEACHER_INPUT_SIZE}")
    if d.TEACHER_PRETRAINED and (not external or ckpt):
        raise ConfigError(f"DISTILLER.TEACHER_PRETRAINED is for timm:/torchvision: teachers without "
                          f"DISTILLER.TEACHER_CKPT; for {name} set one of the two")
    if d.TEACHER_PRETRAINED:
        teacher = build_model(name, family, num_classes, size, pretrained=True)
    else:
        teacher = build_model(name, family, num_classes, size)
        path = teacher_checkpoint_path(cfg, family, name, ckpt)
        if not path:
            how = ("a timm/torchvision/mdistiller state dict, or DISTILLER.TEACHER_PRETRAINED True for the "
                   "library's weights") if external else \
                "e.g. torchvision's weights saved as {'model': state_dict}" if family == "imagenet" else CKPT_FIX
            raise CheckpointError(f"no teacher checkpoint for {name}: set DISTILLER.TEACHER_CKPT to a file ({how})")
        if os.path.isdir(path):
            raise CheckpointError(f"teacher checkpoint '{path}' is a folder; set DISTILLER.TEACHER_CKPT to the "
                                  f"checkpoint file inside it")
        if not os.path.isfile(path):
            raise CheckpointError(f"teacher checkpoint '{path}' not found; {CKPT_FIX}")
        checked = verify_recorded_sha256(path)
        load_model_weights(teacher, path, name, part="student")
        teacher.checkpoint_path = path  # its SHA-256 is recorded in the run folder (teacher.json)
        teacher.checkpoint_sha256 = checked  # already computed when SHA256SUMS records the file
    if size:
        check_input_size(teacher, size, name)
    if d.TEACHER_INPUT_SIZE and d.TEACHER_INPUT_SIZE != image_size:
        resize_inputs(teacher, d.TEACHER_INPUT_SIZE)
    return teacher


#: the run's number of augmented views (decided by its methods)
num_views = views_for_cfg


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
    """Return ``(spec, distiller, loaders, (train_tf, val_tf), generator)``; ``loaders`` is
    ``(train_loader, val_loader)``, plus the holdout's loader with ``DATASET.HOLDOUT``.

    The distiller is placed by :func:`place_distiller`. Raises the project's errors for
    unknown names and bad files.
    """
    classes = method_classes(cfg)  # unknown (or repeated) names fail before any data is read
    if cfg.DISTILLER.EXTRA and not classes[0].uses_teacher:
        raise ConfigError(f"DISTILLER.EXTRA {list(cfg.DISTILLER.EXTRA)} needs a teacher, but DISTILLER.TYPE "
                          f"{cfg.DISTILLER.TYPE} trains without one; set DISTILLER.TYPE to a method that uses a "
                          f"teacher or DISTILLER.EXTRA []")
    spec = get_dataset(cfg)
    family = spec.model_family
    check_model_name(cfg.DISTILLER.STUDENT, family)
    student = build_model(cfg.DISTILLER.STUDENT, family, spec.num_classes, spec.image_size)
    check_input_size(student, spec.image_size, cfg.DISTILLER.STUDENT)
    teacher = build_teacher(cfg, family, spec.num_classes, spec.image_size) if uses_teacher(cfg) else None
    if cfg.SOLVER.SYNC_BN and ctx.device.type != "cuda":  # also on one process: the README lists it as an error
        raise ConfigError("SOLVER.SYNC_BN needs CUDA (PyTorch's SyncBatchNorm is CUDA-only); set SOLVER.SYNC_BN False "
                          "on CPU")
    if cfg.SOLVER.SYNC_BN and ctx.distributed:
        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
    distiller = place_distiller(cfg, build_distiller(cfg, student, teacher, spec), ctx.device)
    views = views_for_cfg(cfg)
    loaders = build_loaders(cfg, spec, views, rank=ctx.rank, world_size=ctx.world_size, seed=seed)
    if spec.holdout is not None:
        loaders += (build_eval_loader(cfg, spec.holdout, ctx.rank, ctx.world_size),)
    generator = torch.Generator()  # augmentation parameters are drawn on the CPU
    generator.manual_seed(seed)
    transforms = (build_batch_transform(spec, views, train=True, device=ctx.device, generator=generator),
                  build_batch_transform(spec, 1, train=False, device=ctx.device))
    return spec, distiller, loaders, transforms, generator
