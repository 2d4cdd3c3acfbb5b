"""Model FLOPs utilisation (MFU): the FLOPs of a training step as PyTorch counts them, and the device's peak FLOP/s.

MFU = FLOPs per step x steps/s / peak FLOP/s, as PaLM (Chowdhery et al. 2022, appendix B) defines it: the counted
FLOPs are the model's matrix multiplications and convolutions alone, so MFU says how much of the device's matmul
peak the model's own arithmetic uses; element-wise work, norms and the optimizer count as overhead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def step_flops(fn: Callable[[], object]) -> int:
    """The FLOPs of one call of fn() (a training step: forward and backward), counted by PyTorch's own
    torch.utils.flop_counter.FlopCounterMode. It counts matrix multiplications, convolutions and attention only,
    2 FLOPs per multiply-add (a (M, K) x (K, N) matmul is 2*M*N*K); their backward computes a gradient for the
    input and one for the weight, each as many FLOPs as the forward (none for an input without a gradient, such as
    the first layer's). Element-wise ops, norms, losses and the optimizer are left out, as is usual for MFU."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# Dense (no sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets, whose tables give the with-sparsity
# figures (marked *), halved here: (pattern on torch.cuda.get_device_name(), name, bf16, tf32). tf32 is what an fp32
# step runs at: cuDNN convolutions use TF32 by default (torch.backends.cudnn.allow_tf32), and matmuls too under
# torch.set_float32_matmul_precision("high"). First match wins, so the more specific names come first.
GPU_PEAK_TFLOPS: list[tuple[str, str, float, float]] = [
    (r"H100.*PCIe", "H100 PCIe", 756.5, 378.0),  # H100 datasheet: BF16 1,513*, TF32 756*
    (r"H[12]00.*NVL", "H100/H200 NVL", 835.5, 417.5),  # H100 and H200 datasheets, NVL: BF16 1,671*, TF32 835*
    (r"H[12]00", "H100/H200 SXM", 989.4, 494.7),  # SXM: BF16 1,979*, TF32 989*; "NVIDIA H100 80GB HBM3", GH200 alike
    (r"A100", "A100", 312.0, 156.0),  # A100 datasheet (SXM and PCIe): BF16 312 (624*), TF32 156 (312*)
    (r"L40S", "L40S", 362.05, 183.0),  # L40S datasheet: BF16 362.05 (733*), TF32 183 (366*)
    (r"\bL4\b", "L4", 121.0, 60.0),  # L4 datasheet: BF16 242*, TF32 120*
    (r"\bA10\b", "A10", 125.0, 62.5),  # A10 datasheet: BF16 125 (250*), TF32 62.5 (125*); not the A10G
    (r"RTX 4090", "RTX 4090", 165.2, 82.6),  # Ada whitepaper: BF16 with FP32 accumulate 165.2 (330.4*), TF32 82.6
]
UNKNOWN = (math.nan, "unknown: pass --peak_tflops")


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """The peak dense FLOP/s of `device` computing in `dtype` (torch.bfloat16 under autocast, else torch.float32),
    and where that number comes from; (nan, why) for a device not known here."""
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), dtype)
    if device.type == "cpu":
        return cpu_peak(dtype)
    return UNKNOWN


def gpu_peak(name: str, dtype: torch.dtype) -> tuple[float, str]:
    """The datasheet peak of the GPU called `name` (GPU_PEAK_TFLOPS): bf16, or TF32 for an fp32 step."""
    for pattern, model, bf16, tf32 in GPU_PEAK_TFLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            bf = dtype == torch.bfloat16
            return (bf16 if bf else tf32) * 1e12, f"{name}: NVIDIA's {model} figure, {'bf16' if bf else 'tf32'} dense"
    return UNKNOWN


def cpu_peak(dtype: torch.dtype, cpuinfo: str | None = None, threads: int | None = None) -> tuple[float, str]:
    """An estimate of the CPU's peak: cores x clock x FLOPs per cycle per core, from /proc/cpuinfo (or `cpuinfo`).

    Cores: the physical cores, or the torch threads the step runs on (`threads`, default torch.get_num_threads())
    when fewer; hyperthreads share a core's FMA units. Clock: cpufreq's maximum where the kernel exposes it, else
    /proc/cpuinfo's "cpu MHz" (a VM's nominal clock; turbo and AVX-512 down-clocking are ignored). FLOPs per cycle,
    fp32, from the vector flags: avx512f 64 (two 512-bit FMA units x 16 lanes x 2), but 32 on AMD Zen 4 (family 25),
    which runs AVX-512 on 256-bit units, and on Intel parts with one 512-bit FMA unit (not told apart here: an upper
    bound); avx2 with fma 32; else 8. bf16: amx_bf16 1024 (Intel's AMX figure per core), avx512_bf16 twice fp32
    (VDPBF16PS does two products per fp32 lane), else the fp32 figure (bf16 is computed in fp32)."""
    this_machine = cpuinfo is None
    if this_machine:
        path = Path("/proc/cpuinfo")
        if not path.is_file():
            return UNKNOWN
        cpuinfo = path.read_text()
    blocks = [
        dict(re.findall(r"^([^:\n]+?)\s*:\s*(.*)$", block, flags=re.M)) for block in cpuinfo.strip().split("\n\n")
    ]
    first = blocks[0]
    flags = set(first.get("flags", "").split())
    cores = len({(b.get("physical id"), b.get("core id")) for b in blocks}) if "core id" in first else len(blocks)
    cores = min(cores, threads or torch.get_num_threads())
    freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if this_machine and freq.is_file():
        ghz, clock = int(freq.read_text()) / 1e6, "cpufreq max"  # the file is in kHz
    elif mhz := [float(b["cpu MHz"]) for b in blocks if "cpu MHz" in b]:
        ghz, clock = max(mhz) / 1e3, "cpu MHz"
    else:
        return UNKNOWN
    zen4 = first.get("vendor_id") == "AuthenticAMD" and first.get("cpu family") == "25"
    if "avx512f" in flags:
        per_cycle, why = (32, "avx512f on Zen 4's 256-bit units") if zen4 else (64, "avx512f")
    elif {"avx2", "fma"} <= flags:
        per_cycle, why = 32, "avx2+fma"
    else:
        per_cycle, why = 8, "no avx2/avx512f"
    if dtype == torch.bfloat16 and "amx_bf16" in flags:
        per_cycle, why = 1024, "amx_bf16"
    elif dtype == torch.bfloat16 and "avx512_bf16" in flags:
        per_cycle, why = 2 * per_cycle, f"avx512_bf16, twice {why}"
    elif dtype == torch.bfloat16:
        why += ", bf16 as fp32"
    return (
        cores * ghz * 1e9 * per_cycle,
        f"CPU estimate: {cores} cores x {ghz:.2f} GHz ({clock}) x {per_cycle} FLOP/cycle ({why})",
    )
