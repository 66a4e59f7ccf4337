"""Spatially-adaptive feature modulation (SAFM; Sun, Dong, Tang, Pan, "Spatially-Adaptive Feature
Modulation for Efficient Image Super-Resolution", ICCV 2023, §3.1), the multi-level layer shared by
SAFMN and its NTIRE 2023 descendants (the team NJUST_R SAFMN entry, the team NJUST_M GFMN), and the
pieces of the SAFMN family (SAFMN, GFMN, MFA, SAFMN++): its skeleton, its convolutional channel
mixer and the channel-mixer width ``int(dim * ffn_scale)`` (checked, and recovered from weights).

The input's channels are cut into ``n_levels`` equal chunks. Chunk 0 goes through a depthwise 3x3
conv at full size; chunk ``i >= 1`` is max-pooled adaptively to ``(H // 2**(i + pool_shift),
W // 2**(i + pool_shift))``, goes through its depthwise 3x3 conv and is resized back to H x W
(nearest). The chunks are concatenated, mixed by a 1x1 conv (``aggr``), activated, and multiply the
layer's input. Keys as the official ``SAFM`` (``mfr.{i}``, ``aggr``).

``pool_shift``: 0 in the ICCV 2023 SAFMN (``h // 2**i``: 1/2, 1/4, 1/8), 1 in both NTIRE 2023
entries (``h // 2**(i + 1)``: 1/4, 1/8, 1/16, so inputs need H, W >= 16).

Pooling and resizing are the PyTorch ops in eager mode and their bit-identical traceable forms
while a graph is captured (:func:`~rtsr_arch.archs.layers.adaptive_max_pool2d_by`,
:func:`~rtsr_arch.archs.layers.resize_nearest`), so ONNX / torch.export graphs are exact at every
height and width. Every conv is a registered ``nn.Conv2d`` called once per forward, as in the
official module, so the NTIRE ESR counters count the pooled convs at their pooled sizes.
"""
import math

import torch
from torch import nn

from .activations import make_activation
from .pooling import adaptive_max_pool2d_by
from .resize import resize_nearest
from .upsamplers import conv_pixel_shuffle

__all__ = ['SAFM', 'NTIRE23_SAFM_LEVELS', 'NTIRE23_SAFM_POOL_SHIFT', 'safm_min_input_size', 'check_safm_width',
           'SAFMNSkeleton', 'conv_channel_mixer', 'check_ffn_scale', 'ffn_scale_for']

# the SAFM of both NTIRE 2023 entries: 4 levels, level i pooled to H // 2**(i + 1) (1/4, 1/8, 1/16)
NTIRE23_SAFM_LEVELS = 4
NTIRE23_SAFM_POOL_SHIFT = 1


def safm_min_input_size(n_levels, pool_shift):
    """The smallest H, W with at least one bin at the coarsest level of a :class:`SAFM`."""
    return 2 ** (n_levels - 1 + pool_shift) if n_levels > 1 else 1


class SAFM(nn.Module):
    """Multi-level spatially-adaptive feature modulation (see the module docstring).

    Args:
        dim: channels; a multiple of ``n_levels`` (the official code gives every level
            ``dim // n_levels`` channels and chunks the input in ``n_levels`` parts).
        n_levels: 4 in every released SAFMN network.
        pool_shift: level ``i`` pools by ``2 ** (i + pool_shift)``.
        bias: biases of the depthwise convs and of ``aggr`` (GFMN and the ICCV SAFMN: True; the
            NTIRE 2023 SAFMN entry: False).
        act_type: activation of the modulation map (GELU in the official code); a
            parameter-free one, or 'prelu' (``dim`` slopes).
    """

    def __init__(self, dim, n_levels=4, pool_shift=1, bias=True, act_type='gelu'):
        super().__init__()
        if n_levels < 1 or dim % n_levels:
            raise ValueError(f'SAFM: dim={dim!r} must be a positive multiple of n_levels={n_levels!r}')
        if pool_shift < 0:
            raise ValueError(f'SAFM: pool_shift={pool_shift!r} must be >= 0')
        self.n_levels = n_levels
        self.pool_shift = pool_shift
        chunk = dim // n_levels
        self.mfr = nn.ModuleList([nn.Conv2d(chunk, chunk, 3, 1, 1, groups=chunk, bias=bias) for _ in range(n_levels)])
        self.aggr = nn.Conv2d(dim, dim, 1, 1, 0, bias=bias)
        self.act = make_activation(act_type, dim)

    def pool_factor(self, level):
        """The pooling factor of ``level`` (>= 1): the pooled map is ``(H // f, W // f)``."""
        return 2 ** (level + self.pool_shift)

    @property
    def min_input_size(self):
        """The smallest H, W with at least one bin at the coarsest level."""
        return safm_min_input_size(self.n_levels, self.pool_shift)

    def forward(self, x):
        h, w = x.shape[-2:]
        chunks = x.chunk(self.n_levels, dim=1)
        out = [self.mfr[0](chunks[0])]
        for i in range(1, self.n_levels):
            s = self.mfr[i](adaptive_max_pool2d_by(chunks[i], self.pool_factor(i)))
            out.append(resize_nearest(s, (h, w)))
        return self.act(self.aggr(torch.cat(out, dim=1))) * x


def check_safm_width(arch, num_feat, n_levels):
    """A one-line ValueError naming ``arch`` unless ``num_feat`` splits into the ``n_levels`` levels."""
    if num_feat % n_levels:
        raise ValueError(f'{arch}: num_feat={num_feat!r}: expected a multiple of {n_levels} '
                         f'(SAFM splits the features in {n_levels} levels)')


class SAFMNSkeleton(nn.Module):
    """The skeleton of the ICCV 2023 SAFMN kept by GFMN, MFA and SAFMN++ (official names):
    ``to_img(feats(f) + f)`` with ``f = to_feat(x)``; ``to_feat`` a 3x3 conv, ``feats`` the blocks
    in an ``nn.Sequential``, ``to_img`` a 3x3 conv to C_out·s² channels and PixelShuffle(s).
    A subclass builds them with :meth:`add_skeleton`."""

    def add_skeleton(self, num_in_ch, num_out_ch, num_feat, upscale, blocks, bias=True):
        self.to_feat = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=bias)
        self.feats = nn.Sequential(*blocks)
        self.to_img = conv_pixel_shuffle(num_feat, num_out_ch, upscale, bias=bias)

    def forward(self, x):
        x = self.to_feat(x)
        return self.to_img(self.feats(x) + x)


def conv_channel_mixer(dim, ffn_scale, act_type='gelu'):
    """SAFMN's convolutional channel mixer (CCM; also SAFMN++'s) as the official ``nn.Sequential``:
    bias-free 3x3 conv (dim -> ``int(dim * ffn_scale)``), activation, bias-free 1x1 conv back
    (keys ``0`` and ``2``)."""
    hidden = int(dim * ffn_scale)
    return nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1, bias=False), make_activation(act_type, hidden),
                         nn.Conv2d(hidden, dim, 1, 1, 0, bias=False))


def check_ffn_scale(arch, num_feat, ffn_scale):
    """A one-line ValueError naming ``arch`` unless the channel-mixer width ``int(num_feat *
    ffn_scale)`` is at least one channel."""
    if int(num_feat * ffn_scale) < 1:
        raise ValueError(f'{arch}: ffn_scale={ffn_scale!r}: int(num_feat * ffn_scale) must be >= 1 '
                         f'(num_feat={num_feat})')


def ffn_scale_for(dim, hidden):
    """The expansion ratio of a SAFMN-family channel mixer recovered from its weights: the decimal
    with the fewest digits ``r`` such that ``int(dim * r) == hidden`` (2.0 for 36 -> 72, 1.8 for
    33 -> 59), i.e. the value a constructor taking ``hidden = int(dim * ffn_scale)`` was most
    plausibly given; importers use it to rebuild ``ffn_scale`` from the hidden width."""
    for digits in range(7):
        unit = 10 ** digits
        r = math.ceil(hidden * unit / dim) / unit
        while int(dim * r) < hidden:  # float rounding of the product
            r = round(r + 1 / unit, digits)
        if int(dim * r) == hidden:
            return float(r)
    return hidden / dim
