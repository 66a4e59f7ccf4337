"""The deploy switch shared by every reparameterizable block (timm/RepVGG style) and the
model-level :func:`reparameterize` protocol."""
import copy

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import make_activation
from .fusion import pair

__all__ = ['ReparamBlock', 'reparameterize', 'reparameterize_children', 'pad_with_value']


class ReparamBlock(nn.Module):
    """A block that trains as several linear branches and deploys as one conv + activation.

    Subclasses build their training branches when ``self.deploy`` is False and implement
    :meth:`forward_train` and :meth:`fuse`. The deploy conv (kernel ``kernel_size``, an odd int or
    (kh, kw) pair; padding (kh//2, kw//2); ``stride``; ``groups``; ``bias``) is stored under
    ``deploy_key`` (the official layout of the block's paper, e.g. ``conv3x3`` for LRSRN,
    ``rep_conv`` for RRRB), and the activation under ``act`` in both forms, so deploy checkpoints
    match the official ones. With ``bias=False`` the deploy conv has no bias (subclasses build
    bias-free branches, whose fused bias is zero). Arguments a block cannot honour raise a one-line
    ``ValueError`` naming the block and the argument.
    """

    deploy_key = 'rep_conv'

    def __init__(self, in_channels, out_channels, kernel_size=3, act_type='linear', deploy=False, bias=True,
                 stride=1, groups=1):
        super().__init__()
        self._check_count('in_channels', in_channels)
        self._check_count('out_channels', out_channels)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, tuple, list)) \
                or (isinstance(kernel_size, (tuple, list)) and (len(kernel_size) != 2 or any(
                    isinstance(k, bool) or not isinstance(k, int) for k in kernel_size))):
            self._refuse('kernel_size', kernel_size, 'must be an odd int or an (h, w) pair of odd ints')
        kh, kw = pair(kernel_size)
        if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
            self._refuse('kernel_size', kernel_size, 'must be odd and positive (the fusion needs a centre tap)')
        if isinstance(stride, bool) or not isinstance(stride, (int, tuple, list)) \
                or (isinstance(stride, (tuple, list)) and (len(stride) != 2 or any(
                    isinstance(s, bool) or not isinstance(s, int) for s in stride))):
            self._refuse('stride', stride, 'must be a positive int or an (h, w) pair of them')
        sh, sw = pair(stride, 'stride')
        if sh < 1 or sw < 1:
            self._refuse('stride', stride, 'must be positive')
        if sh > kh or sw > kw:
            self._refuse('stride', stride, f'exceeds kernel_size {kh}x{kw}: input pixels would be skipped')
        self._check_count('groups', groups)
        if in_channels % groups or out_channels % groups:
            self._refuse('groups', groups, f'must divide in_channels={in_channels} and out_channels={out_channels}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.stride = (sh, sw)
        self.groups = groups
        self.deploy = bool(deploy)
        self.use_bias = bool(bias)
        if deploy:
            self.add_module(self.deploy_key, self._deploy_conv())
        self.act = make_activation(act_type, out_channels)

    # -------------------------------------------------------------- argument checks (one line each)

    def _refuse(self, arg, value, why):
        raise ValueError(f'{type(self).__name__}: {arg}={value!r} {why}')

    def _check_count(self, arg, value):
        """A positive int (channel count, groups, feature size)."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self._refuse(arg, value, 'must be a positive int')

    def _check_ratio(self, arg, value, base):
        """A positive ratio whose inner width ``int(value * base)`` is at least one channel."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            self._refuse(arg, value, 'must be a positive number')
        if int(value * base) < 1:
            self._refuse(arg, value, f'gives an inner width int({value} * {base}) = 0 channels')
        return int(value * base)

    def _resolve_use_bn(self, use_bn):
        """``use_bn`` of a block with BatchNorm branches: a bool, and False when bias-free (folding
        a BatchNorm always produces a bias)."""
        if not isinstance(use_bn, bool):
            self._refuse('use_bn', use_bn, 'must be True or False')
        if use_bn and not self.use_bias:
            self._refuse('bias', False, 'is impossible with use_bn=True (BatchNorm folding yields a bias); '
                                        'pass use_bn=False')
        return use_bn

    def _resolve_with_idt(self, with_idt):
        """``None``: identity exactly when possible; ``True``: required (refused if impossible)."""
        if with_idt is not None and not isinstance(with_idt, bool):
            self._refuse('with_idt', with_idt, 'must be None, True or False')
        reason = None
        if self.in_channels != self.out_channels:
            reason = f'in_channels={self.in_channels} != out_channels={self.out_channels}'
        elif self.stride != (1, 1):
            reason = f'stride={self.stride} is not 1'
        if with_idt and reason:
            self._refuse('with_idt', True, f'is impossible: {reason}')
        return reason is None if with_idt is None else with_idt

    # -------------------------------------------------------------- the two forms

    def _deploy_conv(self, **factory):
        kh, kw = self.kernel_size
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                         padding=(kh // 2, kw // 2), groups=self.groups, bias=self.use_bias, **factory)

    def forward(self, x):
        y = getattr(self, self.deploy_key)(x) if self.deploy else self.forward_train(x)
        return self.act(y)

    def forward_train(self, x):
        """The linear part of the training form."""
        raise NotImplementedError

    def fuse(self):
        """Kernel (out, in / groups, kh, kw) and bias (out,) of the single conv equal to
        :meth:`forward_train`.

        :meth:`reparameterize` calls it on a float64 copy of the block, so the merge adds no
        rounding beyond the final cast to the block's dtype.
        """
        raise NotImplementedError

    @torch.no_grad()
    def reparameterize(self):
        """Replace the training branches by the fused conv, in place (no-op when deployed)."""
        if self.deploy:
            return self
        ref = next(self.parameters())
        weight, bias = copy.deepcopy(self).double().fuse()
        conv = self._deploy_conv(device=ref.device, dtype=ref.dtype)
        if weight.shape != conv.weight.shape or (bias is not None and bias.shape != (self.out_channels,)):
            raise RuntimeError(f'{type(self).__name__}.fuse() returned a {tuple(weight.shape)} kernel; '
                               f'the deploy conv needs {tuple(conv.weight.shape)}')
        conv.weight.copy_(weight)
        if self.use_bias:
            conv.bias.copy_(weight.new_zeros(self.out_channels) if bias is None else bias)
        elif bias is not None and bias.abs().max() > 0:
            raise RuntimeError(f'{type(self).__name__}(bias=False) fused to a non-zero bias; '
                               'its branches must be bias-free')
        act = self._modules.pop('act')
        self._modules.clear()
        self._parameters.clear()
        self._buffers.clear()
        self.add_module(self.deploy_key, conv)
        self.add_module('act', act)
        self.deploy = True
        return self


def _defines_reparameterize(module):
    return callable(getattr(type(module), 'reparameterize', None))


def reparameterize(model: nn.Module) -> nn.Module:
    """Convert ``model`` to its deploy form, in place; idempotent; returns ``model``.

    Walks the module tree from ``model`` (the root included): a module whose class defines a
    callable ``reparameterize()`` method (every :class:`ReparamBlock`, but also a network with its
    own transform, e.g. a two-stream merge or dropping an auxiliary training head) gets that method
    called and is not descended into (the method handles its children, typically by calling
    :func:`reparameterize_children`); any other module is descended into. Such methods must be
    idempotent and work in place. Blocks are fused from their current weights (BatchNorm
    branches use running statistics).
    """
    if _defines_reparameterize(model):
        model.reparameterize()
    else:
        reparameterize_children(model)
    return model


def reparameterize_children(module: nn.Module) -> nn.Module:
    """Apply :func:`reparameterize` to every direct child of ``module`` (not to ``module`` itself);
    returns ``module``. A module's own ``reparameterize()`` calls it to get the default behaviour
    for its children before or after its own transform."""
    for child in list(module.children()):
        reparameterize(child)
    return module


def pad_with_value(t, value, pad):
    """``t`` padded by ``pad = (ph, pw)`` pixels on each side with the per-channel ``value``:
    interior pixels are ``t`` and border pixels ``value``, both exactly (no arithmetic on ``t``): the
    "bias padding" (or BatchNorm-value padding) that makes 1x1 -> kxk fusion exact on the border."""
    ph, pw = pad
    border = F.pad(t.new_zeros(1, 1, t.shape[2], t.shape[3], dtype=torch.bool), [pw, pw, ph, ph], value=True)
    return torch.where(border, value.view(1, -1, 1, 1).to(t.dtype), F.pad(t, [pw, pw, ph, ph]))
