"""What the benchmarks run on, and which reduced precisions the device computes natively: on a
CPU, bf16 needs avx512_bf16 or amx_bf16 and fp16 avx512_fp16 or amx_fp16, else PyTorch emulates
them (`bench_inference.py --quick` in bf16 ran past 15 minutes on such a CPU), so those cases
are skipped there, saying so."""
from __future__ import annotations

import platform
from pathlib import Path

NATIVE_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_name() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine())


def describe(device: str) -> str:
    """One line: the GPU's name, or the CPU's with its cores and threads."""
    import os

    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def emulated(precision: str, device: str) -> str | None:
    """Why `precision` (off, bf16, fp16) is not native here, or None when it is."""
    if precision == "off" or device.startswith("cuda"):
        return None
    if not set(NATIVE_FLAGS[precision]) & cpu_flags():
        return f"{precision} is emulated on this CPU (none of {', '.join(NATIVE_FLAGS[precision])})"
    return None
