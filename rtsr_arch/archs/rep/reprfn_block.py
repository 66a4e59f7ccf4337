"""RepRFN's RepBlock (team CUC_SR, NTIRE 2023 ESR report §4.16, Fig. 25; Deng, Yuan, Deng, Lu,
"Reparameterized Residual Feature Network for Lightweight Image Super-Resolution", CVPRW 2023;
official code laonafahaodange/NTIRE2023-ESR-RepRFN@4ddbab8 ``models/team07_RepRFN.py``, MIT)."""
from torch import nn

from .base import ReparamBlock
from .ecb import SeqConv1x1Edge
from .fusion import fuse_1x1_kxk, identity_kernel, merge_parallel

__all__ = ['RepRFNBlock']

EDGES = ('sbx', 'sby', 'lpl')
_EDGE_MASK = {'sbx': 'sobelx', 'sby': 'sobely', 'lpl': 'laplacian'}


class RepRFNBlock(ReparamBlock):
    """kxk + kx1 + 1xk + 1x1 convs, 1x1 -> kxk (bias-free), the identity and ECB's three
    1x1 -> edge-filter branches (Sobel-x, Sobel-y, Laplacian, with their bias padding), summed,
    then the activation; deploys to one kxk conv ``rbr_reparam`` (official keys).

    Training keys are the official ones: ``rbr_3x3_branch``, ``rbr_3x1_branch``, ``rbr_1x3_branch``,
    ``rbr_1x1_branch`` (convs with bias), ``rbr_1x1_3x3_branch_1x1`` (1x1, in -> ``expand`` · in,
    no bias) and ``rbr_1x1_3x3_branch_3x3`` (kxk, zero padding, no bias: exact because the 1x1 has
    no bias), ``rbr_conv1x1_{sbx,sby,lpl}_branch.{k0,b0,scale,bias,mask}`` (the official
    ``SeqConv3x3``; the fixed ``mask`` is a buffer here, an ``nn.Parameter`` with
    ``requires_grad=False`` there: same key, so official training state dicts load strictly, but it
    is not counted as a parameter). The 3x1 and 1x3 kernels are named after their (kh, kw) shapes
    as in the official code (``rbr_3x1_branch`` is 3 high and 1 wide); with ``kernel_size`` k the
    "3" branches are k long, the edge filters stay 3x3 (centred in the kxk kernel).

    Args:
        in_channels, out_channels: feature counts.
        act_type: activation after the sum (official: LeakyReLU, slope 0.05).
        deploy: build the fused form directly.
        kernel_size: odd k >= 3 (3 in RepRFN).
        expand: inner width of the 1x1 -> kxk branch relative to ``in_channels`` (2).
        with_idt: None (official: the identity whenever in == out), True (required) or False.
        bias: False makes every branch and the fused conv bias-free (the edge branches' ``b0``
            and ``bias`` too, so their padding is zero padding).
    """

    deploy_key = 'rbr_reparam'

    def __init__(self, in_channels, out_channels, act_type='lrelu', deploy=False, *, kernel_size=3, expand=2,
                 with_idt=None, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, act_type, deploy, bias)
        k = self.kernel_size[0]
        if self.kernel_size[1] != k or k < 3:
            self._refuse('kernel_size', kernel_size, 'must be one odd int >= 3 (the edge filters are 3x3)')
        mid = self._check_ratio('expand', expand, in_channels)
        self.with_idt = self._resolve_with_idt(with_idt)
        self.mid_channels = mid
        if deploy:
            return
        p = k // 2
        self.rbr_3x3_branch = nn.Conv2d(in_channels, out_channels, k, padding=p, bias=bias)
        self.rbr_3x1_branch = nn.Conv2d(in_channels, out_channels, (k, 1), padding=(p, 0), bias=bias)
        self.rbr_1x3_branch = nn.Conv2d(in_channels, out_channels, (1, k), padding=(0, p), bias=bias)
        self.rbr_1x1_branch = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.rbr_1x1_3x3_branch_1x1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.rbr_1x1_3x3_branch_3x3 = nn.Conv2d(mid, out_channels, k, padding=p, bias=False)
        for edge in EDGES:
            self.add_module(f'rbr_conv1x1_{edge}_branch', SeqConv1x1Edge(in_channels, out_channels,
                                                                        _EDGE_MASK[edge], bias))

    def _plain(self):
        return self.rbr_3x3_branch, self.rbr_3x1_branch, self.rbr_1x3_branch, self.rbr_1x1_branch

    def _edges(self):
        return [getattr(self, f'rbr_conv1x1_{edge}_branch') for edge in EDGES]

    def forward_train(self, x):
        y = 0
        for conv in self._plain():
            y = y + conv(x)
        y = y + self.rbr_1x1_3x3_branch_3x3(self.rbr_1x1_3x3_branch_1x1(x))
        if self.with_idt:
            y = y + x
        for branch in self._edges():
            y = y + branch(x)
        return y

    def fuse(self):
        branches = [(conv.weight, conv.bias) for conv in self._plain()]
        branches.append(fuse_1x1_kxk(self.rbr_1x1_3x3_branch_1x1.weight, None, self.rbr_1x1_3x3_branch_3x3.weight,
                                     None))
        branches += [branch.fuse() for branch in self._edges()]
        if self.with_idt:
            branches.append((identity_kernel(self.out_channels, self.kernel_size, self.rbr_3x3_branch.weight), None))
        return merge_parallel(branches, self.kernel_size)
