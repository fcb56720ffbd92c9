"""What this machine is and what it does well: the precision to train in, and a description for reports.

Machines differ by orders of magnitude: a CPU with AMX or AVX512-BF16 runs bf16 matrix products several
times faster than fp32, while one with only AVX2 emulates bf16 about 100x slower than fp32. So the precision
is decided from the hardware, once, before ``TrainingArguments`` is built (its ``__post_init__`` hands the
choice to Accelerate; changing ``args.bf16`` later does nothing):

* ``auto`` (the default everywhere): bf16 where the hardware has it natively (a bf16 GPU; a CPU with AMX or
  AVX512-BF16), fp16 with loss scaling on a GPU without bf16 (T4, V100), fp32 otherwise;
* ``bf16`` / ``fp16`` / ``fp32``: exactly that, or a `PrecisionError` saying why this machine cannot.

`can_compile` says whether ``torch.compile`` can build its kernels here at all.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# CPU flags (as /proc/cpuinfo spells them) that make bf16 matrix products native rather than emulated.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# Flags worth naming in a report: they decide how fast a CPU trains.
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


class PrecisionError(ValueError):
    """The requested precision cannot run (well) on this machine; the message says what to use instead."""


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@cache
def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def uses_gpu(use_cpu: bool = False) -> bool:
    return torch.cuda.is_available() and not use_cpu


def native_bf16(use_cpu: bool = False) -> bool:
    """True on a GPU with bf16 tensor cores, or a CPU with AMX / AVX512-BF16 instructions."""
    if uses_gpu(use_cpu):
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def can_compile(use_cpu: bool = False) -> bool:
    """Whether ``torch.compile``'s inductor can build kernels here: on a GPU with Triton (CUDA builds of torch ship
    it), on a CPU with the C++ compiler inductor calls (``$CXX``, else ``g++``). ``TORCHDYNAMO_DISABLE=1``, torch's
    own switch, says no."""
    if os.environ.get("TORCHDYNAMO_DISABLE") == "1":
        return False
    if uses_gpu(use_cpu):
        return importlib.util.find_spec("triton") is not None
    return shutil.which(os.environ.get("CXX", "g++")) is not None


def resolve_precision(requested: str = "auto", use_cpu: bool = False) -> str:
    """``auto`` -> the best precision this machine runs natively; an explicit choice is checked and kept.

    Returns one of ``bf16``, ``fp16``, ``fp32``.
    """
    if requested not in PRECISIONS:
        raise PrecisionError(f"--precision {requested!r} is not one of {PRECISIONS}.")
    gpu = uses_gpu(use_cpu)
    if requested == "auto":
        if native_bf16(use_cpu):
            return "bf16"
        return "fp16" if gpu else "fp32"
    if requested == "bf16" and not native_bf16(use_cpu):
        where = (
            f"the GPU {torch.cuda.get_device_name()} has no bf16 support"
            if gpu
            else f"the CPU ({cpu_model_name()}) has neither {' nor '.join(BF16_CPU_FLAGS)}, so bf16 is "
            "emulated (about 100x slower than fp32)"
        )
        raise PrecisionError(
            f"--precision bf16 was requested, but {where}. Use --precision auto (picks "
            f"{resolve_precision('auto', use_cpu)} here) or --precision fp32."
        )
    if requested == "fp16" and not gpu:
        raise PrecisionError(
            "--precision fp16 needs a GPU (fp16 mixed precision with loss scaling is a GPU feature). "
            f"Use --precision auto (picks {resolve_precision('auto', use_cpu)} here) or --precision fp32."
        )
    return requested


def describe_machine(use_cpu: bool = False) -> dict[str, Any]:
    """The facts a report needs to make its timings meaningful: processor or GPU, threads, torch."""
    info: dict[str, Any] = {
        "cpu": cpu_model_name(),
        "cpu_flags": [flag for flag in REPORTED_CPU_FLAGS if flag in cpu_flags()],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cpu",
    }
    if uses_gpu(use_cpu):
        info.update(device="cuda", gpu=torch.cuda.get_device_name(), gpu_count=torch.cuda.device_count())
    return info


def machine_summary(info: dict[str, Any]) -> str:
    """One line for logs and reports, e.g. 'AMD EPYC (avx2, avx512f), 2 threads'."""
    if info.get("device") == "cuda":
        return f"{info['gpu_count']} x {info['gpu']} (host CPU {info['cpu']})"
    flags = ", ".join(info.get("cpu_flags") or []) or "no vector flags found"
    return f"{info['cpu']} ({flags}), {info['torch_threads']} threads"


__all__ = [
    "PRECISIONS",
    "PrecisionError",
    "can_compile",
    "cpu_flags",
    "cpu_model_name",
    "describe_machine",
    "machine_summary",
    "native_bf16",
    "resolve_precision",
    "uses_gpu",
]
