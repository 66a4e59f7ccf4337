"""RepVGG block (Ding et al., CVPR 2021): 3x3+BN, 1x1+BN and identity-BN branches."""
from collections import OrderedDict

from torch import nn

from .base import ReparamBlock
from .fusion import fuse_bn, identity_kernel, pad_kernel

__all__ = ['RepVGGBlock']


def _conv_bn(in_channels, out_channels, kernel_size):
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        bn=nn.BatchNorm2d(out_channels)))


class RepVGGBlock(ReparamBlock):
    """``rbr_dense`` (3x3 conv + BN) + ``rbr_1x1`` (1x1 conv + BN) + ``rbr_identity`` (BN, when
    in == out), then the activation; deploys to ``rbr_reparam`` (official DingXiaoH/RepVGG keys).

    The fusion uses the BatchNorm running statistics, i.e. it equals the block in ``eval()`` mode.
    """

    deploy_key = 'rbr_reparam'

    def __init__(self, in_channels, out_channels, act_type='relu', deploy=False):
        super().__init__(in_channels, out_channels, 3, act_type, deploy)
        if deploy:
            return
        self.rbr_dense = _conv_bn(in_channels, out_channels, 3)
        self.rbr_1x1 = _conv_bn(in_channels, out_channels, 1)
        self.rbr_identity = nn.BatchNorm2d(in_channels) if in_channels == out_channels else None

    def forward_train(self, x):
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        return y if self.rbr_identity is None else y + self.rbr_identity(x)

    def fuse(self):
        w, b = fuse_bn(self.rbr_dense.conv.weight, None, self.rbr_dense.bn)
        w1, b1 = fuse_bn(self.rbr_1x1.conv.weight, None, self.rbr_1x1.bn)
        w, b = w + pad_kernel(w1, 3), b + b1
        if self.rbr_identity is not None:
            wi, bi = fuse_bn(identity_kernel(self.in_channels, 3, w), None, self.rbr_identity)
            w, b = w + wi, b + bi
        return w, b
