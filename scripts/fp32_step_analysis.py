"""Where the SLD fp32 training step's time goes (issue #5's analysis), on this machine.

Prints (1) the convolution multiply-accumulates per image of the teacher and the student,
counted with forward hooks, and the step's convolution GFLOP; (2) the share of the
benchmark's real SLD fp32 step (resnet32x4 -> resnet8x4, batch 64, two views) spent in
oneDNN convolutions, from torch.profiler; (3) the teacher's forward over both views
(batch 128, BN folded, channels_last, as the trainer runs it) eager and with
torch.compile (inductor, freezing), through the distiller's own teacher path, as
SOLVER.COMPILE runs it, and the convolution ops the compiled one calls. Run from the repo
root, with nothing else running:

    python3 scripts/fp32_step_analysis.py
"""
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mdistiller.cli import benchmark as B  # noqa: E402
from mdistiller.dataset import get_dataset  # noqa: E402
from mdistiller.distillers.base import Distiller  # noqa: E402
from mdistiller.utils.runtime import retain_host_memory  # noqa: E402
from mdistiller.models import cifar_model_dict  # noqa: E402

torch.set_num_threads(2)
retain_host_memory()  # as the trainer and the benchmark on the CPU (SOLVER.RETAIN_HOST_MEMORY)


def conv_macs(name):
    model, macs = cifar_model_dict[name][0](num_classes=100).eval(), [0]

    def hook(mod, inp, out):
        macs[0] += out[0].numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    return macs[0]


t_macs, s_macs = conv_macs("resnet32x4"), conv_macs("resnet8x4")
t_gflop, s_gflop = 2 * t_macs * 128 / 1e9, 2 * s_macs * 128 * 3 / 1e9
print(f"conv GMAC/image: teacher resnet32x4 {t_macs / 1e9:.3f}, student resnet8x4 {s_macs / 1e9:.3f}")
print(f"conv GFLOP per step (batch 64, 2 views): teacher forward {t_gflop:.0f}, "
      f"student forward+backward {s_gflop:.0f}, total {t_gflop + s_gflop:.0f}")

args = B.resolve_setup(B.parse_args([]))
cfg = B.case_cfg(args, ("SLD", "fp32", False, False))
trainer, batch = B.build_case(cfg, get_dataset(cfg), torch.device("cpu"))
trainer.distiller.train()
for _ in range(3):
    trainer.train_step(batch, cfg.SOLVER.EPOCHS)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(2):
        trainer.train_step(batch, cfg.SOLVER.EPOCHS)
events = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
total = sum(events.values())
for key in ("aten::mkldnn_convolution", "aten::convolution_backward"):
    print(f"{key}: {100 * events.get(key, 0) / total:.0f}% of the SLD fp32 step's CPU time")
del trainer, batch

teacher = cifar_model_dict["resnet32x4"][0](num_classes=100).eval()
x = torch.randn(128, 3, 32, 32)
eager, compiled = Distiller(None, teacher), Distiller(None, teacher)
compiled.compile_teacher = True  # what SOLVER.COMPILE sets (mdistiller.engine.build.place_distiller)
cpu = torch.device("cpu")
eager_ms = 1e3 * B.time_calls(lambda: eager.teacher_forward(x), 6, 1, cpu)
print(f"teacher forward, batch 128, BN folded, channels_last, eager: {eager_ms:.0f} ms")
start = time.perf_counter()
compiled.teacher_forward(x)  # compiles
compile_s = time.perf_counter() - start
compiled_ms = 1e3 * B.time_calls(lambda: compiled.teacher_forward(x), 6, 1, cpu)
print(f"the same with SOLVER.COMPILE (torch.compile, inductor freezing): {compiled_ms:.0f} ms "
      f"(first call, compiling: {compile_s:.0f} s)")
with profile(activities=[ProfilerActivity.CPU]) as prof:
    compiled.teacher_forward(x)
print("its convolution ops:", ", ".join(sorted({e.key for e in prof.key_averages() if "convolution" in e.key})))
