"""Nested Reparameterization Block (NRB) of ANUNet (team Lenovo / LeRTSR, AIS 2024 Real-Time 4K SR
challenge report, §3.6, Fig. 10): FMEN's RRRB ("the ERB RepBlock") as the outer structure, an
enhanced ECB as the inner one; deploys to one 3x3 conv ``rep_conv``."""
from torch import nn

from .base import ReparamBlock
from .ecb import ECB
from .fusion import fuse_1x1_kxk_1x1, identity_kernel

__all__ = ['NRB']


class NRB(ReparamBlock):
    """1x1 expand -> enhanced ECB (ECB's five branches + identity) -> 1x1 reduce, + the block input.

    The report describes the training form only in words (the team published the deploy form
    alone: ``zhoumenghan/AIS2024_ANUNet`` ``NRB.rep_conv``): "the outer structure is the ERB
    RepBlock [FMEN's RRRB], the inner structure is an enhanced Edge-oriented Convolution Block
    (eECB), which includes multiple branches". Our reading, chosen so that it fuses exactly:

    - outer (RRRB, Du et al., FMEN, CVPRW 2022): ``expand_conv`` 1x1 (C -> rC) and
      ``reduce_conv`` 1x1 (rC -> C) around the inner block, plus the outer identity ``+ x``;
    - inner (``eecb``): the block library's :class:`~rtsr_arch.archs.rep.ECB` on the rC expanded
      features — 3x3 + (1x1 -> 3x3) + 1x1 -> Sobel-x / Sobel-y / Laplacian — *with* its identity
      branch (ECBSR's ``with_idt=True``). That identity is exactly RRRB's inner residual (``fea_conv(t)
      + t``): the "enhancement" over ECBSR's ECB is the residual connection RRRB puts around its
      3x3 feature conv, and RRRB's plain 3x3 becomes ECB's five branches.

    Border exactness (bias padding, nested): ``expand_conv`` zero-pads its *input* (``padding=1``),
    so the expanded map ``t_pad`` is one pixel larger with the expand bias on its border. The
    inner ECB runs on ``t_pad`` and only the centre of its output is kept: a centre pixel never
    reads the ECB's own zero padding (the 3x3 branches read ``t_pad``, the ECB's 1x1 convs are
    applied to ``t_pad`` itself, border included), so the inner block acts as a *valid* 3x3
    conv on ``t_pad`` and the whole NRB equals one zero-padded 3x3 conv on ``x``, border pixels
    included. (Computing the ECB on the larger map costs ``((H + 2) / H)^2`` more in training
    only.) Fusion: ECB -> one 3x3 (its own fuse, identity included), then
    :func:`~.fusion.fuse_1x1_kxk_1x1` with the expand and reduce convs, plus the outer identity
    kernel.

    Args:
        channels: input and output features C.
        ratio: expansion ratio r of the expanded features (2 as FMEN's RRRB); width ``int(r * C)``.
        depth_multiplier: width of the inner ECB's 1x1 -> 3x3 branch relative to ``int(r * C)``
            (2.0 as the ECBs of ANUNet).
        act_type: activation after the block (ANUNet applies its GELU outside: 'linear').
        deploy: build the fused form directly.
        bias: with False every conv (expand, every ECB branch, reduce) and the fused ``rep_conv``
            are bias-free; the expand conv's border is then zero.
    """

    deploy_key = 'rep_conv'

    def __init__(self, channels, ratio=2, depth_multiplier=2.0, act_type='linear', deploy=False, bias=True):
        self._check_count('channels', channels)
        super().__init__(channels, channels, 3, act_type, deploy, bias)
        mid = self._check_ratio('ratio', ratio, channels)
        self._check_ratio('depth_multiplier', depth_multiplier, mid)
        if deploy:
            return
        self.expand_conv = nn.Conv2d(channels, mid, 1, padding=1, bias=bias)
        self.eecb = ECB(mid, mid, depth_multiplier, act_type='linear', with_idt=True, bias=bias)
        self.reduce_conv = nn.Conv2d(mid, channels, 1, bias=bias)

    def forward_train(self, x):
        t_pad = self.expand_conv(x)  # (H + 2) x (W + 2), the expand bias on the border
        u = self.eecb.forward_train(t_pad)[:, :, 1:-1, 1:-1]  # the valid part: eECB(t) + t
        return self.reduce_conv(u) + x

    def fuse(self):
        k, b = self.eecb.fuse()  # 3x3 on the expanded features, its identity included
        w, b = fuse_1x1_kxk_1x1(self.expand_conv.weight, self.expand_conv.bias, k, b, self.reduce_conv.weight,
                                self.reduce_conv.bias)
        return w + identity_kernel(self.out_channels, 3, w), b
