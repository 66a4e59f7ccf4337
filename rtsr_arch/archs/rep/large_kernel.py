"""RepLKNet's re-parameterized large-kernel conv (Ding et al., "Scaling Up Your Kernels to 31x31",
CVPR 2022, §3.3 "structural re-parameterization with small kernels"), in the bias-carrying,
BatchNorm-free form of RepConvFormer (NTIRE 2023 ESR report §4.29, team AIIA-SR; official code
Aitical/NTIRE23_ESR_AIIASR@918244d ``models/team38_RepConvFormer.py``, ``ReparamLargeKernelConv``,
MIT)."""
from torch import nn

from .base import ReparamBlock
from .fusion import merge_parallel

__all__ = ['ReparamLargeKernelConv']


class ReparamLargeKernelConv(ReparamBlock):
    """A large kxk conv ``lkb_origin`` and a small sxs conv ``small_conv`` in parallel (both with
    bias, same stride and groups, each padded by half its kernel), then the activation; deploys to
    one kxk conv ``lkb_reparam`` (the small kernel zero-padded into the large one's centre, biases
    summed). Depthwise in RepConvFormer (``groups = channels``, k 9, s 7).

    Args:
        in_channels, out_channels: feature counts.
        kernel_size: the large odd kernel k.
        small_kernel: the small odd kernel s <= k; None: no small branch (the block is then a
            plain kxk conv under the deploy key).
        act_type: activation after the block ('linear' in RepConvFormer).
        deploy: build the fused form directly.
        stride, groups, bias: of both branches.
    """

    deploy_key = 'lkb_reparam'

    def __init__(self, in_channels, out_channels, kernel_size=9, small_kernel=7, act_type='linear', deploy=False, *,
                 stride=1, groups=1, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, act_type, deploy, bias, stride, groups)
        if self.kernel_size[0] != self.kernel_size[1]:
            self._refuse('kernel_size', kernel_size, 'must be square (one odd int k)')
        k = self.kernel_size[0]
        if small_kernel is not None:
            if isinstance(small_kernel, bool) or not isinstance(small_kernel, int) or small_kernel < 1 \
                    or small_kernel % 2 == 0 or small_kernel > k:
                self._refuse('small_kernel', small_kernel, f'must be None or an odd int <= kernel_size={k}')
        self.small_kernel = small_kernel
        if deploy:
            return
        self.lkb_origin = nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=k // 2, groups=groups,
                                    bias=bias)
        if small_kernel is not None:
            self.small_conv = nn.Conv2d(in_channels, out_channels, small_kernel, stride=stride,
                                        padding=small_kernel // 2, groups=groups, bias=bias)

    def forward_train(self, x):
        y = self.lkb_origin(x)
        return y if self.small_kernel is None else y + self.small_conv(x)

    def fuse(self):
        branches = [(self.lkb_origin.weight, self.lkb_origin.bias)]
        if self.small_kernel is not None:
            branches.append((self.small_conv.weight, self.small_conv.bias))
        return merge_parallel(branches, self.kernel_size)
