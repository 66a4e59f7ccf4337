"""Low-resolution consistency ("auxiliary") loss: compare prediction and target after the same
antialiased downscale.

Swin2SR (Conde et al., ECCVW 2022) adds an auxiliary loss on downscaled images for compressed-input
SR; ANUNet (team LeRTSR, AIS 2024 Real-Time 4K SR report §3.6, training stage 2) uses it with
Lanczos instead of bicubic, "to maintain consistency with the downsampling method in AVIF" (the
challenge's LR is FFmpeg's Lanczos-5 x4 downscale of the HR, then AVIF). Here
``L = || D(pred) - D(target) ||`` with D an antialiased separable resampler (Lanczos-a stretched by
the scale factor, as FFmpeg's swscale ``lanczos`` with ``param0=a``, or Pillow's bicubic), applied
as two dense resampling matrices, so it is exact, differentiable and independent of the image size.
"""
import math

import torch
from torch import nn

from basicsr.losses.basic_loss import l1_loss, mse_loss
from basicsr.utils.registry import LOSS_REGISTRY

from .spatial_loss import check_reduction, reject_weight

__all__ = ['DownsampleLoss', 'resample_matrix', 'downsample', 'RESAMPLE_KERNELS']


def _sinc(x):
    return torch.where(x == 0, torch.ones_like(x), torch.sin(math.pi * x) / (math.pi * x))


def _lanczos(a):
    def kernel(x):
        return torch.where(x.abs() < a, _sinc(x) * _sinc(x / a), torch.zeros_like(x))
    return kernel, float(a)


def _bicubic(x, a=-0.5):  # Keys' cubic convolution with Pillow's a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


RESAMPLE_KERNELS = ('lanczos', 'bicubic')


def resample_matrix(in_size, out_size, kernel='lanczos', lanczos_a=5, dtype=torch.float64, device=None):
    """The (out_size, in_size) matrix of an antialiased 1-D resampling (Pillow's convention).

    Output pixel ``i`` is centred on input coordinate ``c = (i + 0.5) * in_size / out_size``
    (pixel centres at ``x + 0.5``); for a downscale the kernel is stretched by the factor
    ``f = in_size / out_size`` (antialiasing: Lanczos-a then spans ``a * f`` input pixels on each
    side). Taps are the input pixels within the support; each row is normalized to sum 1, so at
    the image border the taps that fall outside are dropped and the others renormalized.
    """
    if kernel == 'lanczos':
        fn, support = _lanczos(lanczos_a)
    elif kernel == 'bicubic':
        fn, support = _bicubic, 2.0
    else:
        raise ValueError(f"kernel: expected one of {', '.join(RESAMPLE_KERNELS)}; got {kernel!r}")
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    centres = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    pos = torch.arange(in_size, dtype=torch.float64) + 0.5
    dist = (pos[None, :] - centres[:, None]) / stretch
    weights = torch.where(dist.abs() < support, fn(dist), torch.zeros_like(dist))
    weights = weights / weights.sum(1, keepdim=True)
    return weights.to(dtype=dtype, device=device)


def downsample(x, scale, kernel='lanczos', lanczos_a=5):
    """``x`` (..., H, W) downscaled to (ceil(H / scale), ceil(W / scale)) (the challenge's
    ``ceil(iw/4):ceil(ih/4)``); float32 at least (half inputs are computed in float32)."""
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    h, w = x.shape[-2:]
    mh = resample_matrix(h, math.ceil(h / scale), kernel, lanczos_a, dtype, x.device)
    mw = resample_matrix(w, math.ceil(w / scale), kernel, lanczos_a, dtype, x.device)
    return mh @ x.to(dtype) @ mw.t()


@LOSS_REGISTRY.register()
class DownsampleLoss(nn.Module):
    """L1 (or L2) between ``pred`` and ``target`` after the same antialiased downscale by ``scale``
    (Swin2SR's auxiliary loss; with ``kernel='lanczos', lanczos_a=5`` the AIS 2024 downscale, as
    ANUNet's stage 2). The downscaled target is the clean LR the challenge encoded with AVIF, so
    the loss asks the network to be consistent with its own (uncompressed) input.

    Args:
        loss_weight, reduction: BasicSR's conventions ('mean', 'sum' or 'none').
        scale: downscale factor (the SR scale: 4 for AIS 2024).
        kernel: 'lanczos' (stretched Lanczos-``lanczos_a``) or 'bicubic' (Pillow's, Swin2SR's).
        lanczos_a: Lanczos window (5: the challenge's swscale ``param0=5``).
        criterion: 'l1' (default) or 'l2'.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', scale=4, kernel='lanczos', lanczos_a=5, criterion='l1'):
        super().__init__()
        if kernel not in RESAMPLE_KERNELS:
            raise ValueError(f"DownsampleLoss: kernel={kernel!r}: expected one of {', '.join(RESAMPLE_KERNELS)}")
        if criterion not in ('l1', 'l2'):
            raise ValueError(f"DownsampleLoss: criterion={criterion!r}: expected 'l1' or 'l2'")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 1:
            raise ValueError(f'DownsampleLoss: scale={scale!r}: expected a number >= 1')
        if isinstance(lanczos_a, bool) or not isinstance(lanczos_a, int) or lanczos_a < 1:
            raise ValueError(f'DownsampleLoss: lanczos_a={lanczos_a!r}: expected an int >= 1')
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.scale = scale
        self.kernel = kernel
        self.lanczos_a = lanczos_a
        self.criterion = l1_loss if criterion == 'l1' else mse_loss

    def forward(self, pred, target, weight=None, **kwargs):
        reject_weight('DownsampleLoss', weight)
        down_pred = downsample(pred, self.scale, self.kernel, self.lanczos_a)
        down_target = downsample(target, self.scale, self.kernel, self.lanczos_a)
        return self.loss_weight * self.criterion(down_pred, down_target, reduction=self.reduction)
