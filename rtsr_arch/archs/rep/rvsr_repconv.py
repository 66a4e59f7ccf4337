"""RVSR's RepConv (AIS 2024 RTSR report, §3.5, Fig. 9b; official code huai-chang/RVSR
``models/train_arch.py``): two 1x1 -> 3x3 -> 1x1 branches, a 3x3, a 1x1 and the identity, summed."""
from torch import nn

from .base import ReparamBlock
from .fusion import fuse_1x1_kxk_1x1, identity_kernel, merge_parallel

__all__ = ['RVSRRepConv']


class RVSRRepConv(ReparamBlock):
    """``reduce(fea(expand(x))) + reduce1(fea1(expand1(x))) + res_conv3x3(x) + res_conv1x1(x) + x``;
    deploys to one 3x3 conv ``rep_conv``.

    Each 1-3-1 branch is an RRRB without the inner identity (FMEN, Du et al., CVPRW 2022): the
    expand conv zero-pads its *input*, so the valid 3x3 sees the expand bias on its border — the
    official ``pad_tensor(t, b0)`` bias padding, which makes the fusion exact on border pixels.
    Attribute names are the official ones (``expand_conv``, ``fea_conv``, ``reduce_conv``,
    ``expand1_conv``, ``fea1_conv``, ``reduce1_conv``, ``res_conv3x3``, ``res_conv1x1``; deploy
    ``rep_conv``), so official training and deploy checkpoints load strictly.

    Args:
        channels: input and output features.
        ratio: expansion of the two 1-3-1 branches (2 in RVSR); inner width ``int(ratio * channels)``.
        act_type: activation after the block (RVSR has none: 'linear').
        deploy: build the fused form directly.
        bias: with False every conv (the expand convs included: their bias padding is then zero
            padding) and the fused ``rep_conv`` are bias-free.
    """

    def __init__(self, channels, ratio=2, act_type='linear', deploy=False, bias=True):
        self._check_count('channels', channels)
        super().__init__(channels, channels, 3, act_type, deploy, bias)
        mid = self._check_ratio('ratio', ratio, channels)
        if deploy:
            return
        for suffix in ('', '1'):
            self.add_module(f'expand{suffix}_conv', nn.Conv2d(channels, mid, 1, padding=1, bias=bias))
            self.add_module(f'fea{suffix}_conv', nn.Conv2d(mid, mid, 3, bias=bias))
            self.add_module(f'reduce{suffix}_conv', nn.Conv2d(mid, channels, 1, bias=bias))
        self.res_conv3x3 = nn.Conv2d(channels, channels, 3, padding=1, bias=bias)
        self.res_conv1x1 = nn.Conv2d(channels, channels, 1, bias=bias)

    def _branches(self):
        return ((self.expand_conv, self.fea_conv, self.reduce_conv),
                (self.expand1_conv, self.fea1_conv, self.reduce1_conv))

    def forward_train(self, x):
        y = self.res_conv3x3(x) + self.res_conv1x1(x) + x
        for expand, fea, reduce in self._branches():
            y = y + reduce(fea(expand(x)))
        return y

    def fuse(self):
        branches = [(self.res_conv3x3.weight, self.res_conv3x3.bias),
                    (self.res_conv1x1.weight, self.res_conv1x1.bias),
                    (identity_kernel(self.out_channels, 3, self.res_conv3x3.weight), None)]
        for expand, fea, reduce in self._branches():
            branches.append(fuse_1x1_kxk_1x1(expand.weight, expand.bias, fea.weight, fea.bias, reduce.weight,
                                             reduce.bias))
        return merge_parallel(branches, 3)
