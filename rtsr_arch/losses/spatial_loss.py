"""Spatial-domain auxiliary losses: RT4KSR's HF loss, SPSR's gradient-map loss and NAFNet's PSNR loss.

All follow BasicSR's loss conventions: constructor ``(loss_weight=1.0, reduction='mean', ...)``,
``forward(pred, target, weight=None, **kwargs)`` returning ``loss_weight * loss``.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from basicsr.losses.basic_loss import _reduction_modes, l1_loss
from basicsr.losses.loss_util import reduce_loss
from basicsr.utils.registry import LOSS_REGISTRY

from rtsr_arch.archs.layers import GaussianBlur

__all__ = ['HFLoss', 'GradientMapLoss', 'PSNRLoss', 'check_reduction', 'reject_weight']

def check_reduction(reduction):
    """BasicSR's check of ``reduction`` ('none', 'mean' or 'sum'), shared by every loss here."""
    if reduction not in _reduction_modes:
        raise ValueError(f'Unsupported reduction mode: {reduction}. Supported ones are: {_reduction_modes}')
    return reduction


def reject_weight(name, weight):
    """Losses outside the pixel domain (spectra, sub-bands, per-image PSNR) take no pixel weight."""
    if weight is not None:
        raise ValueError(f'{name} does not support a spatial element-wise weight')


@LOSS_REGISTRY.register()
class HFLoss(nn.Module):
    """High-frequency loss of RT4KSR (Zamfir et al., CVPRW 2023, §3.2, Eq. 1).

    ``L_HF = || (y - y * b) - (ŷ - ŷ * b) ||_1`` where ``b`` is the same Gaussian blur (kernel 5,
    sigma 1, reflect padding) the model uses to extract high frequencies: this loss uses
    :class:`rtsr_arch.archs.layers.GaussianBlur` itself. ``weight`` (N, 1|C, H, W) is an optional
    element-wise weight, as in BasicSR's ``L1Loss``.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', kernel_size=5, sigma=1.0):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.blur = GaussianBlur(kernel_size=kernel_size, sigma=sigma)

    def forward(self, pred, target, weight=None, **kwargs):
        hf_pred = self.blur.high_frequencies(pred)
        hf_target = self.blur.high_frequencies(target)
        return self.loss_weight * l1_loss(hf_pred, hf_target, weight, reduction=self.reduction)


@LOSS_REGISTRY.register()
class GradientMapLoss(nn.Module):
    """Gradient-map loss of SPSR (Ma et al., "Structure-Preserving Super Resolution with Gradient
    Guidance", CVPR 2020), used by AIS 2024 RTSR teams (``L_GM = ||GM(SR) - GM(HR)||_1``).

    Per channel, central differences with zero padding 1 (cross-correlation kernels
    ``[[0,0,0],[-1,0,1],[0,0,0]]`` for x and its transpose for y), so
    ``gx[i, j] = x[i, j+1] - x[i, j-1]``, ``gy[i, j] = x[i+1, j] - x[i-1, j]``;
    ``GM = sqrt(gx^2 + gy^2 + eps)`` with ``eps = 1e-6``; L1 between the maps of pred and target.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', eps=1e-6):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.eps = eps
        kx = torch.tensor([[0., 0., 0.], [-1., 0., 1.], [0., 0., 0.]])
        self.register_buffer('kernel', torch.stack([kx, kx.t()])[:, None], persistent=False)  # (2, 1, 3, 3)

    def gradient_map(self, x):
        n, c, h, w = x.shape
        g = F.conv2d(x.reshape(n * c, 1, h, w), self.kernel.to(x.dtype), padding=1)  # (N*C, 2, H, W)
        return torch.sqrt(g.pow(2).sum(1) + self.eps).reshape(n, c, h, w)

    def forward(self, pred, target, weight=None, **kwargs):
        return self.loss_weight * l1_loss(
            self.gradient_map(pred), self.gradient_map(target), weight, reduction=self.reduction)


@LOSS_REGISTRY.register()
class PSNRLoss(nn.Module):
    """Negative PSNR in dB (NAFNet / BasicSR-examples ``PSNRLoss``), for images in [0, 1].

    Per image ``10 * log10(mean((pred - target)^2) + eps)`` (computed as ``10/ln(10) * ln(.)``),
    i.e. ``-PSNR``; reduced over the batch (``'none'`` gives one value per image). Its minimum,
    at ``pred == target``, is ``10 * log10(eps)`` (-80 dB for ``eps=1e-8``), not 0. With ``toY``,
    both images are first converted to the BT.601 luma Y channel (as NAFNet: RGB in [0, 1] ->
    Y in [16, 235] / 255).
    """

    def __init__(self, loss_weight=1.0, reduction='mean', toY=False, eps=1e-8):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.toY = toY
        self.eps = eps
        self.scale = 10 / math.log(10)
        coef = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64).view(1, 3, 1, 1)
        self.register_buffer('coef', coef, persistent=False)

    def forward(self, pred, target, weight=None, **kwargs):
        reject_weight('PSNRLoss', weight)
        if self.toY:
            coef = self.coef.to(pred.dtype)
            pred = ((pred * coef).sum(1, keepdim=True) + 16.) / 255.
            target = ((target * coef).sum(1, keepdim=True) + 16.) / 255.
        loss = self.scale * torch.log((pred - target).pow(2).mean(dim=(1, 2, 3)) + self.eps)
        return self.loss_weight * reduce_loss(loss, self.reduction)
