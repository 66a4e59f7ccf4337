"""Frequency-domain auxiliary losses: FFT L1 loss, Focal Frequency Loss and a Haar-wavelet HF loss.

All follow BasicSR's loss conventions: constructor ``(loss_weight=1.0, reduction='mean', ...)``,
``forward(pred, target, weight=None, **kwargs)`` returning ``loss_weight * loss``. The spectra are
computed in float32 (at least) so half-precision training works with any image size.
"""
import torch
from torch import nn
from torch.nn import functional as F

from basicsr.losses.basic_loss import l1_loss
from basicsr.losses.loss_util import reduce_loss
from basicsr.utils.registry import LOSS_REGISTRY

from .spatial_loss import check_reduction, reject_weight

__all__ = ['FFTLoss', 'FocalFrequencyLoss', 'WaveletHFLoss', 'haar_dwt']


def _fft_dtype(x):
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@LOSS_REGISTRY.register()
class FFTLoss(nn.Module):
    """L1 loss between Fourier spectra (the "FFT loss" / "frequency loss" of AIS 2024 RTSR teams,
    after Cho et al., "Rethinking Coarse-to-Fine Approach in Single Image Deblurring", ICCV 2021).

    ``L = || [Re F(pred), Im F(pred)] - [Re F(target), Im F(target)] ||_1``: the real and
    imaginary parts are stacked on a last axis of size 2 and compared with L1. ``onesided=False`` (default)
    uses the full ``torch.fft.fft2`` over (H, W); ``onesided=True`` uses ``torch.fft.rfft2`` (half
    spectrum, as the MIMO-UNet original and SAFMN++'s ``FFTLoss`` in sunny2109/SAFMN; 'mean' then
    averages over ``W // 2 + 1`` columns). ``norm``: 'backward' (unnormalized, default) or
    'ortho' (divided by ``sqrt(H * W)``).
    """

    def __init__(self, loss_weight=1.0, reduction='mean', norm='backward', onesided=False):
        super().__init__()
        if norm not in ('backward', 'ortho'):
            raise ValueError(f"norm must be 'backward' or 'ortho'; got {norm!r}")
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.norm = norm
        self.onesided = onesided

    def spectrum(self, x):
        fft = torch.fft.rfft2 if self.onesided else torch.fft.fft2
        f = fft(_fft_dtype(x), dim=(-2, -1), norm=self.norm)
        return torch.stack([f.real, f.imag], dim=-1)

    def forward(self, pred, target, weight=None, **kwargs):
        reject_weight('FFTLoss', weight)
        return self.loss_weight * l1_loss(self.spectrum(pred), self.spectrum(target), reduction=self.reduction)


@LOSS_REGISTRY.register()
class FocalFrequencyLoss(nn.Module):
    """Focal Frequency Loss (Jiang et al., ICCV 2021, Eq. 2-3), used by AIS 2024 RTSR teams.

    Images are split into ``patch_factor`` x ``patch_factor`` patches and transformed with an
    orthonormal 2D DFT; ``d = F(pred) - F(target)``. The spectrum weight matrix is
    ``w = |d|^alpha`` (``log(w + 1)`` if ``log_matrix``), normalized by its maximum over each
    spectrum, i.e. per image, patch and channel (over the whole batch if ``batch_matrix``), NaNs
    set to 0, clamped to [0, 1] and detached. Loss ``= mean(w * |d|^2)``. With ``ave_spectrum``
    the spectra are first averaged over the batch. ``matrix`` (forward kwarg) may give a
    predefined weight matrix. Sizes not divisible by ``patch_factor`` are cropped, as in the
    reference.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', alpha=1.0, patch_factor=1, ave_spectrum=False,
                 log_matrix=False, batch_matrix=False):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.alpha = alpha
        self.patch_factor = int(patch_factor)
        self.ave_spectrum = ave_spectrum
        self.log_matrix = log_matrix
        self.batch_matrix = batch_matrix

    def spectrum(self, x):
        """(N, C, H, W) -> complex (N, P, C, H // p, W // p): orthonormal fft2 of each patch."""
        p = self.patch_factor
        n, c, h, w = x.shape
        ph, pw = h // p, w // p
        if ph == 0 or pw == 0:
            raise ValueError(f'patch_factor {p} is larger than the image size {h}x{w}')
        x = _fft_dtype(x)[..., :ph * p, :pw * p]
        patches = x.reshape(n, c, p, ph, p, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, p * p, c, ph, pw)
        return torch.fft.fft2(patches, norm='ortho')

    def forward(self, pred, target, weight=None, matrix=None, **kwargs):
        reject_weight('FocalFrequencyLoss', weight)
        f_pred, f_target = self.spectrum(pred), self.spectrum(target)
        if self.ave_spectrum:
            f_pred, f_target = f_pred.mean(0, keepdim=True), f_target.mean(0, keepdim=True)
        diff = f_pred - f_target
        distance = diff.real.pow(2) + diff.imag.pow(2)  # |d|^2
        if matrix is not None:
            w = matrix.detach()
        else:
            with torch.no_grad():
                w = distance.sqrt().pow(self.alpha)
                if self.log_matrix:
                    w = torch.log(w + 1.0)
                if self.batch_matrix:
                    w = w / w.max()
                else:
                    w = w / w.amax(dim=(-2, -1), keepdim=True)
                w = torch.nan_to_num(w, nan=0.0).clamp(0.0, 1.0)
        return self.loss_weight * reduce_loss(w * distance, self.reduction)


def haar_filters(dtype=torch.float32, device=None):
    """The four orthonormal 2x2 Haar filters ``(LL, LH, HL, HH)``, shape (4, 1, 2, 2).

    On a 2x2 block ``[[a, b], [c, d]]``: ``LL = (a+b+c+d)/2`` (average), ``LH = (a+b-c-d)/2``
    (row difference: horizontal edges), ``HL = (a-b+c-d)/2`` (column difference: vertical
    edges), ``HH = (a-b-c+d)/2`` (diagonal). The filters are orthonormal, so the transform
    preserves energy.
    """
    f = torch.tensor([[[1., 1.], [1., 1.]],
                      [[1., 1.], [-1., -1.]],
                      [[1., -1.], [1., -1.]],
                      [[1., -1.], [-1., 1.]]], dtype=dtype, device=device) / 2
    return f[:, None]


def haar_dwt(x):
    """One-level orthonormal Haar DWT as a stride-2 depthwise conv.

    (N, C, H, W) -> (N, C, 4, ceil(H/2), ceil(W/2)) with sub-bands ordered ``LL, LH, HL, HH``;
    odd sizes are first padded by replicating the last row/column.
    """
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        x = F.pad(x, [0, w % 2, 0, h % 2], mode='replicate')
    weight = haar_filters(x.dtype, x.device).repeat(c, 1, 1, 1)  # (4C, 1, 2, 2)
    y = F.conv2d(x, weight, stride=2, groups=c)
    return y.reshape(n, c, 4, *y.shape[-2:])


@LOSS_REGISTRY.register()
class WaveletHFLoss(nn.Module):
    """Haar-wavelet high-frequency L1 loss (team SeaOuter, NTIRE 2023 ESR report, Eq. 5).

    ``L_W = || Psi^H(gt) - Psi^H(sr) ||_1`` where ``Psi^H`` is the three high-frequency sub-bands
    (LH, HL, HH) of a one-level orthonormal Haar DWT (see :func:`haar_filters`). ``ll_weight > 0``
    adds ``ll_weight * L1(LL(sr), LL(gt))``. With ``reduction='mean'`` each term is the mean
    over its own sub-bands; ``'none'`` returns the (N, C, 3 or 4, H/2, W/2) weighted
    element-wise tensor (LL first when included).
    """

    def __init__(self, loss_weight=1.0, reduction='mean', ll_weight=0.0):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.ll_weight = ll_weight

    def forward(self, pred, target, weight=None, **kwargs):
        reject_weight('WaveletHFLoss', weight)
        b_pred, b_target = haar_dwt(pred), haar_dwt(target)
        loss = l1_loss(b_pred[:, :, 1:], b_target[:, :, 1:], reduction=self.reduction)
        if self.ll_weight:
            ll = self.ll_weight * l1_loss(b_pred[:, :, :1], b_target[:, :, :1], reduction=self.reduction)
            loss = torch.cat([ll, loss], dim=2) if self.reduction == 'none' else loss + ll
        return self.loss_weight * loss
