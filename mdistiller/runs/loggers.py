"""Where training statistics go: worklog.txt (mdistiller's format), metrics.jsonl,
TensorBoard (tensorboardX) and wandb (only rank 0 builds a RunLogger); and where the
package's messages go: the ``mdistiller`` :mod:`logging` tree (:func:`setup_logging`)."""

import contextlib
import json
import logging
import os
import sys
import uuid

from ..utils.errors import ConfigError
from ..config.load import LEVELS, cfg_to_dict  # noqa: F401 (LEVELS: still importable here)


class RunLogger:
    def __init__(self, cfg, run_dir, resume=False):
        self.run_dir = run_dir
        self.tb = None
        self.wandb = None
        if cfg.LOG.TENSORBOARD:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.path.join(run_dir, "train.events"))
        if cfg.LOG.WANDB:
            try:
                self.wandb = self._start_wandb(cfg, resume)
            except ConfigError:
                self.close()
                raise

    def _start_wandb(self, cfg, resume):
        fix = "run 'wandb login', set WANDB_MODE=offline, or set LOG.WANDB False"
        try:
            import wandb
        except ImportError:
            raise ConfigError("LOG.WANDB is True but the wandb package is not installed; pip install wandb, "
                              "or set LOG.WANDB False") from None
        try:
            return wandb.init(project=cfg.EXPERIMENT.PROJECT, name=os.path.basename(self.run_dir),
                              config=cfg_to_dict(cfg), dir=self.run_dir, resume="allow" if resume else None,
                              id=self._wandb_id(resume))
        except Exception as e:  # noqa: BLE001 - wandb raises its own errors (no credentials, network)
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise ConfigError(f"LOG.WANDB is True but wandb could not start ({first}); {fix}") from None

    def _wandb_id(self, resume):
        path = os.path.join(self.run_dir, "wandb_id.txt")
        if resume and os.path.isfile(path):
            with open(path) as f:
                return f.read().strip()
        run_id = uuid.uuid4().hex[:8]
        with open(path, "w") as f:
            f.write(run_id)
        return run_id

    def text(self, line):
        """Append a free-form line to worklog.txt."""
        with open(os.path.join(self.run_dir, "worklog.txt"), "a") as f:
            f.write(line + os.linesep)

    def scalars(self, values, step):
        """Scalars during an epoch (losses, accuracy, lr) at a global step."""
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def epoch(self, epoch, lr, record, step):
        """End-of-epoch record: worklog.txt block, TB/wandb scalars (metrics.jsonl is written
        by the epoch commit, see mdistiller.runs.folder)."""
        keys = ["train_acc", "train_loss"] + (["val_acc", "val_loss"] if "val_acc" in record else []) + \
            ["test_acc", "test_acc_top5", "test_loss"]
        lines = ["-" * 25, f"epoch: {epoch}", f"lr: {lr:.2f}"] + [f"{k}: {record[k]:.2f}" for k in keys] + ["-" * 25]
        with open(os.path.join(self.run_dir, "worklog.txt"), "a") as f:
            f.write(os.linesep.join(lines) + os.linesep)
        flat = {f"epoch/{k}": record[k] for k in keys + ["best_acc"]}
        flat.update({f"epoch/{k}": v for k, v in record["losses"].items()})
        flat["epoch/lr"] = lr
        self.scalars(flat, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class NullLogger:
    """What ranks other than 0 get: writes nothing."""

    def text(self, line):
        pass

    def scalars(self, values, step):
        pass

    def epoch(self, epoch, lr, record, step):
        pass

    def close(self):
        pass


def read_metrics(run_dir):
    """Per-epoch records of ``run_dir/metrics.jsonl``, one per epoch (the last written wins),
    sorted by epoch; an unparsable line (e.g. a write cut short by a crash) is skipped."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    by_epoch = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("epoch"), int):
                by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


class _StdoutHandler(logging.StreamHandler):
    """Writes to the ``sys.stdout`` of the moment (so redirections and captures see it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)




@contextlib.contextmanager
def setup_logging(level="INFO", quiet=False):
    """Print the ``mdistiller`` loggers' records at ``level`` (``LOG.LEVEL``) and above on
    stdout, as bare lines, while the block runs; ``quiet`` (``--quiet``, ranks other than
    0) keeps only errors. Errors of the tools stay one ``error:`` line on stderr."""
    root = logging.getLogger("mdistiller")
    # nested (a sweep's or the demo's runs): one handler, the inner level while inside
    handler = None if any(isinstance(h, _StdoutHandler) for h in root.handlers) else _StdoutHandler()
    old_level = root.level
    root.setLevel(logging.ERROR if quiet else getattr(logging, str(level).upper()))
    if handler is not None:
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    try:
        yield root
    finally:
        if handler is not None:
            root.removeHandler(handler)
        root.setLevel(old_level)
