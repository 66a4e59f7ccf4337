"""Independent functional pieces of the Fried Rice Lab (FRL) entries of the NTIRE 2023 Efficient SR
challenge (LGTT, GateFormer, EXnet, HCAN; Li et al., CVPRW 2023, §4.27-4.30; official code
Jinchen2028/, LiuYLong/, Zhang9317112/, TIANLE233/NTIRE2023_ESR), written from the published
description on the official keys with torch.nn.functional only (no rtsr_arch import), for the
reference forwards of test_lgtt.py, test_gateformer.py, test_exnet.py and test_hcan.py; plus the
fixture lookup and photographs those tests share.

Every function takes and returns images in [0, 255], as the teams' ``test_demo.py`` (data_range
255)."""
import math
import os
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from helpers import photo

FIXTURES_DIR = Path(os.environ.get('RTSR_OFFICIAL_FIXTURES') or Path(__file__).resolve().parents[3] /
                    'shared/fixtures/official')
PHOTOS = ('astronaut', 'coffee', 'chelsea')
DF2K_MEAN = (0.4690, 0.4490, 0.4036)


def fixture(name):
    path = FIXTURES_DIR / name
    if not path.is_file():
        pytest.skip(f'official fixture {path} not found (set RTSR_OFFICIAL_FIXTURES)')
    return path


def photos(h, w, dtype=torch.float32):
    """Three real photographs (scikit-image), RGB in [0, 1], one batch."""
    return torch.cat([photo(name, h, w, dtype=dtype) for name in PHOTOS])


def mean_shift(x, sign):
    """The FRL MeanShift: a 1x1 conv with an identity kernel and bias sign * 255 * DF2K mean; the
    bias is computed in float32 and then cast to the input's type, as the official code does (so a
    float64 forward shifts by the float32-rounded mean)."""
    weight = torch.eye(3, dtype=x.dtype).view(3, 3, 1, 1)
    return F.conv2d(x, weight, (sign * 255 * torch.tensor(DF2K_MEAN, dtype=torch.float32)).to(x.dtype))


def conv(x, sd, name, groups=1, bias=True):
    """``sd[name.weight]`` as a stride-1 conv with 'same' zero padding (k // 2 per axis)."""
    weight = sd[f'{name}.weight']
    return F.conv2d(x, weight, sd[f'{name}.bias'] if bias else None,
                    padding=(weight.shape[2] // 2, weight.shape[3] // 2), groups=groups)


def layer_norm4d(x, sd, name, eps=1e-5):
    """The FRL LayerNorm4D: per pixel over the channels, biased variance, affine."""
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return sd[f'{name}.weight'][:, None, None] * (x - u) / torch.sqrt(s + eps) + sd[f'{name}.bias'][:, None, None]


def shift_conv1x1(x, sd, name):
    """The FRL ShiftConv2d1x1 ('+' mode): a fixed depthwise 3x3 one-hot kernel (zero padding 1)
    moving channel groups of C // 5 (right, left, below, above neighbour; the rest unchanged),
    then the 1x1 conv ``name``."""
    c = x.shape[1]
    g = c // 5
    mask = torch.zeros(c, 1, 3, 3, dtype=x.dtype)
    mask[:g, 0, 1, 2] = 1
    mask[g:2 * g, 0, 1, 0] = 1
    mask[2 * g:3 * g, 0, 2, 1] = 1
    mask[3 * g:4 * g, 0, 0, 1] = 1
    mask[4 * g:, 0, 1, 1] = 1
    return conv(F.conv2d(x, mask, padding=1, groups=c), sd, name)


def swish(x):
    return x * torch.sigmoid(x)


def skeleton(sd, x255, body, head='head', stored_mean=False):
    """sub_mean -> head -> body -> + head output -> tail.0 -> PixelShuffle -> add_mean.
    ``stored_mean``: the mean shifts are the checkpoint's 1x1 convs ``sub_mean`` / ``add_mean``."""
    x = conv(x255, sd, 'sub_mean') if stored_mean else mean_shift(x255, -1)
    h = conv(x, sd, head)
    y = conv(body(h) + h, sd, 'tail.0')
    y = F.pixel_shuffle(y, math.isqrt(sd['tail.0.weight'].shape[0] // 3))
    return conv(y, sd, 'add_mean') if stored_mean else mean_shift(y, 1)


def psnr_gain_over_bicubic(model, h=192, w=256):
    """PSNR (RGB, border 4) of ``model``'s x4 output over that of bicubic upscaling, on three
    photographs downscaled by antialiased bicubic: a sanity check of the data range."""
    hr = photos(h, w)
    lr = F.interpolate(hr, scale_factor=0.25, mode='bicubic', antialias=True, align_corners=False)
    with torch.no_grad():
        sr = model(lr).clamp(0, 1)
    bicubic = F.interpolate(lr, scale_factor=4, mode='bicubic', align_corners=False).clamp(0, 1)

    def psnr(a):
        return -10 * math.log10(((a - hr)[..., 4:-4, 4:-4] ** 2).mean().item())
    return psnr(sr) - psnr(bicubic)
