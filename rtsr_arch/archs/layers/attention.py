"""Attention gates shared by the architectures (output = x * gate(x)), one class per published form."""

import torch
from torch import nn
from torch.nn import functional as F

from .activations import make_activation

__all__ = ['SqueezeExcite', 'make_divisible', 'ESA', 'ESA_VARIANTS', 'ESA_MIN_INPUT_SIZE']


def make_divisible(value, divisor=8, min_value=None, round_limit=0.9):
    """timm's channel rounding (``timm.layers.helpers.make_divisible``): ``value`` rounded to the
    nearest multiple of ``divisor`` (at least ``min_value``, default ``divisor``), bumped up by one
    ``divisor`` if that lost more than ``1 - round_limit`` of ``value``."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu, Shen, Sun, CVPR 2018) in timm's ``SEModule`` form and layout,
    ``x * sigmoid(fc2(act(fc1(mean_hw(x)))))``, with 1x1 convs ``fc1`` (channels -> rd) and ``fc2``
    (rd -> channels) as in timm's state dicts (RepViT, RVSR).

    The mean is over the whole image: a network using it is not tile-exact (``tile_exact = False``).

    Args:
        channels: gated features.
        rd_ratio: bottleneck width relative to ``channels`` when ``rd_channels`` is not given,
            rounded as timm does (``make_divisible(channels * rd_ratio, rd_divisor, round_limit=0)``:
            16 channels at 0.25 -> 8, timm's ``SqueezeExcite(16, 0.25)`` in RVSR).
        rd_channels: bottleneck width, overriding ``rd_ratio``.
        rd_divisor: rounding multiple of the bottleneck (8 in timm).
        act_type: activation between the two 1x1 convs ('relu' in timm).
        bias: biases of ``fc1`` and ``fc2`` (timm: True).
    """

    def __init__(self, channels, rd_ratio=0.25, rd_channels=None, rd_divisor=8, act_type='relu', bias=True):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f'SqueezeExcite: channels={channels!r} must be a positive int')
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        if isinstance(rd_channels, bool) or not isinstance(rd_channels, int) or rd_channels < 1:
            raise ValueError(f'SqueezeExcite: rd_channels={rd_channels!r} must be a positive int')
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        self.act = make_activation(act_type, rd_channels)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


# ESA's spatial path: conv2 (3x3, stride 2, no padding) then a 7x7 max pool with stride 3, no
# padding: floor((H - 3) / 2) + 1 >= 7 needs H >= 15 (15 -> 7 -> 1; 256 -> 127 -> 41).
ESA_MIN_INPUT_SIZE = 15

# variant -> the convs between the pooling and the bilinear resize (official attribute names)
ESA_VARIANTS = {
    'rfdn': ('conv_max', 'conv3', 'conv3_'),  # RFDN's original ESA: 3x3 + ReLU, 3x3 + ReLU, 3x3
    'light': ('conv3',),  # RLFN's light ESA (also DIPNet, PFDN, RepRFN, DLFAN): one 3x3, no ReLU
}


class ESA(nn.Module):
    """Enhanced spatial attention (Liu et al., RFANet, CVPR 2020), in the two forms of the NTIRE
    efficient-SR networks, with the official key names ``conv1, conv_f, conv_max, conv2, conv3,
    conv3_, conv4``:

    ``c1 = conv1(x)`` (1x1, C -> f); ``s = maxpool_{7, stride 3}(conv2(c1))`` (3x3, stride 2, no
    padding); ``s = group(s)``; ``m = sigmoid(conv4(bilinear(s, size(x)) + conv_f(c1)))`` (conv_f
    1x1 f -> f, conv4 1x1 f -> C); output ``x * m``.

    - ``variant='rfdn'`` (RFDN, ``ofsoundof/NTIRE2023_ESR:models/team00_RFDN.py``; PRFDN):
      group = conv3_(relu(conv3(relu(conv_max(s))))), all 3x3 with padding 1, the two ReLUs one
      ``nn.ReLU`` module (``relu``) called twice, so the NTIRE 2023 ESR counter counts both calls.
    - ``variant='light'`` (RLFN, ``bytedance/RLFN:model/block.py``; DIPNet, PFDN, RepRFN, DLFAN):
      group = conv3(s), no ReLU (the official module's unused ``relu`` member is not registered:
      it has no parameters and is never called). The official width is ``esa_channels = 16``.

    Requirements: input height and width >= :data:`ESA_MIN_INPUT_SIZE` (15). The pooling is local,
    but the coarse map is bilinearly resized (``align_corners=False``) to the input size, so where
    each output pixel samples it depends on the image size: a network using ESA is neither
    translation-equivariant nor tile-exact (``tile_exact = False``, no receptive radius).

    Args:
        num_feat: gated features C.
        esa_channels: width f of the attention path (RFDN: C // 4; RLFN: 16).
        variant: 'rfdn' or 'light' (:data:`ESA_VARIANTS`).
        bias: biases of every conv (True in every official form).
    """

    def __init__(self, num_feat, esa_channels, variant='light', bias=True):
        super().__init__()
        for name, value in (('num_feat', num_feat), ('esa_channels', esa_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'ESA: {name}={value!r} must be a positive int')
        if variant not in ESA_VARIANTS:
            raise ValueError(f"ESA: variant={variant!r}: expected one of {', '.join(map(repr, ESA_VARIANTS))}")
        f = esa_channels
        self.variant = variant
        self.conv1 = nn.Conv2d(num_feat, f, 1, bias=bias)
        self.conv_f = nn.Conv2d(f, f, 1, bias=bias)
        if variant == 'rfdn':
            self.conv_max = nn.Conv2d(f, f, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0, bias=bias)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1, bias=bias)
        if variant == 'rfdn':
            self.conv3_ = nn.Conv2d(f, f, 3, padding=1, bias=bias)
            self.relu = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(f, num_feat, 1, bias=bias)

    def forward(self, x):
        c1 = self.conv1(x)
        s = F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3)
        if self.variant == 'rfdn':
            s = self.conv3_(self.relu(self.conv3(self.relu(self.conv_max(s)))))
        else:
            s = self.conv3(s)
        s = F.interpolate(s, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return x * torch.sigmoid(self.conv4(s + self.conv_f(c1)))
