"""Collapsible linear blocks: LRSRN's RepConv block (LRSRN paper §3.2, Fig. 2) and CASR's dual-branch
``RepBlockV5`` (AIS 2024 RTSR report §3.4, Fig. 8)."""
from torch import nn

from .base import ReparamBlock
from .fusion import fuse_kxk_1x1, identity_kernel, merge_parallel, pad_kernel

__all__ = ['CollapsibleBlock', 'COLLAPSIBLE_ALIASES']

# the official RepBlock (LRSRN) and RepBlockV5 (CASR; the *_b2 names) register their conv
# parameters a second time under these names, so their training checkpoints hold both
COLLAPSIBLE_ALIASES = {'w0': 'conv0.weight', 'b0': 'conv0.bias', 'w1': 'conv1.weight', 'b1': 'conv1.bias',
                    'w0_b2': 'conv0_b2.weight', 'b0_b2': 'conv0_b2.bias', 'w1_b2': 'conv1_b2.weight',
                    'b1_b2': 'conv1_b2.bias'}


class CollapsibleBlock(ReparamBlock):
    """kxk conv to a wide feature, then 1x1 back, with no activation between (official
    ``RepBlock`` / ``RepBlockV2`` of Ganzooo/LRSRN; SESR's linear block with ``kernel_size=5``).

    The shortcut is the identity when used (Fig. 2a); otherwise, with ``res_conv=True``, a
    learnable 1x1 conv (``conv1_res``, Fig. 2b, RepBlockV2), else none (RepBlock). Deploys to
    ``conv3x3`` (the official key, whatever the kernel size) followed by ``act``.

    With ``feature_size_b2`` a second collapsible branch of that width runs in parallel
    (``conv0_b2`` kxk -> ``conv1_b2`` 1x1): CASR's ``RepBlockV5`` (rlghksdbs/CASR
    ``RepConv_block.py``, widths 256 and 128), whose output is
    ``act(conv1(conv0(x)) + conv1_b2(conv0_b2(x)) + shortcut)``. Each branch collapses to one kxk
    kernel (``fuse_kxk_1x1``), the branches and the shortcut sum into ``conv3x3``.

    Args:
        in_channels, out_channels: feature counts.
        feature_size: width of the expanded feature (256 in the paper).
        act_type: activation after the block (see :data:`~rtsr_arch.archs.layers.ACTIVATIONS`).
        with_idt: None (default, official): the identity exactly when in == out; True: required
            (ValueError when in != out); False: none.
        res_conv: add the 1x1 shortcut when the identity is not used.
        deploy: build the fused form directly.
        bias: with False, every conv (and so the fused ``conv3x3``) is bias-free (CASR's final
            stage, AIS 2024 RTSR report §3.4).
        kernel_size: odd size of the first conv (3 in LRSRN).
        feature_size_b2: width of the second branch (None: no second branch, LRSRN; 128: CASR).
    """

    deploy_key = 'conv3x3'

    def __init__(self, in_channels, out_channels, feature_size=256, act_type='linear', with_idt=None,
                 res_conv=True, deploy=False, bias=True, kernel_size=3, feature_size_b2=None):
        super().__init__(in_channels, out_channels, kernel_size, act_type, deploy, bias)
        self._check_count('feature_size', feature_size)
        if feature_size_b2 is not None:
            self._check_count('feature_size_b2', feature_size_b2)
        if not isinstance(res_conv, bool):
            self._refuse('res_conv', res_conv, 'must be True or False')
        self.with_idt = self._resolve_with_idt(with_idt)
        self.feature_size_b2 = feature_size_b2
        if deploy:
            return
        kh, kw = self.kernel_size
        padding = (kh // 2, kw // 2)
        self.conv0 = nn.Conv2d(in_channels, feature_size, self.kernel_size, padding=padding, bias=bias)
        self.conv1 = nn.Conv2d(feature_size, out_channels, 1, bias=bias)
        if feature_size_b2 is not None:
            self.conv0_b2 = nn.Conv2d(in_channels, feature_size_b2, self.kernel_size, padding=padding, bias=bias)
            self.conv1_b2 = nn.Conv2d(feature_size_b2, out_channels, 1, bias=bias)
        if not self.with_idt and res_conv:
            self.conv1_res = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward_train(self, x):
        y = self.conv1(self.conv0(x))
        if self.feature_size_b2 is not None:
            y = y + self.conv1_b2(self.conv0_b2(x))
        if self.with_idt:
            return y + x
        if hasattr(self, 'conv1_res'):
            return y + self.conv1_res(x)
        return y

    def fuse(self):
        w, b = fuse_kxk_1x1(self.conv0.weight, self.conv0.bias, self.conv1.weight, self.conv1.bias)
        if self.feature_size_b2 is not None:
            w, b = merge_parallel([(w, b), fuse_kxk_1x1(self.conv0_b2.weight, self.conv0_b2.bias,
                                                         self.conv1_b2.weight, self.conv1_b2.bias)], self.kernel_size)
        if self.with_idt:
            w = w + identity_kernel(self.out_channels, self.kernel_size, w)
        elif hasattr(self, 'conv1_res'):
            w = w + pad_kernel(self.conv1_res.weight, self.kernel_size)
            if self.use_bias:
                b = b + self.conv1_res.bias
        return w, b
