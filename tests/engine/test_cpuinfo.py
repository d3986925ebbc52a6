"""Which CPU a benchmark ran on, from /proc/cpuinfo and torch."""

import pytest
import torch

from mdistiller.utils.cpuinfo import cpu_info, describe_cpu

BASE = "processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: {model}\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize("vendor,model,flags,isa,bf16", [
    ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8480+", "avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "AMX", True),
    ("GenuineIntel", "Intel(R) Xeon(R) Gold 6148", "avx2 avx512f", "AVX-512", False),
    ("AuthenticAMD", "AMD EPYC 9654", "avx2 avx512f avx512_bf16", "AVX-512", True),
    ("AuthenticAMD", "AMD EPYC", "avx avx2 fma", "AVX2", False),
    ("GenuineIntel", "old", "sse4_2", "other", False),
])
def test_isa_from_flags(tmp_path, vendor, model, flags, isa, bf16):
    path = tmp_path / "cpuinfo"
    path.write_text(BASE.format(vendor=vendor, model=model, flags=flags))
    info = cpu_info(str(path))
    assert (info["vendor"], info["model"], info["isa"], info["bf16"]) == (vendor, model, isa, bf16)
    assert info["torch_capability"] == torch.backends.cpu.get_cpu_capability() and info["cpus"] >= 1
    line = describe_cpu(info)
    assert model in line and isa in line and ("no bf16" in line) != bf16


def test_without_proc_cpuinfo(tmp_path):
    assert cpu_info(str(tmp_path / "missing"))["isa"] == "unknown"
