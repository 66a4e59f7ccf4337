"""Diverse Branch Block (DBB) of Ding, Zhang, Han, Ding, "Diverse Branch Block: Building a
Convolution as an Inception-like Unit", CVPR 2021 (§3; official code
DingXiaoH/DiverseBranchBlock@8d2b16b ``diversebranchblock.py``, ``dbb_transforms.py``, Apache-2.0),
and its subset LEDBB, the "Learnable Enhanced Diverse Branch Block" of DLFAN (team Sissie_Lab,
NTIRE 2023 ESR report §4.18, Fig. 29; official code N1koLiu/NTIRE2023_ESR@66069f0
``models/team17_DLFAN.py``, MIT).

The six DBB transforms map onto :mod:`.fusion`: I BatchNorm folding (:func:`~.fusion.fuse_bn`),
II parallel sum and VI kernel padding (:func:`~.fusion.merge_parallel`), III 1x1 -> kxk
(:func:`~.fusion.fuse_1x1_kxk`, per group: IV, the depth concatenation, is its grouped form),
V average pooling as a conv (:func:`~.fusion.avg_pool_kernel`).
"""
import torch
from torch import nn
from torch.nn import functional as F

from .base import ReparamBlock, pad_with_value
from .fusion import avg_pool_kernel, fuse_1x1_kxk, fuse_bn, identity_kernel, merge_parallel, pair
from .repvgg import conv_branch, fuse_branch

__all__ = ['DiverseBranchBlock', 'LEDBB', 'IdentityBasedConv1x1', 'BNAndPadLayer']


class IdentityBasedConv1x1(nn.Conv2d):
    """A bias-free 1x1 conv (channels -> channels, ``groups``) whose kernel is the identity plus a
    learnable ``weight`` initialized to zero (DBB's ``IdentityBasedConv1x1``, the first conv of the
    1x1 -> kxk branch when its inner width equals the input width). The identity is a
    non-persistent buffer: the state dict holds ``weight`` only, as the official one."""

    def __init__(self, channels, groups=1):
        super().__init__(channels, channels, 1, groups=groups, bias=False)
        self.register_buffer('id_tensor', identity_kernel(channels, 1, self.weight.detach(), groups),
                             persistent=False)
        nn.init.zeros_(self.weight)

    def get_actual_kernel(self):
        return self.weight + self.id_tensor

    def forward(self, x):
        return F.conv2d(x, self.get_actual_kernel(), None, groups=self.groups)


class BNAndPadLayer(nn.Module):
    """BatchNorm, then padding by ``pad`` with the BatchNorm's value on a zero input
    (``beta - running_mean * gamma / sqrt(running_var + eps)``, the running statistics and the
    affine parameters detached, as the official ``BNAndPadLayer``): the map a following valid
    (unpadded) conv or pooling reads is then exactly what the fused conv sees on its zero-padded
    input, border included. Keys ``bn.*``."""

    def __init__(self, pad, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps, momentum)
        self.pad = pair(pad, 'pad')

    def pad_values(self):
        bn = self.bn
        return bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)

    def forward(self, x):
        y = self.bn(x)
        return pad_with_value(y, self.pad_values(), self.pad) if any(self.pad) else y


class DiverseBranchBlock(ReparamBlock):
    """DBB (Ding et al., CVPR 2021, Fig. 2): four parallel branches, each ending in a BatchNorm,
    summed, then the activation; deploys to one kxk conv ``dbb_reparam`` (official keys):

    - ``dbb_origin``: kxk conv + BN (``conv``, ``bn``);
    - ``dbb_1x1``: 1x1 conv + BN (only when ``groups < out_channels``, as the official block);
    - ``dbb_1x1_kxk``: 1x1 conv (``idconv1``, :class:`IdentityBasedConv1x1`, when the inner width
      equals ``in_channels``; else ``conv1``) -> ``bn1`` (:class:`BNAndPadLayer`) -> kxk valid
      conv ``conv2`` -> ``bn2``;
    - ``dbb_avg`` (``with_avg``): 1x1 conv ``conv`` -> ``bn`` (:class:`BNAndPadLayer`) -> kxk
      average pooling ``avg`` -> ``avgbn``; for a depthwise block (``groups == out_channels``) only
      the pooling (zero padding counted in the mean) and ``avgbn``.

    Every conv is bias-free; every branch shares ``stride`` and ``groups`` and is centred on the
    same input pixel, so strided and grouped blocks fuse exactly (output ``ceil(h / stride)``). The
    fusion uses the BatchNorm running statistics, i.e. it equals the block in ``eval()`` mode; the
    BN-value padding makes it exact on border pixels.

    Args:
        in_channels, out_channels: feature counts.
        kernel_size: odd k or (kh, kw) (3 in DBB and DLFAN).
        act_type: activation after the sum (DBB's ``nonlinear``; 'linear' = none).
        deploy: build the fused form directly.
        stride, groups: of every branch.
        internal_channels: inner width of the 1x1 -> kxk branch (None: the official rule,
            ``in_channels`` if ``groups < out_channels`` else ``2 * in_channels``).
        with_avg: the 1x1 -> average-pooling branch (True in DBB; LEDBB has none).
        bias: must be True (folding a BatchNorm always produces a bias).
    """

    deploy_key = 'dbb_reparam'
    seq_name = 'dbb_1x1_kxk'  # official name of the 1x1 -> kxk branch

    def __init__(self, in_channels, out_channels, kernel_size=3, act_type='linear', deploy=False, *, stride=1,
                 groups=1, internal_channels=None, with_avg=True, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, act_type, deploy, bias, stride, groups)
        if not self.use_bias:
            self._refuse('bias', bias, 'is impossible: every branch ends in a BatchNorm, whose folding yields a bias')
        if not isinstance(with_avg, bool):
            self._refuse('with_avg', with_avg, 'must be True or False')
        depthwise = groups >= out_channels
        if internal_channels is None:
            internal_channels = in_channels if not depthwise else 2 * in_channels
        self._check_count('internal_channels', internal_channels)
        if internal_channels % groups:
            self._refuse('internal_channels', internal_channels, f'must be divisible by groups={groups}')
        if with_avg and depthwise and in_channels != out_channels:
            self._refuse('with_avg', True, f'needs in_channels == out_channels in a depthwise block '
                                           f'(the pooling keeps the {in_channels} input maps)')
        self.internal_channels = internal_channels
        self.with_avg = with_avg
        self.with_1x1 = not depthwise
        if deploy:
            return
        kh, kw = self.kernel_size
        args = dict(stride=stride, groups=groups, use_bn=True, bias=False)
        self.dbb_origin = conv_branch(in_channels, out_channels, self.kernel_size, **args)
        if self.with_1x1:
            self.dbb_1x1 = conv_branch(in_channels, out_channels, 1, **args)
        if with_avg:
            avg = nn.Sequential()
            if not depthwise:
                avg.add_module('conv', nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False))
                avg.add_module('bn', BNAndPadLayer((kh // 2, kw // 2), out_channels))
                avg.add_module('avg', nn.AvgPool2d(self.kernel_size, stride=stride, padding=0))
            else:
                avg.add_module('avg', nn.AvgPool2d(self.kernel_size, stride=stride, padding=(kh // 2, kw // 2)))
            avg.add_module('avgbn', nn.BatchNorm2d(out_channels))
            self.dbb_avg = avg
        seq = nn.Sequential()
        if internal_channels == in_channels:
            seq.add_module('idconv1', IdentityBasedConv1x1(in_channels, groups))
        else:
            seq.add_module('conv1', nn.Conv2d(in_channels, internal_channels, 1, groups=groups, bias=False))
        seq.add_module('bn1', BNAndPadLayer((kh // 2, kw // 2), internal_channels))
        seq.add_module('conv2', nn.Conv2d(internal_channels, out_channels, self.kernel_size, stride=stride,
                                          padding=0, groups=groups, bias=False))
        seq.add_module('bn2', nn.BatchNorm2d(out_channels))
        self.add_module(self.seq_name, seq)

    def forward_train(self, x):
        y = self.dbb_origin(x)
        if self.with_1x1:
            y = y + self.dbb_1x1(x)
        y = y + getattr(self, self.seq_name)(x)
        if self.with_avg:
            y = y + self.dbb_avg(x)
        return y

    def fuse(self):
        g = self.groups
        branches = [fuse_branch(self.dbb_origin)]
        if self.with_1x1:
            branches.append(fuse_branch(self.dbb_1x1))
        seq = getattr(self, self.seq_name)
        first = seq.idconv1.get_actual_kernel() if hasattr(seq, 'idconv1') else seq.conv1.weight
        w1, b1 = fuse_bn(first, None, seq.bn1.bn)  # b1: the value bn1 pads with
        w2, b2 = fuse_bn(seq.conv2.weight, None, seq.bn2)
        branches.append(fuse_1x1_kxk(w1, b1, w2, b2, g))
        if self.with_avg:
            pool = avg_pool_kernel(self.out_channels, self.kernel_size, w2, g)
            wa, ba = fuse_bn(pool, None, self.dbb_avg.avgbn)
            if hasattr(self.dbb_avg, 'conv'):
                w1, b1 = fuse_bn(self.dbb_avg.conv.weight, None, self.dbb_avg.bn.bn)
                wa, ba = fuse_1x1_kxk(w1, b1, wa, ba, g)
            branches.append((wa, ba))
        return merge_parallel(branches, self.kernel_size)


class LEDBB(DiverseBranchBlock):
    """DLFAN's "Learnable Enhanced Diverse Branch Block" (NTIRE 2023 ESR report §4.18, Fig. 29;
    official ``LearnableEnhanced_DiverseBranchBlock`` of N1koLiu/NTIRE2023_ESR
    ``models/team17_DLFAN.py``): DBB without the average-pooling branch, i.e. kxk+BN (``dbb_origin``)
    + 1x1+BN (``dbb_1x1``) + [identity-based 1x1 -> BN-value padding -> kxk valid -> BN]
    (``dbb_1x1_kxk_1``: ``idconv1``, ``bn1.bn``, ``conv2``, ``bn2``), deploy key ``dbb_reparam``.

    "Learnable" is nothing beyond DBB's own learnable parts: the official code has no branch
    weights; the 1x1 of the sequential branch is DBB's identity plus a learnable (zero-initialized)
    delta, and every branch has BatchNorm affine parameters. The official checkpoints hold exactly
    these tensors. ``with_avg=True`` adds DBB's pooling branch (``dbb_avg``) anyway.
    """

    seq_name = 'dbb_1x1_kxk_1'

    def __init__(self, in_channels, out_channels, kernel_size=3, act_type='linear', deploy=False, *, stride=1,
                 groups=1, internal_channels=None, with_avg=False, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, act_type, deploy, stride=stride, groups=groups,
                         internal_channels=internal_channels, with_avg=with_avg, bias=bias)
