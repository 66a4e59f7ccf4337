"""LKDN's reparameterized blocks (Xie et al., "Large Kernel Distillation Network for Efficient
Single Image Super-Resolution", CVPRW 2023, §3.3, Fig. 2d/2e; NTIRE 2023 ESR report §4.23, team
Set5_Baby; official code stella-von/LKDN@54df78a ``basicsr/archs/lkdn_blocks.py``, MIT):

- :class:`BSConvURep`, the re-parameterized blueprint shallow block (RBSB, official
  ``BSConvU_rep``): a blueprint separable conv (pointwise 1x1 then depthwise kxk, BSConv-U of
  Haase & Amthor, CVPR 2020) with an identity around each half and a depthwise 1x1 beside the
  depthwise kxk. It deploys to a plain BSConv-U (``pw`` + ``dw``, the official ``BSConvU``), not
  to a single conv: the two halves are kept separate, as in the official deploy checkpoint.
- :class:`RepUpsampler`, the re-parameterized upsampler (official ``Upsampler_rep``): 1x1 + 3x3 +
  (1x1 expand -> 3x3 on the bias-padded expansion) in parallel, then PixelShuffle; deploys to
  one 3x3 conv + PixelShuffle (official ``UpsampleOneStep``, key ``0``).

The merge math is that of :mod:`.fusion` (identity kernels, centring, 1x1 -> kxk composition).
"""
import copy

import torch
from torch import nn
from torch.nn import functional as F

from .base import ReparamBlock
from .fusion import fuse_1x1_kxk, identity_kernel, merge_parallel

__all__ = ['BSConvU', 'BSConvURep', 'RepUpsampler']


def _check_positive_int(block, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{block}: {name}={value!r} must be a positive int')


class BSConvU(nn.Module):
    """Blueprint separable conv, unconstrained variant (Haase & Amthor, CVPR 2020; official
    ``BSConvU``): ``pw`` (1x1, ``in -> out``, no bias) then ``dw`` (depthwise kxk, padding k // 2,
    with bias). Not reparameterizable: its own deploy form, and the deploy form of
    :class:`BSConvURep`."""

    def __init__(self, in_channels, out_channels, kernel_size=3, bias=True):
        super().__init__()
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels),
                            ('kernel_size', kernel_size)):
            _check_positive_int('BSConvU', name, value)
        if kernel_size % 2 == 0:
            raise ValueError(f'BSConvU: kernel_size={kernel_size} must be odd (same padding)')
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dw = nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=out_channels,
                            bias=bias)

    def forward(self, x):
        return self.dw(self.pw(x))


class BSConvURep(BSConvU):
    """LKDN's RBSB (official ``BSConvU_rep``): ``y = pw(x) + x``; ``out = dw(y) + y + rep1x1(y)``,
    ``rep1x1`` a depthwise 1x1 with bias. Needs ``in_channels == out_channels`` (the identities).

    :meth:`reparameterize` folds the identities and ``rep1x1`` into the two convs, in place:
    ``pw <- pw + I`` (a 1x1 identity) and ``dw <- dw + I + rep1x1`` (the depthwise identity and
    ``rep1x1`` at the centre tap), ``dw.bias <- dw.bias + rep1x1.bias``. Exact on every pixel
    (the identity and the 1x1 never reach the padding); computed in float64 and cast once. The
    deploy form (``deploy=True``, or after :meth:`reparameterize`) is :class:`BSConvU` with the
    same keys ``pw.weight``, ``dw.weight``, ``dw.bias``.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, bias=True, deploy=False):
        super().__init__(in_channels, out_channels, kernel_size, bias)
        if in_channels != out_channels:
            raise ValueError(f'BSConvURep: in_channels={in_channels} != out_channels={out_channels}: the identity '
                             f'around the pointwise conv needs equal widths')
        self.deploy = bool(deploy)
        if not self.deploy:
            self.rep1x1 = nn.Conv2d(out_channels, out_channels, 1, groups=out_channels, bias=bias)

    def forward(self, x):
        if self.deploy:
            return self.dw(self.pw(x))
        y = self.pw(x) + x
        return self.dw(y) + y + self.rep1x1(y)

    def fuse(self):
        """``((pw_weight, None), (dw_weight, dw_bias))`` of the equivalent BSConvU."""
        c, k = self.out_channels, self.kernel_size
        pw = self.pw.weight + identity_kernel(c, 1, self.pw.weight)
        dw, b = merge_parallel([(self.dw.weight, self.dw.bias), (identity_kernel(c, k, self.dw.weight, groups=c), None),
                                (self.rep1x1.weight, self.rep1x1.bias)], k)
        return (pw, None), (dw, b)

    @torch.no_grad()
    def reparameterize(self):
        """Fold the identities and ``rep1x1`` into ``pw`` and ``dw``, in place (idempotent)."""
        if self.deploy:
            return self
        (pw, _), (dw, b) = copy.deepcopy(self).double().fuse()
        self.pw.weight.copy_(pw)
        self.dw.weight.copy_(dw)
        if self.dw.bias is not None:
            self.dw.bias.copy_(b)
        del self.rep1x1
        self.deploy = True
        return self


class RepUpsampler(ReparamBlock):
    """LKDN's re-parameterized upsampler (official ``Upsampler_rep``): ``conv1`` (1x1) + ``conv3``
    (3x3) + ``conv3x3(conv1x1(x))`` (1x1 expand to ``2 * in_channels``, its *input* zero-padded so
    the valid 3x3 sees the expand bias on the border, the official explicit bias padding), each
    to ``out_channels * scale**2``, then PixelShuffle(``scale``). Deploys to one 3x3 conv under
    the official key ``0`` (``UpsampleOneStep``: ``upsampler.0.weight``), PixelShuffle applied
    functionally (no parameters).

    Args:
        in_channels: features in.
        out_channels: image channels out (after the shuffle).
        scale: PixelShuffle factor.
        deploy: build the fused form directly.
    """

    deploy_key = '0'

    def __init__(self, in_channels, out_channels, scale=4, deploy=False):
        self._check_count('scale', scale)
        super().__init__(in_channels, out_channels * scale ** 2, 3, 'linear', deploy)
        self.scale = scale
        if deploy:
            return
        mid = 2 * in_channels
        self.conv1 = nn.Conv2d(in_channels, self.out_channels, 1)
        self.conv3 = nn.Conv2d(in_channels, self.out_channels, 3, padding=1)
        self.conv1x1 = nn.Conv2d(in_channels, mid, 1, padding=1)  # bias padding (see the class docstring)
        self.conv3x3 = nn.Conv2d(mid, self.out_channels, 3)

    def forward(self, x):
        return F.pixel_shuffle(super().forward(x), self.scale)

    def forward_train(self, x):
        return self.conv1(x) + self.conv3(x) + self.conv3x3(self.conv1x1(x))

    def fuse(self):
        w, b = fuse_1x1_kxk(self.conv1x1.weight, self.conv1x1.bias, self.conv3x3.weight, self.conv3x3.bias)
        return merge_parallel([(self.conv1.weight, self.conv1.bias), (self.conv3.weight, self.conv3.bias), (w, b)], 3)
