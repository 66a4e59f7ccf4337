"""LRSRN's RepConv block (LRSRN paper §3.2, Fig. 2): a collapsible linear block."""
from torch import nn

from .base import ReparamBlock
from .fusion import fuse_kxk_1x1, identity_kernel, pad_kernel

__all__ = ['CollapsibleBlock']


class CollapsibleBlock(ReparamBlock):
    """3x3 conv to a wide feature, then 1x1 back, with no activation between (official
    ``RepBlock`` / ``RepBlockV2`` of Ganzooo/LRSRN).

    The shortcut is the identity when ``with_idt`` and in == out (Fig. 2a); otherwise, with
    ``res_conv=True``, a learnable 1x1 conv (``conv1_res``, Fig. 2b, RepBlockV2), else none
    (RepBlock). Deploys to ``conv3x3`` followed by ``act``.

    Args:
        in_channels, out_channels: feature counts.
        feature_size: width of the expanded feature (256 in the paper).
        act_type: activation after the block (see :data:`~rtsr_arch.archs.layers.ACTIVATIONS`).
        with_idt: use the identity shortcut when in == out.
        res_conv: add the 1x1 shortcut when the identity is not used.
        deploy: build the fused form directly.
        bias: with False, every conv (and so the fused ``conv3x3``) is bias-free (CASR's final
            stage, AIS 2024 RTSR report §3.4).
    """

    deploy_key = 'conv3x3'

    def __init__(self, in_channels, out_channels, feature_size=256, act_type='linear', with_idt=True,
                 res_conv=True, deploy=False, bias=True):
        super().__init__(in_channels, out_channels, 3, act_type, deploy, bias)
        self.with_idt = with_idt and in_channels == out_channels
        if deploy:
            return
        self.conv0 = nn.Conv2d(in_channels, feature_size, 3, padding=1, bias=bias)
        self.conv1 = nn.Conv2d(feature_size, out_channels, 1, bias=bias)
        if not self.with_idt and res_conv:
            self.conv1_res = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward_train(self, x):
        y = self.conv1(self.conv0(x))
        if self.with_idt:
            return y + x
        if hasattr(self, 'conv1_res'):
            return y + self.conv1_res(x)
        return y

    def fuse(self):
        w, b = fuse_kxk_1x1(self.conv0.weight, self.conv0.bias, self.conv1.weight, self.conv1.bias)
        if self.with_idt:
            w = w + identity_kernel(self.out_channels, 3, w)
        elif hasattr(self, 'conv1_res'):
            w = w + pad_kernel(self.conv1_res.weight, 3)
            if self.use_bias:
                b = b + self.conv1_res.bias
        return w, b
