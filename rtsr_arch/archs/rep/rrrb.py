"""FMEN's residual-in-residual reparameterizable block (RRRB), RT4KSR's "RRB" (RT4KSR paper, Fig. 3b)."""
from torch import nn

from .base import ReparamBlock
from .fusion import fuse_1x1_kxk, fuse_kxk_1x1, identity_kernel

__all__ = ['RRRB']


class RRRB(ReparamBlock):
    """Expand 1x1 -> 3x3 (+ inner identity) -> reduce 1x1 (+ outer identity); deploys to one 3x3.

    The expand conv zero-pads its *input*, so the 3x3 sees the expand bias on its border — the
    "bias padding" that makes the fusion exact on border pixels (Du et al., FMEN, CVPRW 2022, §3).
    Attribute names follow the official FMEN / RT4KSR code: ``expand_conv``, ``fea_conv``,
    ``reduce_conv``; deploy conv ``rep_conv``.

    Args:
        channels: input and output features.
        ratio: expansion ratio of the inner feature (2 in FMEN and RT4KSR); inner width
            ``int(ratio * channels)``.
        act_type: activation after the block (RT4KSR puts its activations outside: 'linear').
        deploy: build the fused form directly.
        bias: with False every conv (the expand conv included: its bias padding is then zero
            padding) and the fused ``rep_conv`` are bias-free.
    """

    def __init__(self, channels, ratio=2, act_type='linear', deploy=False, bias=True):
        self._check_count('channels', channels)
        super().__init__(channels, channels, 3, act_type, deploy, bias)
        mid = self._check_ratio('ratio', ratio, channels)
        if deploy:
            return
        self.expand_conv = nn.Conv2d(channels, mid, 1, padding=1, bias=bias)
        self.fea_conv = nn.Conv2d(mid, mid, 3, bias=bias)
        self.reduce_conv = nn.Conv2d(mid, channels, 1, bias=bias)

    def forward_train(self, x):
        t = self.expand_conv(x)
        u = self.fea_conv(t) + t[:, :, 1:-1, 1:-1]
        return self.reduce_conv(u) + x

    def fuse(self):
        k1 = self.fea_conv.weight + identity_kernel(self.fea_conv.out_channels, 3, self.fea_conv.weight)
        w, b = fuse_1x1_kxk(self.expand_conv.weight, self.expand_conv.bias, k1, self.fea_conv.bias)
        w, b = fuse_kxk_1x1(w, b, self.reduce_conv.weight, self.reduce_conv.bias)
        return w + identity_kernel(self.out_channels, 3, w), b
