"""FMEN's residual-in-residual rep block generalised to any input and output width: a drop-in
training form for a plain 3x3 conv ``in_channels -> out_channels`` (DIPNet's reparameterized
RRFB, NTIRE 2023 ESR report §4.1, uses one in place of each of RLFB's three 3x3 convs)."""
from torch import nn

from .base import ReparamBlock
from .fusion import fuse_1x1_kxk_1x1, identity_kernel

__all__ = ['RRRBConv']


class RRRBConv(ReparamBlock):
    """Expand 1x1 ``in -> mid`` -> 3x3 ``mid -> mid`` (+ inner identity on the expanded map) ->
    reduce 1x1 ``mid -> out`` (+ outer identity when ``in == out``); deploys to one 3x3 conv.

    With ``in_channels == out_channels`` it is FMEN's RRRB (:class:`~rtsr_arch.archs.rep.RRRB`,
    this block with one width: Du et al., FMEN, CVPRW 2022, §3). With different widths the
    outer identity is impossible and left out; the inner identity (a 1x1 path ``reduce . expand``)
    remains. The expand conv zero-pads its *input*, so the 3x3 sees the expand bias on its border
    ("bias padding"): the fusion is exact on border pixels. Attribute names are FMEN's
    (``expand_conv``, ``fea_conv``, ``reduce_conv``); deploy conv ``rep_conv``.

    Args:
        in_channels, out_channels: features in and out.
        ratio: expansion of the inner features relative to the input, ``mid = int(ratio * in_channels)``
            (2 in FMEN).
        act_type: activation after the block ('linear': the caller applies its own).
        deploy: build the fused form directly.
        bias: with False every conv (the expand conv included: its bias padding is then zero
            padding) and the fused ``rep_conv`` are bias-free.
    """

    def __init__(self, in_channels, out_channels, ratio=2, act_type='linear', deploy=False, bias=True):
        super().__init__(in_channels, out_channels, 3, act_type, deploy, bias)
        mid = self._check_ratio('ratio', ratio, in_channels)
        self.with_idt = in_channels == out_channels
        if deploy:
            return
        self.expand_conv = nn.Conv2d(in_channels, mid, 1, padding=1, bias=bias)
        self.fea_conv = nn.Conv2d(mid, mid, 3, bias=bias)
        self.reduce_conv = nn.Conv2d(mid, out_channels, 1, bias=bias)

    def forward_train(self, x):
        t = self.expand_conv(x)
        y = self.reduce_conv(self.fea_conv(t) + t[:, :, 1:-1, 1:-1])
        return y + x if self.with_idt else y

    def fuse(self):
        k1 = self.fea_conv.weight + identity_kernel(self.fea_conv.out_channels, 3, self.fea_conv.weight)
        w, b = fuse_1x1_kxk_1x1(self.expand_conv.weight, self.expand_conv.bias, k1, self.fea_conv.bias,
                                self.reduce_conv.weight, self.reduce_conv.bias)
        if self.with_idt:
            w = w + identity_kernel(self.out_channels, 3, w)
        return w, b
