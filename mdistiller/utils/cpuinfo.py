"""Which CPU a figure came from: vendor, model and the vector ISA torch can use."""

import os
import platform

#: the highest ISA with its /proc/cpuinfo flag, best first
ISA_FLAGS = (("AMX", "amx_tile"), ("AVX-512", "avx512f"), ("AVX2", "avx2"))


def read_cpuinfo(path="/proc/cpuinfo"):
    """The first processor's ``key: value`` fields of ``/proc/cpuinfo`` ({} elsewhere)."""
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_info(path="/proc/cpuinfo"):
    """``{"vendor", "model", "isa", "bf16", "flags_isa", "torch_capability", "cpus"}``:
    ``isa`` is the best of AMX / AVX-512 / AVX2 in the CPU's flags, ``bf16`` whether it
    has bf16 instructions (AMX-BF16 or AVX512-BF16), ``torch_capability`` the kernels
    torch picked (``torch.backends.cpu.get_cpu_capability()``)."""
    import torch  # deferred: torch loads OpenMP, which must start after set_openmp_wait_policy

    fields = read_cpuinfo(path)
    flags = set(fields.get("flags", "").split())
    isa = next((name for name, flag in ISA_FLAGS if flag in flags), "other" if flags else "unknown")
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        capability = "unknown"
    return {"vendor": fields.get("vendor_id", platform.machine()),
            "model": fields.get("model name", platform.processor()),
            "isa": isa, "bf16": bool(flags & {"amx_bf16", "avx512_bf16"}), "torch_capability": capability,
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}


def describe_cpu(info):
    """One line: ``AMD EPYC (AuthenticAMD), AVX2, no bf16 instructions, torch kernels AVX2, 2 CPUs``."""
    bf16 = "bf16 instructions" if info["bf16"] else "no bf16 instructions"
    return (f"{info['model']} ({info['vendor']}), {info['isa']}, {bf16}, "
            f"torch kernels {info['torch_capability']}, {info['cpus']} CPUs")
