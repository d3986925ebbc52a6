"""The one trainer for every distiller and view count.

A step: move the batch to the device, build its views on the device, let the distiller
add what it needs (``prepare_batch``), forward under autocast, sum the already weighted
losses, backward, and update, all without a host synchronisation. Statistics stay on the
device and are read every ``LOG.READ_FREQ`` steps; a non-finite loss sets a device flag
that makes the fused SGD skip that update (as GradScaler does) and stops the run at the
next read, naming the step and the loss terms.

The trainer owns the step, the epoch's device statistics and the checkpoint's assembly
(model, optimizer, scaler and every hook's state: :meth:`Trainer.state`,
:meth:`Trainer.load_state`). Everything around the step is a hook
(:mod:`mdistiller.engine.hooks`): the learning-rate schedule, the validation and the best
epoch (:attr:`Trainer.loop_hooks`, always there), and the NaN watch, the atomic epoch
commit, the progress, the metrics and log lines and the signal stop (``hooks``, by default
:func:`~mdistiller.engine.hooks.default_hooks`). Pass ``hooks=[...]`` to replace the latter
or :meth:`Trainer.register_hooks` to add one (the composition root adds the plugin hooks of
``EXPERIMENT.HOOKS`` this way).
"""

import contextlib
import time

import torch

from ..config.load import cfg_to_dict
from ..dataset.loader import prefetch_to_device, set_epoch, to_device
from ..solver.lr_schedule import lr_at  # noqa: F401 (re-exported)
from ..solver.optimizer import build_optimizer, sum_losses
from ..utils.dist import wrap_ddp
from ..utils.errors import ConfigError
from ..utils.runtime import derive_seed, retain_host_memory, seed_everything, set_rng_state, topk_correct
from .hooks import BestEpoch, EpochState, HardStop, StopRequested, default_hooks, loop_hooks  # noqa: F401 (re-exported)
from ..runs.selection import selected_on


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
        self.model = wrap_ddp(distiller, ctx, ignore="teacher.") if ctx.distributed else distiller
        names = {id(p): n for n, p in distiller.named_parameters()}  # for SOLVER.WEIGHT_DECAY_NORM_BIAS's groups
        self.optimizer = build_optimizer(cfg, [(names.get(id(p), str(i)), p) for i, p in
                                               enumerate(distiller.get_learnable_parameters())],
                                         self.device, module=distiller)
        self.clip_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # what the step back-propagates: the sum of the terms, or the optimizer's (DOT splits them)
        self.loss_for_backward = getattr(self.optimizer, "loss_for_backward", sum_losses)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        self.cuda_graphs = (cfg.SOLVER.COMPILE and self.device.type == "cuda"
                            and cfg.SOLVER.COMPILE_MODE in ("reduce-overhead", "max-autotune"))
        self.start_epoch, self.start_step = 1, 0
        self.global_step = 0
        self.epoch = 0  # the epoch running or just finished (1-based)
        self.epoch_state = None  # its EpochState (positions and device statistics)
        self.metrics = None  # its record, filled by the hooks until after_val_epoch
        self.stop_requested = False  # request_stop(): end after this epoch's commit
        self._partial = None  # statistics of an interrupted epoch being resumed
        self._stop = False  # a signal's stop request (SignalStop sets it; tests too)
        self.loop_hooks, self.hooks, self._order = [], [], []
        self._add(self.loop_hooks, loop_hooks(cfg))
        self.register_hooks(default_hooks(logger) if hooks is None else hooks)

    def register_hooks(self, hooks):
        """Add hooks (:class:`~mdistiller.engine.hooks.HookBase`); all hooks run in the order
        of their ``priority``, equal ones in the order they were added."""
        self._add(self.hooks, hooks)

    def _add(self, into, hooks):
        for h in hooks:
            h.trainer = self
            into.append(h)
        self._order = sorted(self.loop_hooks + self.hooks, key=lambda h: h.priority)

    def _call(self, name, *args):
        for h in self._order:
            getattr(h, name)(*args)

    def request_stop(self):
        """End the run cleanly after the current epoch is validated and committed (exit code
        0; ``--resume`` continues it). Rank 0's request decides for every rank."""
        self.stop_requested = True

    @property
    def _best(self):
        return next(h for h in self.loop_hooks if isinstance(h, BestEpoch))

    @property
    def best_acc(self):
        return self._best.best_acc

    @property
    def best_score(self):
        return self._best.best_score

    @property
    def best_epoch(self):
        return self._best.best_epoch

    @property
    def history(self):
        return self._best.history

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
            if self.cfg.SOLVER.CLIP_GRAD > 0:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients
                self.clip_grad()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if self.cfg.SOLVER.CLIP_GRAD > 0:
                self.clip_grad()
            if self.optimizer.defaults.get("fused"):
                self.optimizer.found_inf = (~finite).float()
            else:  # no fused kernel for this device: zero the step's gradients instead
                for g in self.optimizer.param_groups:
                    for p in g["params"]:
                        if p.grad is not None:
                            p.grad.copy_(torch.where(finite, p.grad, torch.zeros_like(p.grad)))
            self.optimizer.step()
        return logits, batch["target"], losses, total, finite

    def clip_grad(self):
        """SOLVER.CLIP_GRAD: scale the gradients to a global norm of at most CLIP_GRAD, on
        the device (no host synchronisation; under DDP the gradients are already all-reduced,
        so every rank clips the same global norm)."""
        torch.nn.utils.clip_grad_norm_(self.clip_params, self.cfg.SOLVER.CLIP_GRAD)

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
        self.epoch_state = ep
        self._call("before_train_epoch")
        t0 = time.time()
        batches = prefetch_to_device(self.train_loader, dev) if cfg.SOLVER.PREFETCH else self.train_loader
        for step, batch in enumerate(batches, start=start_step + 1):
            self._call("before_train_iter")
            logits, target, losses, total, finite = self.train_step(batch, epoch)
            self._accumulate(ep, step, logits, target, losses, total, finite)
            self.global_step += 1
            self._call("after_train_iter")
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
        loader = loader if loader is not None else self.val_loader  # an empty holdout shard stays empty
        return evaluate(model_fn or self.distiller.forward_test, loader, self.val_transform,
                        self.ctx, self.autocast, self.memory_format)

    def evaluate_teacher(self):
        teacher = self.distiller.teacher
        return self.evaluate(lambda x: teacher(x)[0])

    # ---------------------------------------------------------------------------------
    # checkpoints
    # ---------------------------------------------------------------------------------
    def state(self, epoch, **extra):
        """The checkpoint of the run after ``epoch``: model, optimizer, scaler, the config,
        every hook's ``state_dict()`` under ``hooks``, and (for readers of the file) the best
        accuracy, its epoch and the history at the top level."""
        state = {"epoch": epoch, "model": self.distiller.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "best_acc": self.best_acc, "best_epoch": self.best_epoch, "best_score": self.best_score,
                 "selected_on": self.selected_on, "global_step": self.global_step,
                 "history": [r for r in self.history if r["epoch"] <= epoch]}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        state["config"] = cfg_to_dict(self.cfg)
        state["hooks"] = {h.state_key: h.state_dict() for h in self._order}
        state.update(extra)
        return state

    def load_state(self, state):
        """Restore from a ``latest`` (epoch end) or ``interrupted`` (mid-epoch) state."""
        self.distiller.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = state.get("global_step", 0)
        hooks = dict(state.get("hooks") or {})
        # checkpoints written before the hooks kept state hold the best epoch at the top level
        hooks.setdefault("BestEpoch", {k: state[k] for k in ("best_acc", "best_score", "best_epoch", "history")
                                        if k in state})
        for h in self._order:
            if h.state_key in hooks:
                h.load_state_dict(hooks[h.state_key])
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
        top-1 of the selected epoch (``best_acc``). After a hook's :meth:`request_stop`, ends
        after that epoch's commit (``stopped_after`` is then the epoch)."""
        self.stopped_after = None
        try:
            self._call("before_train")
            for epoch in range(self.start_epoch, self.cfg.SOLVER.EPOCHS + 1):
                self.epoch = epoch
                train_stats = self.train_epoch(epoch)
                self.metrics = {
                    "epoch": epoch, "lr": self.lr,
                    "train_acc": train_stats["train_acc"], "train_loss": train_stats["train_loss"],
                    "test_acc": None, "test_acc_top5": None, "test_loss": None,  # the Evaluation hook's
                }
                if self.holdout_loader is not None:
                    self.metrics.update(val_acc=None, val_loss=None)  # the holdout's, beside the test's
                self.metrics.update(best_acc=None, time=train_stats["train_time"], losses=train_stats["losses"])
                self._call("after_train_epoch")  # the validation, then the selected epoch (BestEpoch)
                self._call("after_val_epoch", self.metrics)  # the commit comes last (Checkpointer)
                if self.ctx.agree(self.stop_requested) and epoch < self.cfg.SOLVER.EPOCHS:
                    self.stopped_after = epoch
                    return self.best_acc
            self._call("after_train")
        finally:
            for h in reversed(self._order):
                h.close()
        return self.best_acc
