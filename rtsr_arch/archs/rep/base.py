"""The deploy switch shared by every reparameterizable block (timm/RepVGG style)."""
import copy

import torch
from torch import nn

from ..layers import make_activation

__all__ = ['ReparamBlock', 'reparameterize']


class ReparamBlock(nn.Module):
    """A block that trains as several linear branches and deploys as one kxk conv + activation.

    Subclasses build their training branches when ``self.deploy`` is False and implement
    :meth:`forward_train` and :meth:`fuse`. The deploy conv is stored under ``deploy_key`` (the
    official layout of the block's paper, e.g. ``conv3x3`` for LRSRN, ``rep_conv`` for RRRB), and
    the activation under ``act`` in both forms, so deploy checkpoints match the official ones.
    With ``bias=False`` the deploy conv has no bias (subclasses that support it build bias-free
    branches, whose fused bias is zero).
    """

    deploy_key = 'rep_conv'

    def __init__(self, in_channels, out_channels, kernel_size=3, act_type='linear', deploy=False, bias=True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.deploy = deploy
        self.use_bias = bias
        if deploy:
            self.add_module(self.deploy_key, self._deploy_conv())
        self.act = make_activation(act_type, out_channels)

    def _deploy_conv(self, **factory):
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         padding=self.kernel_size // 2, bias=self.use_bias, **factory)

    def forward(self, x):
        y = getattr(self, self.deploy_key)(x) if self.deploy else self.forward_train(x)
        return self.act(y)

    def forward_train(self, x):
        """The linear part of the training form."""
        raise NotImplementedError

    def fuse(self):
        """Kernel and bias of the single conv equal to :meth:`forward_train`.

        :meth:`reparameterize` calls it on a float64 copy of the block, so the merge adds no
        rounding beyond the final cast to the block's dtype.
        """
        raise NotImplementedError

    @torch.no_grad()
    def reparameterize(self):
        """Replace the training branches by the fused conv, in place (no-op when deployed)."""
        if self.deploy:
            return self
        ref = next(p for p in self.parameters())
        weight, bias = copy.deepcopy(self).double().fuse()
        conv = self._deploy_conv(device=ref.device, dtype=ref.dtype)
        conv.weight.copy_(weight)
        if self.use_bias:
            conv.bias.copy_(bias)
        elif bias.abs().max() > 0:
            raise RuntimeError(f'{type(self).__name__}(bias=False) fused to a non-zero bias; its branches must be bias-free')
        act = self._modules.pop('act')
        self._modules.clear()
        self._parameters.clear()
        self._buffers.clear()
        self.add_module(self.deploy_key, conv)
        self.add_module('act', act)
        self.deploy = True
        return self


def reparameterize(model: nn.Module) -> nn.Module:
    """Convert every :class:`ReparamBlock` of ``model`` to its deploy form, in place; idempotent.

    Blocks are fused from their current weights (BatchNorm branches use running statistics).
    Returns ``model``.
    """
    if isinstance(model, ReparamBlock):
        return model.reparameterize()
    for child in model.children():
        reparameterize(child)
    return model
