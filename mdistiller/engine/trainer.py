"""The one trainer for every distiller and view count.

A step: move the batch to the device, build its views on the device, let the distiller
add what it needs (``prepare_batch``), forward under autocast, sum the already weighted
losses, backward, and update, all without a host synchronisation. Statistics stay on the
device and are read every ``LOG.READ_FREQ`` steps; a non-finite loss sets a device flag
that makes the fused SGD skip that update (as GradScaler does) and stops the run at the
next read, naming the step and the loss terms.

The trainer owns the step, the epoch's device statistics and the run's state (optimizer,
scaler, best accuracy, history: :meth:`Trainer.state`, :meth:`Trainer.load_state`).
Everything around the step is a hook (:mod:`mdistiller.engine.hooks`): the NaN watch, the
atomic epoch commit, the progress bar, the metrics and log lines, and the signal stop.
Pass ``hooks=[...]`` to replace them or :meth:`Trainer.register_hooks` to add one.
"""

import contextlib
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ..dataset.loader import prefetch_to_device, set_epoch, to_device
from ..utils.errors import ConfigError
from .dot import build_dot, uses_dot
from .hooks import EpochState, HardStop, StopRequested, default_hooks  # noqa: F401 (re-exported)
from .selection import improves, selected_on, selection_key
from .utils import derive_seed, retain_host_memory, seed_everything, set_rng_state, topk_correct


@torch.no_grad()
def evaluate(model_fn, loader, transform, ctx, autocast=contextlib.nullcontext, memory_format=None):
    """Top-1, top-5 (percent) and mean cross-entropy of ``model_fn`` over ``loader``,
    summed over ranks so each validation sample counts exactly once."""
    dev = ctx.device
    sums = torch.zeros(4, device=dev, dtype=torch.float64)
    for batch in loader:
        batch = transform(to_device(batch, dev))
        image = batch["image"]
        if memory_format is torch.channels_last:
            image = image.contiguous(memory_format=memory_format)
        with autocast():
            logits = model_fn(image)
        logits, target = logits.float(), batch["target"]
        c1, c5 = topk_correct(logits, target)
        loss = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        sums += torch.stack([torch.ones((), device=dev, dtype=torch.float64) * target.shape[0],
                             c1.double(), c5.double(), loss.double()])
    ctx.all_reduce_sum(sums)
    n, c1, c5, loss = sums.tolist()
    n = max(n, 1.0)
    return {"top1": 100 * c1 / n, "top5": 100 * c5 / n, "loss": loss / n, "count": int(n)}


def lr_at(cfg, epoch):
    """mdistiller's step schedule: LR * RATE ** (number of stages strictly below epoch)."""
    steps = sum(epoch > s for s in cfg.SOLVER.LR_DECAY_STAGES)
    return cfg.SOLVER.LR * (cfg.SOLVER.LR_DECAY_RATE ** steps)


def sum_losses(losses):
    return sum(losses.values())


def build_optimizer(cfg, params, device):
    """SGD; fused where available so a device-side ``found_inf`` flag can skip a step.
    ``SOLVER.TRAINER dot``: DOT (:mod:`mdistiller.engine.dot`)."""
    if uses_dot(cfg):
        return build_dot(cfg, params)
    fused = device.type in ("cpu", "cuda")
    return torch.optim.SGD(params, lr=cfg.SOLVER.LR, momentum=cfg.SOLVER.MOMENTUM,
                           weight_decay=cfg.SOLVER.WEIGHT_DECAY, fused=fused or None)


class Trainer:
    """Runs epochs of ``distiller`` on ``loaders``; see :meth:`train`."""

    def __init__(self, cfg, distiller, loaders, transforms, ctx, run_dir=None, logger=None,
                 generator=None, hooks=None):
        self.cfg = cfg
        self.ctx = ctx
        self.device = ctx.device
        self.distiller = distiller
        self.train_loader, self.val_loader = loaders[:2]
        # DATASET.HOLDOUT: the held-out training images, which then select the reported epoch
        self.holdout_loader = loaders[2] if len(loaders) > 2 else None
        self.selected_on = selected_on(self.holdout_loader is not None)
        self.train_transform, self.val_transform = transforms
        self.run_dir = run_dir
        self.logger = logger
        self.generator = generator
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.SOLVER.AMP]
        self.memory_format = torch.channels_last if cfg.SOLVER.CHANNELS_LAST else torch.contiguous_format
        if cfg.SOLVER.RETAIN_HOST_MEMORY and self.device.type == "cpu":
            retain_host_memory()
        self.model = distiller
        if ctx.distributed:
            teacher_names = [n for n, _ in distiller.named_parameters() if n.startswith("teacher.")]
            teacher_names += [n for n, _ in distiller.named_buffers() if n.startswith("teacher.")]
            DDP._set_params_and_buffers_to_ignore_for_model(distiller, teacher_names)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(distiller, device_ids=ids)
        self.optimizer = build_optimizer(cfg, distiller.get_learnable_parameters(), self.device)
        # what the step back-propagates: the sum of the terms, or the optimizer's (DOT splits them)
        self.loss_for_backward = getattr(self.optimizer, "loss_for_backward", sum_losses)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        self.cuda_graphs = (cfg.SOLVER.COMPILE and self.device.type == "cuda"
                            and cfg.SOLVER.COMPILE_MODE in ("reduce-overhead", "max-autotune"))
        # the selected epoch (see end_epoch), its test top-1 and its selection score; with the
        # history, kept in every checkpoint: the run's record
        self.start_epoch, self.start_step, self.best_acc, self.best_score = 1, 0, -1.0, -1.0
        self.best_epoch, self.history = 0, []
        self.global_step = 0
        self._partial = None  # statistics of an interrupted epoch being resumed
        self._stop = False  # a stop request (SignalStop sets it; tests too)
        self.hooks = []
        self.register_hooks(default_hooks(logger) if hooks is None else hooks)

    def register_hooks(self, hooks):
        """Append hooks (:class:`~mdistiller.engine.hooks.HookBase`); they run in order."""
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    def _call(self, name, *args):
        for h in self.hooks:
            getattr(h, name)(*args)

    @property
    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    # ---------------------------------------------------------------------------------
    # steps
    # ---------------------------------------------------------------------------------
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def prepare(self, batch, transform):
        batch = transform(to_device(batch, self.device))
        if self.memory_format is torch.channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v
                     for k, v in batch.items()}
        return batch

    def train_step(self, batch, epoch):
        """One optimisation step on a raw (collated, CPU or already on the device) batch;
        returns device tensors ``(logits, target, losses, total, finite)`` and never
        synchronises."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be reused
        batch = self.prepare(batch, self.train_transform)
        batch = self.distiller.prepare_batch(batch)
        with self.autocast():
            logits, losses = self.model(**batch, epoch=epoch)
        total = self.loss_for_backward(losses)
        finite = torch.isfinite(total)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if self.optimizer.defaults.get("fused"):
                self.optimizer.found_inf = (~finite).float()
            else:  # no fused kernel for this device: zero the step's gradients instead
                for g in self.optimizer.param_groups:
                    for p in g["params"]:
                        if p.grad is not None:
                            p.grad.copy_(torch.where(finite, p.grad, torch.zeros_like(p.grad)))
            self.optimizer.step()
        return logits, batch["target"], losses, total, finite

    # ---------------------------------------------------------------------------------
    # epochs
    # ---------------------------------------------------------------------------------
    def _seed_epoch(self, epoch):
        """Every epoch's randomness derives from (seed, epoch, rank), so a run resumed at
        an epoch boundary draws exactly what an uninterrupted one does."""
        s = derive_seed(self.cfg.EXPERIMENT.SEED, epoch, self.ctx.rank)
        seed_everything(s)
        if self.generator is not None:
            self.generator.manual_seed(s)

    def train_epoch(self, epoch):
        cfg, dev = self.cfg, self.device
        self.distiller.train()
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(cfg, epoch)
        start_step = self.start_step if epoch == self.start_epoch else 0
        if start_step == 0:
            self._seed_epoch(epoch)
        set_epoch(self.train_loader, epoch, start_step=start_step)
        stats = self._partial or {}
        self._partial = None
        zero = torch.zeros((), device=dev, dtype=torch.float64)
        ep = EpochState(epoch=epoch, start_step=start_step, steps=len(self.train_loader) + start_step,
                        seen=stats.get("seen", zero.clone()), correct=stats.get("correct", zero.clone()),
                        loss_sum=stats.get("loss_sum", zero.clone()), term_sums=stats.get("term_sums"),
                        bad_step=torch.full((), -1, device=dev, dtype=torch.long), step=start_step)
        self._call("before_epoch", ep)
        t0 = time.time()
        batches = prefetch_to_device(self.train_loader, dev) if cfg.SOLVER.PREFETCH else self.train_loader
        for step, batch in enumerate(batches, start=start_step + 1):
            logits, target, losses, total, finite = self.train_step(batch, epoch)
            self._accumulate(ep, step, logits, target, losses, total, finite)
            self.global_step += 1
            self._call("after_step", ep)
        self._call("after_steps", ep)
        names, term_sums = ep.names, ep.term_sums
        sums = torch.cat([torch.stack([ep.seen, ep.correct, ep.loss_sum]),
                          term_sums if term_sums is not None else zero[None]])
        self.ctx.all_reduce_sum(sums)
        self.ctx.broadcast_buffers(self.distiller, skip=("teacher.",))  # validate what the checkpoint keeps
        seen_all = max(sums[0].item(), 1.0)
        return {
            "train_acc": 100 * sums[1].item() / seen_all,
            "train_loss": sums[2].item() / seen_all,
            "losses": {k: v / seen_all for k, v in zip(names or [], sums[3:].tolist())},
            "train_time": time.time() - t0,
        }

    def _accumulate(self, ep, step, logits, target, losses, total, finite):
        """Add one step to the epoch's device statistics (no host synchronisation)."""
        if ep.names is None:
            ep.names = sorted(losses)
            if ep.term_sums is None:
                ep.term_sums = torch.zeros(len(ep.names), device=self.device, dtype=torch.float64)
            ep.bad_terms = torch.zeros(len(ep.names), device=self.device, dtype=torch.float64)
        n = target.shape[0]
        terms = torch.stack([losses[k].detach().double() for k in ep.names])
        first_bad = (~finite) & (ep.bad_step < 0)
        ep.bad_step = torch.where(first_bad, torch.full_like(ep.bad_step, step), ep.bad_step)
        ep.bad_terms = torch.where(first_bad, terms, ep.bad_terms)
        ok = finite.double()
        ep.seen += n * ok
        ep.term_sums += terms * n * ok
        ep.loss_sum += total.detach().double() * n * ok
        ep.correct += topk_correct(logits.detach(), target, ks=(1,))[0] * ok
        ep.step, ep.batch_size, ep._values = step, n, None
        ep.read = step % self.cfg.LOG.READ_FREQ == 0 or step == ep.steps

    def evaluate(self, model_fn=None, loader=None):
        """Validation of the student (or ``model_fn``) over the whole validation set (or
        ``loader``'s samples, e.g. the holdout's), with the test transform."""
        self.distiller.eval()
        return evaluate(model_fn or self.distiller.forward_test, loader or self.val_loader, self.val_transform,
                        self.ctx, self.autocast, self.memory_format)

    def evaluate_teacher(self):
        teacher = self.distiller.teacher
        return self.evaluate(lambda x: teacher(x)[0])

    # ---------------------------------------------------------------------------------
    # checkpoints
    # ---------------------------------------------------------------------------------
    def state(self, epoch, **extra):
        state = {"epoch": epoch, "model": self.distiller.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "best_acc": self.best_acc, "best_epoch": self.best_epoch, "best_score": self.best_score,
                 "selected_on": self.selected_on, "global_step": self.global_step,
                 "history": [r for r in self.history if r["epoch"] <= epoch]}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        from .cfg import cfg_to_dict

        state["config"] = cfg_to_dict(self.cfg)
        state.update(extra)
        return state

    def end_epoch(self, epoch, record):
        """The run's record of a finished epoch, on every rank: the selected epoch so far
        (:mod:`mdistiller.engine.selection`: the highest ``val_acc`` with a holdout, ties to
        the earliest; else the highest ``test_acc``, ties to the latest), its test top-1 as
        ``best_acc``, and the history kept in every checkpoint."""
        score = record[selection_key(self.holdout_loader is not None)]
        if improves(score, self.best_score, self.selected_on):
            self.best_score, self.best_acc, self.best_epoch = score, record["test_acc"], epoch
        record["best_acc"], record["selected_epoch"] = self.best_acc, self.best_epoch
        self.history = [r for r in self.history if r["epoch"] < epoch] + [record]

    def load_state(self, state):
        """Restore from a ``latest`` (epoch end) or ``interrupted`` (mid-epoch) state."""
        self.distiller.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.best_acc = state.get("best_acc", -1.0)
        self.best_epoch, self.history = state.get("best_epoch", 0), list(state.get("history", []))
        self.best_score = state.get("best_score", self.best_acc)
        self.global_step = state.get("global_step", 0)
        inter = state.get("interrupted")
        if inter:
            if len(inter["ranks"]) != self.ctx.world_size:
                raise ConfigError(
                    f"the 'interrupted' checkpoint was written by {len(inter['ranks'])} processes; resume it with "
                    f"the same number, or delete it to resume from the last epoch end ('latest')")
            own = inter["ranks"][self.ctx.rank]
            self.start_epoch, self.start_step = inter["epoch"], inter["step"]
            set_rng_state(own["rng"], self.generator)
            self._partial = {k: v.to(self.device) for k, v in own["stats"].items()}
        else:
            self.start_epoch, self.start_step = state["epoch"] + 1, 0

    # ---------------------------------------------------------------------------------
    # the loop
    # ---------------------------------------------------------------------------------
    def train(self):
        """Train from ``start_epoch`` to ``SOLVER.EPOCHS`` with the hooks; returns the test
        top-1 of the selected epoch (``best_acc``)."""
        try:
            self._call("before_train")
            for epoch in range(self.start_epoch, self.cfg.SOLVER.EPOCHS + 1):
                train_stats = self.train_epoch(epoch)
                val = self.evaluate()
                record = {
                    "epoch": epoch, "lr": lr_at(self.cfg, epoch),
                    "train_acc": train_stats["train_acc"], "train_loss": train_stats["train_loss"],
                    "test_acc": val["top1"], "test_acc_top5": val["top5"], "test_loss": val["loss"],
                }
                if self.holdout_loader is not None:  # holdout top-1 and loss, beside the test's
                    held = self.evaluate(loader=self.holdout_loader)
                    record.update(val_acc=held["top1"], val_loss=held["loss"])
                record.update(best_acc=None, time=train_stats["train_time"], losses=train_stats["losses"])
                self.end_epoch(epoch, record)
                self._call("after_epoch", epoch, record)
            self._call("after_train")
        finally:
            for h in reversed(self.hooks):
                h.close()
        return self.best_acc
