"""Merge math of structural reparameterization: the one place every block's fusion is written.

Kernels are (out, in, kh, kw); a missing bias (``None``) counts as zero. Every function is exact
algebra, so fused and training forms agree to floating-point rounding, borders included, as long
as the training form pads intermediate maps the way noted below.
"""
import torch
from torch import nn

__all__ = ['fuse_1x1_kxk', 'fuse_kxk_1x1', 'fuse_bn', 'pad_kernel', 'identity_kernel', 'dense_depthwise']


def _bias(bias, channels, like):
    return like.new_zeros(channels) if bias is None else bias


def fuse_1x1_kxk(w1x1, b1x1, wkxk, bkxk):
    """A 1x1 conv followed by a kxk conv -> one kxk conv (DBB transIII; ECB, RRRB).

    Exact only if the kxk conv's input border equals the 1x1 conv's bias, i.e. the training form
    pads the 1x1's *input* with zeros (``Conv2d(k=1, padding=1)``) instead of its output.
    """
    w = torch.einsum('omhw,mi->oihw', wkxk, w1x1[:, :, 0, 0])
    b = _bias(bkxk, wkxk.shape[0], wkxk) + torch.einsum('omhw,m->o', wkxk, _bias(b1x1, w1x1.shape[0], w1x1))
    return w, b


def fuse_kxk_1x1(wkxk, bkxk, w1x1, b1x1):
    """A kxk conv followed by a 1x1 conv -> one kxk conv (LRSRN collapsible block, SESR)."""
    m = w1x1[:, :, 0, 0]
    w = torch.einsum('om,mihw->oihw', m, wkxk)
    b = _bias(b1x1, w1x1.shape[0], w1x1) + m @ _bias(bkxk, wkxk.shape[0], wkxk)
    return w, b


def fuse_bn(weight, bias, bn: nn.BatchNorm2d):
    """Fold an inference-mode BatchNorm that follows a conv into the conv (RepVGG)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    w = weight * scale.view(-1, 1, 1, 1)
    b = bn.bias + (_bias(bias, weight.shape[0], weight) - bn.running_mean) * scale
    return w, b


def pad_kernel(weight, kernel_size):
    """Zero-pad a smaller centred kernel (e.g. 1x1) to ``kernel_size``."""
    p = (kernel_size - weight.shape[-1]) // 2
    return torch.nn.functional.pad(weight, [p, p, p, p])


def identity_kernel(channels, kernel_size, like):
    """The kxk kernel of the identity map on ``channels`` features."""
    w = like.new_zeros(channels, channels, kernel_size, kernel_size)
    idx = torch.arange(channels, device=like.device)
    w[idx, idx, kernel_size // 2, kernel_size // 2] = 1
    return w


def dense_depthwise(weight):
    """A depthwise kernel (C, 1, k, k) as the equivalent dense kernel (C, C, k, k)."""
    channels = weight.shape[0]
    w = weight.new_zeros(channels, channels, *weight.shape[2:])
    idx = torch.arange(channels, device=weight.device)
    w[idx, idx] = weight[:, 0]
    return w
