import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "requirements.txt")) as f:
    requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]

setup(
    name="mdistiller",
    version="0.2.0",
    description="Knowledge distillation of image classifiers with Swapped Logit Distillation (SLD), "
    "MLKD, DKD, KD and feature-based baselines; mdistiller-compatible.",
    packages=find_packages(include=["mdistiller", "mdistiller.*"]),
    python_requires=">=3.9",
    install_requires=requirements,
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
)
