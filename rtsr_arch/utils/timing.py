"""Latency measurement: the NTIRE 2023 RTSR runtime protocol on CUDA, wall-clock on CPU.

The official protocol (``eduardzamfir/NTIRE23-RTSR:demo/runtime_demo.py``): cudnn.benchmark on, the network in eval mode under no_grad, ``model.half()`` and
``input.half()``, 50 warm-up forwards, then 244 timed forwards, each between two CUDA events
followed by a synchronize; the official figure is the mean in milliseconds.
"""
import statistics
import time
from dataclasses import dataclass

import torch

__all__ = ['LatencyStats', 'time_cuda', 'time_cpu', 'check_same_output', 'cuda_copy_bandwidth_gbs',
           'cuda_matmul_tflops', 'require_cuda']


@dataclass
class LatencyStats:
    mean_ms: float
    median_ms: float
    p90_ms: float
    std_ms: float
    repeat: int
    batch: int = 1

    @classmethod
    def from_samples(cls, samples, batch=1):
        ordered = sorted(samples)
        p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
        std = statistics.pstdev(samples) if len(samples) > 1 else 0.0
        return cls(statistics.fmean(samples), statistics.median(samples), p90, std, len(samples), batch)

    @property
    def fps(self):
        """Frames per second (``batch`` frames per forward)."""
        return 1000.0 * self.batch / self.mean_ms


def require_cuda(what='--device cuda'):
    if not torch.cuda.is_available():
        raise RuntimeError(f'{what} needs a CUDA GPU, and torch.cuda.is_available() is False on this machine')


@torch.no_grad()
def time_cuda(fn, x, warmup=50, repeat=244):
    """The official protocol around ``fn(x)``: warm-up, then CUDA events + synchronize per pass."""
    require_cuda()
    torch.backends.cudnn.benchmark = True
    for _ in range(warmup):
        fn(x)
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    return LatencyStats.from_samples(samples, batch=x.shape[0])


@torch.no_grad()
def time_cpu(fn, x, warmup=2, repeat=10):
    """Wall-clock timing on CPU (not the official protocol): ``perf_counter`` around each pass."""
    for _ in range(warmup):
        fn(x)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(x)
        samples.append(1000.0 * (time.perf_counter() - start))
    return LatencyStats.from_samples(samples, batch=x.shape[0])


@torch.no_grad()
def check_same_output(reference, candidate, what, rtol):
    """Raise when an optimized path's output differs from the eager one by more than ``rtol`` of
    the output scale; returns the relative max difference."""
    diff = float((reference.float() - candidate.float()).abs().max()) / max(float(reference.float().abs().max()), 1e-12)
    if not diff <= rtol:
        raise RuntimeError(f'{what}: output differs from the eager path by {diff:.3e} (relative), more than {rtol:g}')
    return diff


@torch.no_grad()
def cuda_copy_bandwidth_gbs(nbytes=1 << 30, repeat=20):
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second)."""
    require_cuda()
    src = torch.empty(nbytes, dtype=torch.uint8, device='cuda')
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000.0 / repeat
    return 2 * nbytes / seconds / 1e9


@torch.no_grad()
def cuda_matmul_tflops(n=8192, dtype=torch.float16, repeat=20):
    """Measured dense matmul throughput in TFLOP/s (the attainable tensor-core peak)."""
    require_cuda()
    a = torch.randn(n, n, device='cuda', dtype=dtype)
    b = torch.randn(n, n, device='cuda', dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000.0 / repeat
    return 2 * n ** 3 / seconds / 1e12
