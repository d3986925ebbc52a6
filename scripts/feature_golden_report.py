"""Per-method errors of the feature distillers against tests/data/feature_losses.json.gz.

Prints a markdown row per method: its loss terms, the worst relative error of the terms and
of the total, the input gradient's largest error relative to its largest entry, and whether
the method's own state-dict layout matches. It builds the cases with the golden test's own
helpers (tests/distillers/test_feature_golden.py, which asserts 1e-9). Run from the repo root:

    python3 scripts/feature_golden_report.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.conftest import probe_input  # noqa: E402
from tests.distillers import test_feature_golden as T  # noqa: E402
torch.set_num_threads(2)  # as the golden values were recorded (KDSVD's float32 SVD depends on it)

box = torch.nn.Module()  # filled under student. / teacher. keys, as inside a distiller
box.student, box.teacher = T.build_pair()
T.deterministic_fill(box)
box.teacher.requires_grad_(False)
pair = box.student.double(), box.teacher.double()
for method in sorted(T.CASES):
    case = T.CASES[method]
    d = T.build_filled(method, pair)
    x = probe_input(T.REF["batch"]).requires_grad_(True)
    extra = {k: torch.tensor(case["crd"][k]) for k in ("index", "contrastive_index")} if case["crd"] else {}
    _, losses = d(image=x, target=torch.tensor(case["target"]), epoch=case["epoch"], **extra)
    rel = max(abs(losses[n].item() - v) / max(abs(v), 1e-300) for n, v in case["losses"].items())
    total = sum(losses.values())
    trel = abs(total.item() - case["total"]) / abs(case["total"])
    total.backward()
    g = torch.tensor(case["grad_input"], dtype=torch.float64)
    grel = ((x.grad - g).abs().max() / g.abs().max()).item()
    layout = [[k, list(v.shape)] for k, v in d.state_dict().items() if not k.startswith(("student.", "teacher."))]
    same = "same" if layout == case["extra_state_dict"] else "DIFFERENT"
    print(f"| {method} | {', '.join(sorted(case['losses']))} | {rel:.1e} | {trel:.1e} | {grel:.1e} "
          f"| {same} ({len(layout)} tensors) |")
