"""SPAN's ``Conv3XC`` (Wan et al., "Swift Parameter-free Attention Network for Efficient
Super-Resolution", CVPRW 2024, §3.3; official code hongyuanyu/SPAN@c77a591
``basicsr/archs/span_arch.py``, Apache-2.0): 1x1 expand -> kxk -> 1x1 reduce, in parallel with a
1x1 skip, deployed as one kxk conv stored under the official key ``eval_conv``."""
import torch
from torch import nn

from .base import ReparamBlock
from .fusion import fuse_1x1_kxk_1x1, merge_parallel

__all__ = ['Conv3XC', 'fuse_conv3xc']


def fuse_conv3xc(sk, conv0, conv1, conv2, kernel_size, groups=1):
    """The ``(weight, bias)`` of the one kxk conv equal to ``conv2(conv1(conv0(pad(x)))) + sk(x)``.

    Each argument is a ``(weight, bias)`` pair (bias None when absent): ``conv0`` the 1x1 expand
    (its *input* zero-padded by half the kernel, so the kxk sees its bias on the border),
    ``conv1`` the valid kxk, ``conv2`` the 1x1 reduce, ``sk`` the 1x1 skip on the unpadded input;
    all with ``groups`` groups. Pure composition of :func:`fuse_1x1_kxk_1x1` and
    :func:`merge_parallel` (the official ``update_params`` computes the same with flipped-kernel
    convolutions)."""
    return merge_parallel([fuse_1x1_kxk_1x1(*conv0, *conv1, *conv2, groups=groups), sk], kernel_size)


class _EvalConvMirror(nn.Module):
    """Holds the training form's copy of the fused kernel as *buffers* ``weight`` / ``bias``, so
    that the training-form state dict has the official ``eval_conv.weight`` / ``eval_conv.bias``
    keys without adding parameters (see :class:`Conv3XC`)."""

    def __init__(self, weight_shape, bias_channels=None):
        super().__init__()
        self.register_buffer('weight', torch.zeros(weight_shape))
        self.register_buffer('bias', None if bias_channels is None else torch.zeros(bias_channels))


class Conv3XC(ReparamBlock):
    """SPAN's Conv3XC: ``conv.2(conv.1(conv.0(pad(x)))) + sk(x)``, deployed as one kxk conv.

    Training form, official layout (``sk``, ``conv.0``, ``conv.1``, ``conv.2``): ``conv.0`` 1x1
    ``in -> gain*in`` on the input zero-padded by ``k // 2`` (the official code pads ``x`` and runs
    the 1x1 without padding: identical, and the border of the kxk input is ``conv.0``'s bias, which
    makes the merge exact on border pixels), ``conv.1`` kxk ``gain*in -> gain*out`` without
    padding (strided with ``stride``), ``conv.2`` 1x1 ``gain*out -> out``; ``sk`` a 1x1
    ``in -> out`` (strided) on the unpadded input. No identity. Deploy form: ``eval_conv``, one
    kxk conv (padding ``k // 2``), then ``act``.

    **``eval_conv`` in the training form.** The official training module registers ``eval_conv``
    as parameters too (``requires_grad=False``), so official training checkpoints hold both forms;
    its eval-mode forward re-fuses the branches into ``eval_conv`` on every call, so the stored
    ``eval_conv`` values never matter there (nor in spandrel, which does the same; its SPAN
    detection requires the ``eval_conv`` keys). Here the training form keeps ``eval_conv.weight``
    / ``eval_conv.bias`` as persistent **buffers** that mirror the branches:

    - they are recomputed, fused in float64 from the current branches, whenever a state dict is
      taken, so every checkpoint this package writes has the official keys *and* a correct
      ``eval_conv`` (it loads strictly in the official code and in spandrel, and its ``eval_conv``
      alone is a valid deploy conv);
    - they load strictly from official and spandrel checkpoints and are otherwise ignored, as
      the official eval forward ignores them (the output comes from the branches);
    - they are not parameters: optimizers, EMA, gradient checks and parameter counts see only the
      trainable branches; the deploy form (:meth:`reparameterize`, or ``deploy=True``) holds just
      ``eval_conv`` as a real conv, as the official key layout.

    Args:
        in_channels, out_channels: feature counts.
        gain: expansion of the inner features (official ``gain1``; SPAN uses 2).
        act_type: activation after the block ('linear' in SPAN; 'lrelu' (slope 0.05) is the
            official ``relu=True``).
        deploy: build the fused form directly.
        bias: with False every conv and the fused conv are bias-free.
        kernel_size: odd size of the middle conv (3 in SPAN), an int or (kh, kw).
        stride: stride of ``conv.1``, ``sk`` and the fused conv (official ``s``).
        groups: groups of every conv (1 in SPAN).
    """

    deploy_key = 'eval_conv'

    def __init__(self, in_channels, out_channels, gain=2, act_type='linear', deploy=False, bias=True, kernel_size=3,
                 stride=1, groups=1):
        super().__init__(in_channels, out_channels, kernel_size, act_type, deploy, bias, stride, groups)
        self._check_count('gain', gain)
        self.gain = gain
        if deploy:
            return
        kh, kw = self.kernel_size
        self.sk = nn.Conv2d(in_channels, out_channels, 1, stride=self.stride, groups=groups, bias=bias)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels * gain, 1, padding=(kh // 2, kw // 2), groups=groups, bias=bias),
            nn.Conv2d(in_channels * gain, out_channels * gain, self.kernel_size, stride=self.stride, groups=groups,
                      bias=bias),
            nn.Conv2d(out_channels * gain, out_channels, 1, groups=groups, bias=bias))
        self.eval_conv = _EvalConvMirror((out_channels, in_channels // groups, kh, kw), out_channels if bias else None)
        self.refresh_eval_conv()

    def forward_train(self, x):
        return self.conv(x) + self.sk(x)

    def fuse(self):
        pair = lambda conv: (conv.weight, conv.bias)  # noqa: E731
        return fuse_conv3xc(pair(self.sk), pair(self.conv[0]), pair(self.conv[1]), pair(self.conv[2]),
                            self.kernel_size, self.groups)

    @torch.no_grad()
    def refresh_eval_conv(self):
        """Set the training form's ``eval_conv`` buffers to the branches fused in float64 (what the
        official eval forward computes); no-op in deploy form. Called by :meth:`state_dict`."""
        if self.deploy:
            return self
        pair = lambda conv: (conv.weight.double(), None if conv.bias is None else conv.bias.double())  # noqa: E731
        weight, bias = fuse_conv3xc(pair(self.sk), pair(self.conv[0]), pair(self.conv[1]), pair(self.conv[2]),
                                    self.kernel_size, self.groups)
        mirror = self.eval_conv  # new tensors, so that state dicts taken earlier keep their values
        mirror.weight = weight.to(mirror.weight)
        if mirror.bias is not None:
            mirror.bias = bias.to(mirror.bias)
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # runs before the children are saved: the eval_conv mirror is saved up to date
        self.refresh_eval_conv()
        super()._save_to_state_dict(destination, prefix, keep_vars)
