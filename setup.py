import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "requirements.txt")) as f:
    requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]

# command -> function (each takes argv, returns the exit code); tools/*.py keep working
CONSOLE_SCRIPTS = [
    "mdistiller-train = mdistiller.cli.train:main",
    "mdistiller-eval = mdistiller.cli.eval:main",
    "mdistiller-sweep = mdistiller.cli.sweep:main",
    "mdistiller-summarize = mdistiller.cli.summarize:main",
    "mdistiller-download = mdistiller.cli.download:main",
    "mdistiller-demo = mdistiller.cli.demo:main",
    "mdistiller-benchmark = mdistiller.cli.benchmark:main",
    "mdistiller-tune = mdistiller.cli.tune:main",
    "mdistiller-export = mdistiller.cli.export:main",
]

setup(
    name="mdistiller",
    version="0.2.0",
    description="Knowledge distillation of image classifiers with Swapped Logit Distillation (SLD), "
    "MLKD, DKD, KD and feature-based baselines; mdistiller-compatible.",
    packages=find_packages(include=["mdistiller", "mdistiller.*"]),
    python_requires=">=3.9",
    install_requires=requirements,
    # timm: optional (timm:<name> models); it pulls in huggingface_hub, which the zoo never needs
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "timm>=1.0", "scipy>=1.11", "onnx>=1.16",
                             "onnxscript>=0.2", "onnxruntime>=1.18", "optuna>=3.6", "submitit>=1.5"],
                    "timm": ["timm>=1.0"], "stats": ["scipy>=1.11"],
                    # tools/export.py --format onnx: torch's ONNX exporter needs onnxscript; parity runs onnxruntime
                    "export": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
                    # tools/tune.py (Optuna); --launcher submitit-local/slurm in tune.py and sweep.py (submitit)
                    "tune": ["optuna>=3.6"], "slurm": ["submitit>=1.5"]},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
