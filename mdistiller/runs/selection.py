"""Which epoch a run reports: the one place that decides (the trainer, the run's messages,
``summarize`` and ``eval`` all ask here).

With a holdout (``DATASET.HOLDOUT`` > 0) the reported epoch is the one with the highest
holdout top-1 (``val_acc``; ties go to the earliest epoch), so the test set never picks a
checkpoint. Without one, it is the reference's: the highest test top-1 (ties go to the
latest epoch), an optimistic figure since the test set both selects and scores it.
"""

import math

HOLDOUT, TEST = "holdout", "test"


def selected_on(has_holdout):
    """``"holdout"`` or ``"test"``: the split that selects a run's reported epoch."""
    return HOLDOUT if has_holdout else TEST


def selection_key(has_holdout, ema=False):
    """The ``metrics.jsonl`` field the selection maximises (of the student's EMA with
    ``ema``, SOLVER.EMA_SELECT: ``ema_val_acc`` or ``ema_acc``)."""
    if ema:
        return "ema_val_acc" if has_holdout else "ema_acc"
    return "val_acc" if has_holdout else "test_acc"


def describe(on):
    """Words for a figure selected on ``on`` (``"holdout"`` or ``"test"``)."""
    return ("selected on the holdout split of the training set" if on == HOLDOUT
            else "selected on the test set (optimistic)")


def report(test_acc, epoch, on):
    """The one-line figure of a run: the test top-1 of its selected epoch, and how it was
    selected."""
    head = "test top-1" if on == HOLDOUT else "best test top-1"
    return f"{head} {test_acc:.2f} at epoch {epoch}, {describe(on)}"


def improves(value, best, on):
    """Does ``value`` replace the current ``best`` (holdout: strictly higher, so ties keep the
    earliest epoch; test: higher or equal, the reference's ties to the latest epoch)?"""
    return value > best if on == HOLDOUT else value >= best


def select_epoch(records, on, ema=False):
    """The record (a ``metrics.jsonl`` row) ``on`` selects among ``records`` (in epoch
    order; of the student's EMA with ``ema``), or None if none has a number for the
    selection key."""
    key, best = selection_key(on == HOLDOUT, ema), None
    for r in records:
        v = r.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
            continue
        if best is None or improves(v, best[key], on):
            best = r
    return best
