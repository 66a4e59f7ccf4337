"""FMEN's enhanced residual block (ERB): two RRRBs around a LeakyReLU (Du et al., "Fast and
Memory-Efficient Network Towards Efficient Image Super-Resolution", CVPRW 2022, §3; official code
NJU-Jet/FMEN ``train_fmen.py`` / ``test_fmen.py``, Apache-2.0).

The same block is the rep "BasicBlock" of the high-frequency attention block (HFAB,
:class:`HFAB`, here too): FMEN's training code builds HFAB's blocks as ERBs, and
LMRLFN's ``BasicBlock`` (NTIRE 2023 ESR, team SeaOuter) has the same layout
(``conv1.rep_conv``, ``conv2.rep_conv``).
"""
import copy

import torch
from torch import nn
from torch.nn import functional as F

from .base import pad_with_value, reparameterize_children
from .fusion import bn_scale_shift, fuse_bn, fuse_bn_before_conv
from .rrrb import RRRB

__all__ = ['ERB', 'ERB_SLOPE', 'HFAB', 'hfab_warmup', 'parse_up_blocks', 'format_up_blocks']

ERB_SLOPE = 0.1  # FMEN's and LMRLFN's module-level ``act = nn.LeakyReLU(0.1)``


class ERB(nn.Module):
    """``conv1`` (RRRB) -> LeakyReLU(``slope``) -> ``conv2`` (RRRB), no residual around the pair
    (the residuals live inside the RRRBs); deploys to conv3x3 -> LeakyReLU -> conv3x3 with the
    official keys ``conv1.rep_conv`` and ``conv2.rep_conv``.

    The LeakyReLU is applied functionally (``F.leaky_relu``), as the official code applies a
    module-level ``nn.LeakyReLU`` that is not a registered submodule: the block has no ``act``
    module, and hook-based counters (the NTIRE ESR FLOP counter) do not count it, exactly as for
    the official networks. :func:`rtsr_arch.reparameterize` fuses the two RRRBs (bias padding
    included, exact on border pixels).

    Args:
        channels: input and output features.
        ratio: expansion ratio of both RRRBs (2 in FMEN: ``backbone_expand_ratio`` /
            ``attention_expand_ratio``).
        slope: negative slope of the LeakyReLU (0.1 in FMEN and LMRLFN).
        deploy: build the fused form directly.
        bias: biases of every conv (True in FMEN).
    """

    def __init__(self, channels, ratio=2, slope=ERB_SLOPE, deploy=False, bias=True):
        super().__init__()
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f'ERB: slope={slope!r} must be a number')
        self.slope = float(slope)
        self.conv1 = RRRB(channels, ratio=ratio, deploy=deploy, bias=bias)
        self.conv2 = RRRB(channels, ratio=ratio, deploy=deploy, bias=bias)

    @property
    def deploy(self):
        return self.conv1.deploy and self.conv2.deploy

    def forward(self, x):
        return self.conv2(F.leaky_relu(self.conv1(x), self.slope))


class HFAB(nn.Module):
    """High-frequency attention block of FMEN (Du et al., "Fast and Memory-Efficient Network
    Towards Efficient Image Super-Resolution", CVPRW 2022, §3.3; official code NJU-Jet/FMEN
    ``train_fmen.py`` / ``test_fmen.py``, Apache-2.0), also the attention of LMRLFN (NTIRE 2023
    ESR, team SeaOuter, HeaseoChung/LMRLFN):

    ``m = sigmoid(excitate(lrelu(blocks(lrelu(squeeze(x))))))``, output ``x * m``, where
    ``squeeze`` is a 3x3 conv C -> mid, ``blocks`` ``num_blocks`` ERBs on ``mid`` features (RRRB
    -> LeakyReLU -> RRRB, :class:`ERB`, with no activation between two ERBs)
    and ``excitate`` a 3x3 conv mid -> C; LeakyReLU slope 0.1, applied functionally as the
    official module-level ``act`` (not counted by hook-based FLOP counters).

    Training form with ``use_bn=True`` (the official ``train_fmen.py`` HFAB; LMRLFN's Fig. 17):
    BatchNorms ``bn1`` before ``squeeze``, ``bn2`` before ``excitate`` and ``bn3`` after it
    (before the sigmoid). The maps ``bn1`` and ``bn2`` produce are padded with the BatchNorm's value
    at zero input (``beta - running_mean * gamma / sqrt(running_var + eps)``, the official
    ``get_bn_bias`` / ``pad_tensor``; running statistics even in train mode, as the official code),
    and ``squeeze`` / ``excitate`` are then valid (unpadded) convs. :meth:`reparameterize` folds
    the BatchNorms into the convs (``fuse_bn_before_conv`` for ``bn1`` and ``bn2``, ``fuse_bn`` for
    ``bn3``, with the running statistics: the block in eval mode) and the ERBs into 3x3 convs;
    with the BN-value padding the fused block equals the training form on every pixel, borders
    included. Deploy form (official ``test_fmen.py`` / ``team33_LMRLFN.py`` keys): ``squeeze``,
    ``convs.{j}.conv{1,2}.rep_conv``, ``excitate``, all 3x3 convs with zero padding 1.

    Every operation is local (3x3 convs, eval-mode BatchNorm): the block is tile-exact with
    :attr:`receptive_radius` ``2 + 2 * num_blocks`` pixels.

    Args:
        channels: gated features C.
        mid_channels: width of the attention path (FMEN: 16, 12 in its warm-up HFAB).
        num_blocks: ERBs in the attention path (``up_blocks``; >= 0).
        ratio: expansion ratio of the ERBs' RRRBs (``attention_expand_ratio``, 2).
        use_bn: the training form with BatchNorms (ignored with ``deploy=True``).
        slope: LeakyReLU negative slope (0.1).
        deploy: build the fused form directly.
    """

    def __init__(self, channels, mid_channels, num_blocks=1, ratio=2, use_bn=True, slope=0.1, deploy=False):
        super().__init__()
        for name, value, low in (('channels', channels, 1), ('mid_channels', mid_channels, 1),
                                 ('num_blocks', num_blocks, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f'HFAB: {name}={value!r} must be an int >= {low}')
        if not isinstance(use_bn, bool):
            raise ValueError(f'HFAB: use_bn={use_bn!r} must be True or False')
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f'HFAB: slope={slope!r} must be a number')
        self.slope = float(slope)
        self.num_blocks = num_blocks
        self.deploy = bool(deploy)
        self.use_bn = use_bn and not self.deploy
        pad = 0 if self.use_bn else 1  # with BatchNorms the inputs are padded explicitly (BN value)
        if self.use_bn:
            self.bn1 = nn.BatchNorm2d(channels)
        self.squeeze = nn.Conv2d(channels, mid_channels, 3, padding=pad)
        self.convs = nn.Sequential(*[ERB(mid_channels, ratio, slope, deploy=self.deploy) for _ in range(num_blocks)])
        if self.use_bn:
            self.bn2 = nn.BatchNorm2d(mid_channels)
        self.excitate = nn.Conv2d(mid_channels, channels, 3, padding=pad)
        if self.use_bn:
            self.bn3 = nn.BatchNorm2d(channels)

    @property
    def receptive_radius(self):
        return 2 + 2 * self.num_blocks

    def _bn_padded(self, bn, t):
        return pad_with_value(bn(t), bn_scale_shift(bn)[1], (1, 1))

    def forward(self, x):
        t = self._bn_padded(self.bn1, x) if self.use_bn else x
        t = F.leaky_relu(self.squeeze(t), self.slope)
        t = F.leaky_relu(self.convs(t), self.slope)
        if self.use_bn:
            t = self.bn3(self.excitate(self._bn_padded(self.bn2, t)))
        else:
            t = self.excitate(t)
        return x * torch.sigmoid(t)

    @torch.no_grad()
    def reparameterize(self):
        """Fold the BatchNorms into ``squeeze`` and ``excitate`` (float64, cast once) and fuse the
        ERBs, in place; idempotent; returns the block."""
        reparameterize_children(self)
        if self.use_bn:
            def fused_conv(conv, weight, bias):
                new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, device=conv.weight.device,
                                dtype=conv.weight.dtype)
                new.weight.copy_(weight)
                new.bias.copy_(bias)
                return new

            def f64(module):
                return copy.deepcopy(module).double()

            sq, bn1 = f64(self.squeeze), f64(self.bn1)
            ex, bn2, bn3 = f64(self.excitate), f64(self.bn2), f64(self.bn3)
            self.squeeze = fused_conv(self.squeeze, *fuse_bn_before_conv(sq.weight, sq.bias, bn1))
            w, b = fuse_bn_before_conv(ex.weight, ex.bias, bn2)
            self.excitate = fused_conv(self.excitate, *fuse_bn(w, b, bn3))
            del self.bn1, self.bn2, self.bn3
            self.use_bn = False
        self.deploy = True
        return self


def hfab_warmup(channels, mid_channels, num_blocks, ratio=2, use_bn=True, deploy=False):
    """FMEN's warm-up stage, kept by LMRLFN: a 3x3 conv, then an HFAB ``mid_channels - 4`` wide
    (``mid_channels``: the width of the other HFABs); an ``nn.Sequential`` (official keys
    ``warmup.0``, ``warmup.1``)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                         HFAB(channels, mid_channels - 4, num_blocks, ratio, use_bn=use_bn, deploy=deploy))


def parse_up_blocks(cls_name, value, count):
    """``'2+1+1+1+1'`` -> ``(2, 1, 1, 1, 1)``: the ERBs of each HFAB, written as FMEN's training
    option ``--up_blocks`` (ints >= 1 joined by '+'); ``count`` entries are required. A malformed
    value is a one-line ValueError naming ``cls_name`` and the keyword."""
    parts = value.split('+')
    if not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"{cls_name}: up_blocks={value!r}: expected ints >= 1 joined by '+', e.g. '2+1+1+1+1'")
    if len(parts) != count:
        raise ValueError(f'{cls_name}: up_blocks={value!r}: expected {count} entries (the warm-up HFAB and one '
                         f'per block, num_block={count - 1}), got {len(parts)}')
    return tuple(int(p) for p in parts)


def format_up_blocks(blocks):
    """The inverse of :func:`parse_up_blocks`: ``(2, 1, 1)`` -> ``'2+1+1'``."""
    return '+'.join(str(b) for b in blocks)
