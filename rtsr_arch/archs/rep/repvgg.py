"""RepVGG block (Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021, §3.3)."""
from collections import OrderedDict

from torch import nn

from .base import ReparamBlock
from .fusion import fuse_bn, identity_kernel, merge_parallel

__all__ = ['RepVGGBlock']


def conv_branch(in_channels, out_channels, kernel_size, stride, groups, use_bn, bias):
    """``conv`` (+ ``bn``) as an ``nn.Sequential``: the official ``conv_bn`` layout (bias-free conv
    + BatchNorm), or with ``use_bn=False`` a plain conv with ``bias``. Padding: half the kernel."""
    kh, kw = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
    layers = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                        padding=(kh // 2, kw // 2), groups=groups, bias=bias and not use_bn))
    if use_bn:
        layers['bn'] = nn.BatchNorm2d(out_channels)
    return nn.Sequential(layers)


def fuse_branch(branch):
    """(weight, bias) of a :func:`conv_branch`, BatchNorm folded (running statistics)."""
    w, b = branch.conv.weight, branch.conv.bias
    return fuse_bn(w, b, branch.bn) if hasattr(branch, 'bn') else (w, b)


class RepVGGBlock(ReparamBlock):
    """``rbr_dense`` (kxk conv + BN) + ``rbr_1x1`` (1x1 conv + BN) + ``rbr_identity`` (BN), then
    the activation; deploys to ``rbr_reparam`` (official DingXiaoH/RepVGG keys and behaviour).

    As in the official code the identity branch is added whenever it is possible (in == out and
    stride 1); ``with_idt=True`` requires it (ValueError otherwise), ``with_idt=False`` drops it.
    The 1x1 branch shares stride and groups and sits on the kxk's centre tap, so a strided block
    fuses exactly (output ``ceil(h / stride)``). The fusion uses the BatchNorm running statistics,
    i.e. it equals the block in ``eval()`` mode. With ``use_bn=False`` the branches are plain convs
    with ``bias`` and the identity is a plain ``+ x`` (the bias-free blocks of CASR / RepTCN).

    Args:
        in_channels, out_channels: feature counts.
        act_type: activation after the block ('relu' in RepVGG).
        deploy: build the fused form directly.
        kernel_size: odd size of the dense branch (3 in RepVGG).
        stride, groups: of every branch (RepVGG uses stride 2 to downsample and groups for its
            g2/g4 variants; groups == in == out is depthwise).
        bias: False needs ``use_bn=False`` (folding a BatchNorm always produces a bias).
        use_bn: BatchNorm after every branch (official) or plain convs.
        with_idt: None (official: when possible), True or False.
    """

    deploy_key = 'rbr_reparam'

    def __init__(self, in_channels, out_channels, act_type='relu', deploy=False, *, kernel_size=3, stride=1,
                 groups=1, bias=True, use_bn=True, with_idt=None):
        super().__init__(in_channels, out_channels, kernel_size, act_type, deploy, bias, stride, groups)
        self.use_bn = self._resolve_use_bn(use_bn)
        self.with_idt = self._resolve_with_idt(with_idt)
        if deploy:
            return
        args = dict(stride=stride, groups=groups, use_bn=use_bn, bias=bias)
        self.rbr_dense = conv_branch(in_channels, out_channels, self.kernel_size, **args)
        self.rbr_1x1 = conv_branch(in_channels, out_channels, 1, **args)
        self.rbr_identity = None
        if self.with_idt:
            self.rbr_identity = nn.BatchNorm2d(in_channels) if use_bn else nn.Identity()

    def forward_train(self, x):
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        return y if self.rbr_identity is None else y + self.rbr_identity(x)

    def fuse(self):
        branches = [fuse_branch(self.rbr_dense), fuse_branch(self.rbr_1x1)]
        if self.rbr_identity is not None:
            wi = identity_kernel(self.in_channels, self.kernel_size, branches[0][0], self.groups)
            branches.append(fuse_bn(wi, None, self.rbr_identity) if self.use_bn else (wi, None))
        return merge_parallel(branches, self.kernel_size)
