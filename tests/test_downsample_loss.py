"""DownsampleLoss (Swin2SR's auxiliary loss with the AIS 2024 Lanczos-5 downscale, ANUNet stage 2):
the resampler against Pillow (Lanczos-3, bicubic) and FFmpeg's swscale (Lanczos-5, the challenge's
filter), the loss against a direct computation, its blindness to what the downscale removes."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

import rtsr_arch  # noqa: F401  (registers the losses)
from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY
from helpers import load_photo, photo
from rtsr_arch.losses.downsample_loss import DownsampleLoss, downsample, resample_matrix

pytestmark = pytest.mark.usefixtures('torch_single_thread')


def _crop(h, w):
    return np.ascontiguousarray(load_photo('astronaut')[100:100 + h, 60:60 + w])


@pytest.mark.parametrize('kernel, pil_filter', [('lanczos', Image.Resampling.LANCZOS),
                                                ('bicubic', Image.Resampling.BICUBIC)])
@pytest.mark.parametrize('h, w, scale', [(256, 320, 4), (90, 66, 3), (37, 51, 2)])
def test_resampler_equals_pillow(kernel, pil_filter, h, w, scale):
    """Lanczos-3 and bicubic in Pillow's float ('F') mode: same taps, same border renormalization."""
    img = _crop(h, w)
    x = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)
    ours = downsample(x, scale, kernel, lanczos_a=3).numpy()
    size = (math.ceil(w / scale), math.ceil(h / scale))
    ref = np.stack([np.asarray(Image.fromarray(img[..., c].astype(np.float32), 'F').resize(size, pil_filter))
                    for c in range(3)])
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4  # Pillow stores its intermediate pass in float32


def test_lanczos5_equals_the_challenge_swscale_downscale():
    """The AIS 2024 LR filter (swscale lanczos, param0=5, x4, RGB): after rounding to uint8, within
    2 levels away from the border (swscale's 14-bit fixed point), 0.4 levels on average; the
    border differs more (swscale replicates edge pixels, this resampler renormalizes)."""
    pytest.importorskip('av')
    from rtsr_arch.data.resize import lanczos

    img = _crop(256, 320)
    sw = lanczos(img, 4, a=5).to_ndarray().astype(np.float64)
    ours = downsample(torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1), 4, 'lanczos', 5)
    ours = ours.permute(1, 2, 0).numpy().round().clip(0, 255)
    diff = np.abs(sw - ours)
    print(f'Lanczos-5 x4 vs swscale: max {diff.max():.0f} (interior {diff[6:-6, 6:-6].max():.0f}), '
          f'mean {diff.mean():.3f}')
    assert diff[6:-6, 6:-6].max() <= 2 and diff.mean() <= 0.4


def test_resample_matrix_rows_are_normalized_and_stretched():
    m = resample_matrix(64, 16, 'lanczos', 5)
    assert m.shape == (16, 64) and torch.allclose(m.sum(1), torch.ones(16, dtype=torch.float64), atol=1e-12)
    # antialiased: an interior output reads 2 * a * scale = 40 input pixels (minus the zeros at the ends)
    assert int((m[8] != 0).sum()) == 40
    with pytest.raises(ValueError, match='kernel'):
        resample_matrix(8, 4, 'box')


def test_loss_equals_direct_computation_and_reductions():
    hr = torch.cat([photo('astronaut', 48, 64, dtype=torch.float64), photo('coffee', 48, 64, dtype=torch.float64)])
    g = torch.Generator().manual_seed(0)
    sr = hr + 0.05 * torch.randn(hr.shape, generator=g, dtype=torch.float64)
    mh, mw = resample_matrix(48, 12), resample_matrix(64, 16)
    d_sr = torch.einsum('oh,nchw,pw->ncop', mh, sr, mw)
    d_hr = torch.einsum('oh,nchw,pw->ncop', mh, hr, mw)
    expected = (d_sr - d_hr).abs().mean()
    torch.testing.assert_close(DownsampleLoss()(sr, hr), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(DownsampleLoss(criterion='l2', loss_weight=0.5)(sr, hr),
                               0.5 * ((d_sr - d_hr) ** 2).mean(), rtol=1e-12, atol=0)
    none = DownsampleLoss(reduction='none')(sr, hr)
    assert none.shape == (2, 3, 12, 16)
    torch.testing.assert_close(DownsampleLoss(reduction='sum')(sr, hr), none.sum())
    assert DownsampleLoss()(hr, hr).item() == 0.0
    with pytest.raises(ValueError, match='spatial element-wise weight'):
        DownsampleLoss()(sr, hr, weight=torch.ones_like(hr))


def test_loss_sees_low_frequencies_only():
    """A constant offset passes the downscale unchanged; a pixel checkerboard (Nyquist) is removed."""
    hr = photo('chelsea', 64, 64, dtype=torch.float64)
    assert DownsampleLoss()(hr + 0.1, hr).item() == pytest.approx(0.1, rel=1e-10)
    board = 0.1 * (1 - 2 * ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2)).double()
    assert DownsampleLoss()(hr + board, hr).item() < 1e-3 * 0.1
    assert build_loss({'type': 'L1Loss'})(hr + board, hr).item() == pytest.approx(0.1)


def test_registered_differentiable_and_half_safe():
    assert 'DownsampleLoss' in LOSS_REGISTRY.keys()
    loss = build_loss({'type': 'DownsampleLoss', 'loss_weight': 0.5, 'scale': 4, 'kernel': 'lanczos', 'lanczos_a': 5})
    assert isinstance(loss, DownsampleLoss) and loss.loss_weight == 0.5
    hr = photo('astronaut', 32, 40)
    sr = (hr + 0.05).requires_grad_(True)
    value = loss(sr, hr)
    value.backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    half = loss(sr.detach().half(), hr.half())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(value.item(), rel=2e-2)
    for bad in (dict(kernel='box'), dict(criterion='huber'), dict(scale=0), dict(lanczos_a=0)):
        with pytest.raises(ValueError, match='DownsampleLoss'):
            DownsampleLoss(**bad)
