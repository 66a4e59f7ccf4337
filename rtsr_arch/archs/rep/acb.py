"""Asymmetric Convolution Block (ACB) of ACNet (Ding et al., "ACNet: Strengthening the Kernel
Skeletons for Powerful CNN via Asymmetric Convolution Blocks", ICCV 2019, §3; official code
DingXiaoH/ACNet ``acnet/acb.py``)."""
from torch import nn

from .base import ReparamBlock
from .fusion import fuse_bn, identity_kernel, merge_parallel
from .repvgg import conv_branch

__all__ = ['ACBlock']


class ACBlock(ReparamBlock):
    """kxk + kx1 + 1xk convs in parallel, each with BatchNorm, [+ identity], then the activation;
    deploys to one kxk conv ``fused_conv`` (ACNet §3: BN folding, then the asymmetric kernels
    are added to the square kernel's central column / row, the "skeleton").

    Training keys follow the official ``ACBlock``: ``square_conv``/``square_bn`` (kxk),
    ``ver_conv``/``ver_bn`` (kx1), ``hor_conv``/``hor_bn`` (1xk); the optional identity is
    ``idt_bn`` (a BatchNorm, RepVGG-style) or, with ``use_bn=False``, a plain ``+ x``. Every branch
    pads by half its kernel and shares ``stride`` and ``groups``, so all kernels stay centred on the
    same input pixel and a strided block fuses exactly (output ``ceil(h / stride)``).

    Args:
        in_channels, out_channels: feature counts.
        kernel_size: odd k >= 3 (3 in ACNet).
        act_type: activation after the block.
        deploy: build the fused form directly.
        stride, groups: of every branch (groups == in == out: depthwise, as in ACNet's MobileNet).
        bias: False needs ``use_bn=False`` (folding a BatchNorm always produces a bias).
        use_bn: BatchNorm after every branch (official) or plain convs with ``bias``.
        with_idt: add the identity (default False, as ACNet); True is refused when in != out or
            stride != 1; None: when possible.
    """

    deploy_key = 'fused_conv'

    def __init__(self, in_channels, out_channels, kernel_size=3, act_type='linear', deploy=False, *, stride=1,
                 groups=1, bias=True, use_bn=True, with_idt=False):
        super().__init__(in_channels, out_channels, kernel_size, act_type, deploy, bias, stride, groups)
        if self.kernel_size[0] != self.kernel_size[1]:
            self._refuse('kernel_size', kernel_size, 'must be square (one odd int k)')
        if self.kernel_size[0] < 3:
            self._refuse('kernel_size', kernel_size, 'must be >= 3 (the 1xk and kx1 branches would equal the kxk one)')
        self.use_bn = self._resolve_use_bn(use_bn)
        self.with_idt = self._resolve_with_idt(with_idt)
        if deploy:
            return
        k = self.kernel_size[0]
        args = dict(stride=stride, groups=groups, use_bn=use_bn, bias=bias)
        for name, size in (('square', (k, k)), ('ver', (k, 1)), ('hor', (1, k))):
            branch = conv_branch(in_channels, out_channels, size, **args)
            self.add_module(f'{name}_conv', branch.conv)
            if use_bn:
                self.add_module(f'{name}_bn', branch.bn)
        if self.with_idt and use_bn:
            self.idt_bn = nn.BatchNorm2d(in_channels)

    def forward_train(self, x):
        y = 0
        for name in ('square', 'ver', 'hor'):
            t = getattr(self, f'{name}_conv')(x)
            y = y + (getattr(self, f'{name}_bn')(t) if self.use_bn else t)
        if self.with_idt:
            y = y + (self.idt_bn(x) if self.use_bn else x)
        return y

    def fuse(self):
        branches = []
        for name in ('square', 'ver', 'hor'):
            conv = getattr(self, f'{name}_conv')
            bn = getattr(self, f'{name}_bn') if self.use_bn else None
            branches.append(fuse_bn(conv.weight, conv.bias, bn) if bn is not None else (conv.weight, conv.bias))
        if self.with_idt:
            wi = identity_kernel(self.in_channels, self.kernel_size, self.square_conv.weight, self.groups)
            branches.append(fuse_bn(wi, None, self.idt_bn) if self.use_bn else (wi, None))
        return merge_parallel(branches, self.kernel_size)
