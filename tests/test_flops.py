"""MFU's parts: FLOPs counted by FlopCounterMode against the analytic count, and the peak FLOP/s per device."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from src.utils.flops import cpu_peak, gpu_peak, peak_flops, step_flops

B, IN, OUT = 8, 16, 32  # batch, input and output features
C, K, H, W = 3, 3, 10, 10  # input channels, kernel size, image size (padding keeps H x W)


def forward_backward(layer: nn.Module, x: torch.Tensor) -> None:
    layer(x).sum().backward()


def test_linear_step_counts_forward_and_both_gradients() -> None:
    """A (B, IN) x (IN, OUT) matmul is 2*B*IN*OUT FLOPs forward, and as many again for each of the input's and the
    weight's gradients: a count of forward only, or of the bias, would fail here."""
    x = torch.randn(B, IN, requires_grad=True)
    assert step_flops(lambda: forward_backward(nn.Linear(IN, OUT), x)) == 3 * 2 * B * IN * OUT


def test_conv_step_counts_forward_and_both_gradients() -> None:
    """A convolution is 2 FLOPs per multiply-add, (C x K x K) of them per output value; the first layer (its input
    needs no gradient) computes the weight's gradient only."""
    forward = 2 * B * OUT * H * W * C * K * K
    x = torch.randn(B, C, H, W)
    assert step_flops(lambda: forward_backward(nn.Conv2d(C, OUT, K, padding=1), x.requires_grad_())) == 3 * forward
    assert step_flops(lambda: forward_backward(nn.Conv2d(C, OUT, K, padding=1), x.detach())) == 2 * forward


def test_cpu_peak_is_finite_here() -> None:
    """This machine's estimate: some cores, a clock and FLOPs per cycle read from /proc/cpuinfo."""
    flops, source = peak_flops(torch.device("cpu"), torch.float32)
    assert 0 < flops < math.inf, source
    assert source.startswith("CPU estimate")
    assert peak_flops(torch.device("cpu"), torch.bfloat16)[0] >= flops  # bf16 never below fp32


ZEN4 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\ncpu MHz\t\t: 2500.000\nflags\t\t: fma avx2 avx512f avx512_bf16\n"
INTEL = (
    "vendor_id\t: GenuineIntel\ncpu family\t: 6\nphysical id\t: 0\ncore id\t\t: {core}\ncpu MHz\t\t: 2000.000\n"
    "flags\t\t: fma avx2 avx512f\n"
)


def test_cpu_peak_from_cpuinfo() -> None:
    """cores x GHz x FLOPs/cycle: two Intel hyperthreads of one core count once, at 64 FLOPs/cycle (2 FMA x 16
    lanes x 2); Zen 4 runs AVX-512 at half that, and its avx512_bf16 doubles it."""
    two_threads_one_core = "\n\n".join(INTEL.format(core=0) for _ in range(2))
    assert cpu_peak(torch.float32, two_threads_one_core, threads=2)[0] == 1 * 2.0e9 * 64
    assert cpu_peak(torch.float32, INTEL.format(core=0) + "\n" + INTEL.format(core=1), threads=1)[0] == 1 * 2.0e9 * 64
    assert cpu_peak(torch.float32, ZEN4, threads=4)[0] == 1 * 2.5e9 * 32
    assert cpu_peak(torch.bfloat16, ZEN4, threads=4)[0] == 1 * 2.5e9 * 64


@pytest.mark.parametrize(
    "name, dtype, tflops",
    [
        ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.4),  # H100 SXM: 1,979 with sparsity, halved
        ("NVIDIA H100 80GB HBM3", torch.float32, 494.7),  # an fp32 step runs on TF32 tensor cores
        ("NVIDIA H100 PCIe", torch.bfloat16, 756.5),
        ("NVIDIA H200", torch.bfloat16, 989.4),
        ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312.0),
        ("NVIDIA A10", torch.bfloat16, 125.0),
        ("NVIDIA L4", torch.bfloat16, 121.0),  # not L40S's figure
    ],
)
def test_gpu_name_maps_to_its_datasheet_entry(name: str, dtype: torch.dtype, tflops: float) -> None:
    assert gpu_peak(name, dtype)[0] == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name", ["Tesla V100-SXM2-16GB", "NVIDIA A10G", "Some Future GPU"])
def test_unknown_gpu_gives_nan(name: str) -> None:
    """No guess for a GPU not in the table (the A10G is not the A10): nan, and a source that says what to do."""
    flops, source = gpu_peak(name, torch.bfloat16)
    assert math.isnan(flops) and "--peak_tflops" in source
