"""Auxiliary SR losses (rtsr_arch/losses): each checked against an independent direct computation."""
import math

import numpy as np
import pytest
import torch
from helpers import photo

import rtsr_arch  # noqa: F401  (installs basicsr aliases and registers the losses)
from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY
from rtsr_arch.archs.layers import GaussianBlur
from rtsr_arch.losses.frequency_loss import (FFTLoss, FocalFrequencyLoss, WaveletHFLoss, haar_dwt,
                                             haar_filters)
from rtsr_arch.losses.spatial_loss import GradientMapLoss, HFLoss, PSNRLoss

NAMES = ['HFLoss', 'FFTLoss', 'FocalFrequencyLoss', 'GradientMapLoss', 'PSNRLoss', 'WaveletHFLoss']
BASICSR_NAMES = {'L1Loss', 'MSELoss', 'CharbonnierLoss', 'WeightedTVLoss', 'PerceptualLoss', 'GANLoss',
                 'MultiScaleGANLoss'}


pytestmark = pytest.mark.usefixtures('torch_single_thread')


def _pair(seed=0, n=2, c=3, h=16, w=20, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g, dtype=dtype), torch.rand(n, c, h, w, generator=g, dtype=dtype)


def _photo_pair(dtype=torch.float64):
    """A real photo batch (target) and a degraded version of it (pred)."""
    target = torch.cat([photo('astronaut', 32, 40, dtype=dtype), photo('coffee', 32, 40, dtype=dtype)])
    g = torch.Generator().manual_seed(1)
    pred = GaussianBlur(5, 1.5).to(dtype)(target) + 0.02 * torch.randn(target.shape, generator=g, dtype=dtype)
    return pred, target


def _inputs():
    return [_pair(), _photo_pair()]


def _np(t):
    return t.detach().cpu().numpy()


# ----------------------------------------------------------------------------------- registry / API
def test_registered_and_built_by_build_loss():
    for name in NAMES:
        assert name in LOSS_REGISTRY.keys()
        assert name not in BASICSR_NAMES
        loss = build_loss({'type': name, 'loss_weight': 0.5})
        assert type(loss).__name__ == name and loss.loss_weight == 0.5
    assert BASICSR_NAMES <= set(LOSS_REGISTRY.keys())  # basicsr's own names untouched


@pytest.mark.parametrize('name', NAMES)
def test_minimum_at_equality_positive_scaled_and_differentiable(name):
    for pred, target in _inputs():
        loss = build_loss({'type': name})
        at_eq = loss(target, target)
        assert at_eq.dim() == 0
        value = loss(pred, target)
        if name == 'PSNRLoss':  # -PSNR: minimum 10*log10(eps) = -80 dB, not 0
            assert at_eq.item() == pytest.approx(-80.0, abs=1e-6)
            assert value.item() > at_eq.item()
        elif name == 'GradientMapLoss':  # sqrt(. + eps) is exact at equality
            assert at_eq.item() == 0.0 and value.item() > 0
        else:
            assert abs(at_eq.item()) < 1e-12 and value.item() > 0
        half = build_loss({'type': name, 'loss_weight': 0.5})(pred, target)
        assert half.item() == pytest.approx(0.5 * value.item(), rel=1e-12)
        p = pred.clone().requires_grad_(True)
        loss(p, target).backward()
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize('name', ['HFLoss', 'FFTLoss', 'FocalFrequencyLoss', 'GradientMapLoss', 'PSNRLoss',
                                  'WaveletHFLoss'])
def test_reductions_consistent(name):
    pred, target = _pair()
    none = build_loss({'type': name, 'reduction': 'none'})(pred, target)
    assert none.dim() >= 1
    torch.testing.assert_close(build_loss({'type': name, 'reduction': 'sum'})(pred, target), none.sum())
    torch.testing.assert_close(build_loss({'type': name, 'reduction': 'mean'})(pred, target), none.mean())
    with pytest.raises(ValueError):
        build_loss({'type': name, 'reduction': 'avg'})


def test_float32_and_half_inputs_work():
    pred, target = _photo_pair(torch.float32)
    for name in NAMES:
        assert torch.isfinite(build_loss({'type': name})(pred, target))
    for cls in (FFTLoss, FocalFrequencyLoss):  # spectra are taken in float32 for half inputs
        out = cls()(pred.half(), target.half())
        assert out.dtype == torch.float32 and out.item() == pytest.approx(cls()(pred, target).item(), rel=5e-2)


# ------------------------------------------------------------------------------------------ HFLoss
def test_hf_loss_matches_torchvision_gaussian_blur():
    from torchvision.transforms.functional import gaussian_blur

    loss = HFLoss()
    assert isinstance(loss.blur, GaussianBlur)  # the model's own module, not a second implementation
    for pred, target in _inputs():
        hf_p = pred - gaussian_blur(pred, [5, 5], [1., 1.])
        hf_t = target - gaussian_blur(target, [5, 5], [1., 1.])
        expected = (hf_t - hf_p).abs().mean()
        torch.testing.assert_close(loss(pred, target), expected, rtol=1e-10, atol=1e-12)
    # element-wise weight as in BasicSR's L1Loss: mean over the weighted region
    pred, target = _pair()
    mask = torch.zeros(2, 1, 16, 20, dtype=torch.float64)
    mask[..., 4:12, 5:15] = 1
    full = HFLoss(reduction='none')(pred, target)
    torch.testing.assert_close(loss(pred, target, mask), full[..., 4:12, 5:15].mean())


# ----------------------------------------------------------------------------------------- FFTLoss
@pytest.mark.parametrize('norm', ['backward', 'ortho'])
@pytest.mark.parametrize('onesided', [False, True])
def test_fft_loss_matches_numpy_fft(norm, onesided):
    loss = FFTLoss(norm=norm, onesided=onesided)
    for pred, target in _inputs():
        fft = np.fft.rfft2 if onesided else np.fft.fft2
        fp, ft = fft(_np(pred), axes=(-2, -1)), fft(_np(target), axes=(-2, -1))
        if norm == 'ortho':
            scale = math.sqrt(pred.shape[-2] * pred.shape[-1])
            fp, ft = fp / scale, ft / scale
        expected = np.mean(np.concatenate([np.abs(fp.real - ft.real), np.abs(fp.imag - ft.imag)]))
        assert loss(pred, target).item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError):
        FFTLoss(norm='forward')


# ------------------------------------------------------------------------------- FocalFrequencyLoss
def _ffl_loop(pred, target, alpha=1.0, patch_factor=1, log_matrix=False, batch_matrix=False):
    """Focal frequency loss written as explicit loops over images, patches and channels."""
    p, t = _np(pred), _np(target)
    n, c, h, w = p.shape
    ph, pw = h // patch_factor, w // patch_factor
    diffs = []
    for i in range(n):
        for a in range(patch_factor):
            for b in range(patch_factor):
                for ch in range(c):
                    sp = np.fft.fft2(p[i, ch, a * ph:(a + 1) * ph, b * pw:(b + 1) * pw]) / math.sqrt(ph * pw)
                    st = np.fft.fft2(t[i, ch, a * ph:(a + 1) * ph, b * pw:(b + 1) * pw]) / math.sqrt(ph * pw)
                    diffs.append(sp - st)
    mags = [np.abs(d) ** alpha for d in diffs]
    if log_matrix:
        mags = [np.log(m + 1) for m in mags]
    global_max = max(m.max() for m in mags)
    total, count = 0.0, 0
    for d, m in zip(diffs, mags):
        weight = np.clip(m / (global_max if batch_matrix else m.max()), 0, 1)
        total += np.sum(weight * np.abs(d) ** 2)
        count += d.size
    return total / count


@pytest.mark.parametrize('kwargs', [{}, {'alpha': 2.0}, {'patch_factor': 2}, {'log_matrix': True},
                                    {'batch_matrix': True}, {'patch_factor': 4, 'alpha': 0.5}])
def test_focal_frequency_loss_matches_loop(kwargs):
    loss = FocalFrequencyLoss(**kwargs)
    for pred, target in _inputs():
        assert loss(pred, target).item() == pytest.approx(_ffl_loop(pred, target, **kwargs), rel=1e-10)


def test_focal_frequency_weight_normalized_per_image():
    pred, target = _photo_pair()
    # second image's error 10x larger: per-image normalization gives it the same weight matrix
    pred = torch.stack([pred[0], target[1] + 10 * (pred[1] - target[1])])
    none = FocalFrequencyLoss(reduction='none')(pred, target)  # (N, P, C, H, W)
    alone = [FocalFrequencyLoss()(pred[i:i + 1], target[i:i + 1]).item() for i in range(2)]
    assert [none[i].mean().item() for i in range(2)] == pytest.approx(alone, rel=1e-12)  # batch-independent
    # with a batch-wide maximum the first image's weights shrink, so its share of the loss shrinks
    batch = FocalFrequencyLoss(reduction='none', batch_matrix=True)(pred, target)
    assert batch[0].mean().item() < 0.5 * none[0].mean().item()
    # weights are detached: the gradient equals that with the same weights given as a constant matrix
    loss = FocalFrequencyLoss()
    d = (loss.spectrum(pred) - loss.spectrum(target)).abs()
    const = d / d.amax(dim=(-2, -1), keepdim=True)
    p1, p2 = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    loss(p1, target).backward()
    loss(p2, target, matrix=const).backward()
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-10, atol=1e-14)


def test_focal_frequency_ave_spectrum_and_matrix():
    pred, target = _pair()
    mean_p, mean_t = pred.mean(0, keepdim=True), target.mean(0, keepdim=True)  # DFT is linear
    assert FocalFrequencyLoss(ave_spectrum=True)(pred, target).item() == pytest.approx(
        _ffl_loop(mean_p, mean_t), rel=1e-10)
    ones = torch.ones(2, 1, 3, 16, 20, dtype=torch.float64)  # predefined matrix of ones: plain spectral MSE
    fp = np.fft.fft2(_np(pred), norm='ortho')
    ft = np.fft.fft2(_np(target), norm='ortho')
    assert FocalFrequencyLoss()(pred, target, matrix=ones).item() == pytest.approx(
        np.mean(np.abs(fp - ft) ** 2), rel=1e-10)


# -------------------------------------------------------------------------------- GradientMapLoss
def _grad_map_np(x):
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])  # zero padding
    gx = xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2]
    gy = xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1]
    return np.sqrt(gx ** 2 + gy ** 2 + 1e-6)


def test_gradient_map_loss_matches_numpy_central_differences():
    loss = GradientMapLoss()
    for pred, target in _inputs():
        np.testing.assert_allclose(_np(loss.gradient_map(pred)), _grad_map_np(_np(pred)), rtol=1e-12)
        expected = np.mean(np.abs(_grad_map_np(_np(pred)) - _grad_map_np(_np(target))))
        assert loss(pred, target).item() == pytest.approx(expected, rel=1e-10)


# --------------------------------------------------------------------------------------- PSNRLoss
def test_psnr_loss_is_negative_psnr_in_db():
    for pred, target in _inputs():
        p, t = _np(pred), _np(target)
        psnr = [10 * np.log10(1.0 / np.mean((p[i] - t[i]) ** 2)) for i in range(p.shape[0])]
        assert PSNRLoss(eps=0)(pred, target).item() == pytest.approx(-np.mean(psnr), rel=1e-12)
        assert PSNRLoss(eps=0, reduction='none')(pred, target).numpy() == pytest.approx(-np.array(psnr), rel=1e-12)
        assert PSNRLoss()(pred, target).item() == pytest.approx(-np.mean(psnr), abs=1e-4)  # eps=1e-8 is tiny


def test_psnr_loss_to_y_matches_skimage_ycbcr():
    from skimage.color import rgb2ycbcr

    pred, target = _photo_pair()
    p, t = _np(pred).transpose(0, 2, 3, 1), _np(target).transpose(0, 2, 3, 1)
    psnr = []
    for i in range(p.shape[0]):
        yp, yt = rgb2ycbcr(p[i])[..., 0] / 255, rgb2ycbcr(t[i])[..., 0] / 255
        psnr.append(10 * np.log10(1.0 / np.mean((yp - yt) ** 2)))
    assert PSNRLoss(toY=True, eps=0)(pred, target).item() == pytest.approx(-np.mean(psnr), rel=1e-10)


# ---------------------------------------------------------------------------------- WaveletHFLoss
def test_haar_subbands_of_known_pattern():
    x = torch.tensor([[[[1., 2.], [3., 4.]]]])
    bands = haar_dwt(x)[0, 0, :, 0, 0]  # LL, LH, HL, HH
    # LL=(1+2+3+4)/2, LH=(1+2-3-4)/2, HL=(1-2+3-4)/2, HH=(1-2-3+4)/2
    assert bands.tolist() == [5.0, -2.0, -1.0, 0.0]
    f = haar_filters(torch.float64).reshape(4, 4)
    torch.testing.assert_close(f @ f.t(), torch.eye(4, dtype=torch.float64))  # orthonormal filters


def test_haar_preserves_energy_and_matches_slicing():
    for x, _ in _inputs():
        bands = haar_dwt(x)
        torch.testing.assert_close(bands.pow(2).sum(), x.pow(2).sum(), rtol=1e-12, atol=0)
        a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        expected = torch.stack([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d], dim=2) / 2
        torch.testing.assert_close(bands, expected, rtol=1e-12, atol=1e-12)
    assert haar_dwt(torch.rand(1, 2, 7, 9)).shape == (1, 2, 4, 4, 5)  # odd sizes: replicate-padded


def test_wavelet_hf_loss_matches_direct_computation():
    for pred, target in _inputs():
        p, t = _np(pred), _np(target)

        def bands(z):
            a, b, c, d = z[..., 0::2, 0::2], z[..., 0::2, 1::2], z[..., 1::2, 0::2], z[..., 1::2, 1::2]
            return (a + b + c + d) / 2, [(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2]

        (llp, hfp), (llt, hft) = bands(p), bands(t)
        hf = np.mean([np.abs(x - y) for x, y in zip(hfp, hft)])
        assert WaveletHFLoss()(pred, target).item() == pytest.approx(hf, rel=1e-10)
        ll = np.mean(np.abs(llp - llt))
        assert WaveletHFLoss(ll_weight=0.25)(pred, target).item() == pytest.approx(hf + 0.25 * ll, rel=1e-10)
    # low frequencies alone (a constant offset) are invisible to the HF sub-bands
    assert WaveletHFLoss()(target + 0.1, target).item() == pytest.approx(0.0, abs=1e-12)
    assert WaveletHFLoss(ll_weight=1.0)(target + 0.1, target).item() == pytest.approx(0.2, rel=1e-10)


# ----------------------------------------------------------------------------- optimization check
@pytest.mark.parametrize('name', NAMES)
def test_loss_decreases_on_real_images(name):
    torch.manual_seed(0)
    pred, target = _photo_pair(torch.float32)
    pred, target = pred[:1, :, :24, :24], target[:1, :, :24, :24]  # small: 20 Adam steps stay fast
    conv = torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode='replicate')
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[range(3), range(3), 1, 1] = 1.0
        conv.weight.add_(0.05 * torch.randn_like(conv.weight))
        conv.bias.zero_()
    loss = build_loss({'type': name})
    opt = torch.optim.Adam(conv.parameters(), lr=2e-3)
    values = []
    for _ in range(20):
        opt.zero_grad()
        value = loss(conv(pred), target)
        value.backward()
        opt.step()
        values.append(value.item())
    with torch.no_grad():
        final = loss(conv(pred), target).item()
    assert final < values[0] - 1e-3 * abs(values[0]), (name, values[0], final)
