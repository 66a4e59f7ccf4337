"""Edge-oriented Convolution Block (ECB) of ECBSR (Zhang et al., "Edge-oriented Convolution Block for
Real-time Super Resolution on Mobile Devices", ACM MM 2021, §3)."""
import torch
from torch import nn
from torch.nn import functional as F

from .base import ReparamBlock
from .fusion import dense_depthwise, fuse_1x1_kxk, identity_kernel, merge_parallel

__all__ = ['ECB', 'SeqConv1x1Conv3x3', 'SeqConv1x1Edge', 'EDGE_MASKS']

EDGE_MASKS = {
    'sobelx': [[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]],
    'sobely': [[1., 2., 1.], [0., 0., 0.], [-1., -2., -1.]],
    'laplacian': [[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]],
}


def _conv1x1_params(in_channels, out_channels, bias=True):
    conv = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
    return conv.weight, conv.bias


class SeqConv1x1Conv3x3(nn.Module):
    """ECB branch: 1x1 (in -> mid) then 3x3 (mid -> out) on the bias-padded map. Keys k0,b0,k1,b1
    (``b0``/``b1`` are None with ``bias=False``)."""

    def __init__(self, in_channels, out_channels, mid_channels, bias=True):
        super().__init__()
        k0, b0 = _conv1x1_params(in_channels, mid_channels, bias)
        conv1 = nn.Conv2d(mid_channels, out_channels, 3, bias=bias)
        self.k0 = k0
        self.register_parameter('b0', b0)
        self.k1 = conv1.weight
        self.register_parameter('b1', conv1.bias)

    def forward(self, x):
        return F.conv2d(F.conv2d(x, self.k0, self.b0, padding=1), self.k1, self.b1)

    def fuse(self):
        return fuse_1x1_kxk(self.k0, self.b0, self.k1, self.b1)


class SeqConv1x1Edge(nn.Module):
    """ECB branch: 1x1 (in -> out) then a fixed depthwise edge filter (Sobel-x, Sobel-y or
    Laplacian) times a learnable per-channel ``scale``, plus ``bias``. The mask is a buffer. With
    ``bias=False`` neither ``b0`` nor ``bias`` exists (both None)."""

    def __init__(self, in_channels, out_channels, edge, bias=True):
        super().__init__()
        k0, b0 = _conv1x1_params(in_channels, out_channels, bias)
        self.k0 = k0
        self.register_parameter('b0', b0)
        self.scale = nn.Parameter(torch.randn(out_channels, 1, 1, 1) * 1e-3)
        self.register_parameter('bias', nn.Parameter(torch.randn(out_channels) * 1e-3) if bias else None)
        mask = torch.tensor(EDGE_MASKS[edge]).expand(out_channels, 1, 3, 3).clone()
        self.register_buffer('mask', mask)

    def forward(self, x):
        y = F.conv2d(x, self.k0, self.b0, padding=1)
        return F.conv2d(y, self.scale * self.mask, self.bias, groups=y.shape[1])

    def fuse(self):
        return fuse_1x1_kxk(self.k0, self.b0, dense_depthwise(self.scale * self.mask), self.bias)


class ECB(ReparamBlock):
    """3x3 conv + (1x1 -> 3x3) + (1x1 -> Sobel-x) + (1x1 -> Sobel-y) + (1x1 -> Laplacian)
    [+ identity], then the activation. Training keys follow xindongzhang/ECBSR (``conv3x3``,
    ``conv1x1_3x3``, ``conv1x1_sbx``, ``conv1x1_sby``, ``conv1x1_lpl``); the deploy conv is
    ``rbr_reparam`` as in the AIS 2024 ECB-based entries.

    Args:
        in_channels, out_channels: feature counts.
        depth_multiplier: width of the 1x1 -> 3x3 branch relative to ``out_channels``.
        act_type: activation after the block ('prelu' in ECBSR).
        with_idt: add the identity (default False, as ECBSR); True with in != out is refused.
        deploy: build the fused form directly.
        bias: with False every branch (the 1x1s' ``b0``, the 3x3s' ``b1``, the edge branches'
            ``bias``) and the fused conv are bias-free; the b0 padding is then zero padding.
    """

    deploy_key = 'rbr_reparam'

    def __init__(self, in_channels, out_channels, depth_multiplier=2.0, act_type='prelu', with_idt=False,
                 deploy=False, bias=True):
        super().__init__(in_channels, out_channels, 3, act_type, deploy, bias)
        mid = self._check_ratio('depth_multiplier', depth_multiplier, out_channels)
        self.with_idt = self._resolve_with_idt(False if with_idt is None else with_idt)
        if deploy:
            return
        self.conv3x3 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.conv1x1_3x3 = SeqConv1x1Conv3x3(in_channels, out_channels, mid, bias)
        self.conv1x1_sbx = SeqConv1x1Edge(in_channels, out_channels, 'sobelx', bias)
        self.conv1x1_sby = SeqConv1x1Edge(in_channels, out_channels, 'sobely', bias)
        self.conv1x1_lpl = SeqConv1x1Edge(in_channels, out_channels, 'laplacian', bias)

    def _branches(self):
        return self.conv1x1_3x3, self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl

    def forward_train(self, x):
        y = self.conv3x3(x)
        for branch in self._branches():
            y = y + branch(x)
        return y + x if self.with_idt else y

    def fuse(self):
        branches = [(self.conv3x3.weight, self.conv3x3.bias)] + [branch.fuse() for branch in self._branches()]
        if self.with_idt:
            branches.append((identity_kernel(self.out_channels, 3, self.conv3x3.weight), None))
        return merge_parallel(branches, 3)
