"""Merge math of structural reparameterization: the one place every block's fusion is written.

Kernels are (out, in / groups, kh, kw) as in ``nn.Conv2d``; a missing bias (``None``) counts as
zero. Every function is exact algebra (no rounding beyond the arithmetic itself; run it in float64),
so fused and training forms agree to floating-point rounding, borders included, as long as the
training form pads intermediate maps the way noted below.

Parallel branches (DBB transII/VI) add after their kernels are zero-padded to a common odd size
(:func:`pad_kernel`, :func:`merge_parallel`). Each branch must pad its input by half its own kernel,
``(kh // 2, kw // 2)``, so that every kernel is centred on the same input pixel. With a stride
``s`` this also holds: an odd kernel padded by half its size centres output ``i`` on input pixel
``s * i`` whatever its size, so the branches of a strided block fuse exactly when they share the
stride (output size ``ceil(h / s)``). A sequential 1x1 -> kxk or kxk -> 1x1 pair keeps the stride
on the kxk conv (a strided 1x1 placed first would drop pixels the kxk needs).
"""
import torch
from torch import nn

__all__ = ['fuse_1x1_kxk', 'fuse_kxk_1x1', 'fuse_1x1_kxk_1x1', 'fuse_bn', 'bn_scale_shift', 'fuse_bn_before_conv',
           'pad_kernel', 'identity_kernel', 'avg_pool_kernel', 'dense_depthwise', 'dense_grouped', 'merge_parallel',
           'pair']


def pair(value, name='kernel_size'):
    """``k`` or ``(kh, kw)`` -> ``(kh, kw)`` of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f'{name} must be an int or a (h, w) pair; got {value!r}')
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _bias(bias, channels, like):
    return like.new_zeros(channels) if bias is None else bias


def _check_groups(groups, **channels):
    for name, count in channels.items():
        if count % groups:
            raise ValueError(f'{name} {count} is not divisible by groups={groups}')


def fuse_1x1_kxk(w1x1, b1x1, wkxk, bkxk, groups=1):
    """A 1x1 conv followed by a kxk conv -> one kxk conv (DBB transIII; ECB, RRRB).

    Both convs have ``groups`` groups (1: dense; the group ``g`` of the kxk reads the channels the
    group ``g`` of the 1x1 wrote, DBB's grouped transIII); the result has ``groups`` groups too.
    The kxk conv may be strided (the 1x1 must not be).

    Exact only if the kxk conv's input border equals the 1x1 conv's bias, i.e. the training form
    pads the 1x1's *input* with zeros (``Conv2d(k=1, padding=k//2)``) instead of its output (with a
    bias-free 1x1 both are zero padding).
    """
    g = groups
    mid, in_g = w1x1.shape[:2]
    out, mid_g, kh, kw = wkxk.shape
    _check_groups(g, out_channels=out, mid_channels=mid)
    if mid_g * g != mid:
        raise ValueError(f'kxk kernel reads {mid_g * g} channels, the 1x1 writes {mid} (groups={g})')
    a = w1x1[:, :, 0, 0].reshape(g, mid_g, in_g)
    k = wkxk.reshape(g, out // g, mid_g, kh, kw)
    w = torch.einsum('gomhw,gmi->goihw', k, a).reshape(out, in_g, kh, kw)
    b1 = _bias(b1x1, mid, w1x1).reshape(g, mid_g)
    b = _bias(bkxk, out, wkxk) + torch.einsum('gomhw,gm->go', k, b1).reshape(out)
    return w, b


def fuse_kxk_1x1(wkxk, bkxk, w1x1, b1x1, groups=1):
    """A kxk conv followed by a 1x1 conv -> one kxk conv (LRSRN collapsible block, SESR).

    Both convs have ``groups`` groups; the result too. The kxk conv may be strided. No padding
    subtlety: the only spatial conv comes first and zero-pads the block input.
    """
    g = groups
    mid, in_g, kh, kw = wkxk.shape
    out, mid_g = w1x1.shape[:2]
    _check_groups(g, out_channels=out, mid_channels=mid)
    if mid_g * g != mid:
        raise ValueError(f'1x1 kernel reads {mid_g * g} channels, the kxk writes {mid} (groups={g})')
    m = w1x1[:, :, 0, 0].reshape(g, out // g, mid_g)
    k = wkxk.reshape(g, mid_g, in_g, kh, kw)
    w = torch.einsum('gom,gmihw->goihw', m, k).reshape(out, in_g, kh, kw)
    bk = _bias(bkxk, mid, wkxk).reshape(g, mid_g)
    b = _bias(b1x1, out, w1x1) + torch.einsum('gom,gm->go', m, bk).reshape(out)
    return w, b


def fuse_1x1_kxk_1x1(w_expand, b_expand, wkxk, bkxk, w_reduce, b_reduce, groups=1):
    """A 1x1 expand conv (its *input* zero-padded by half the kernel, so the kxk sees the expand
    bias on its border), a valid kxk conv and a 1x1 reduce conv -> one kxk conv: the 1-k-1 chain of
    FMEN's RRRB, RVSR's RepConv, SPAN's Conv3XC and ANUNet's NRB (:func:`fuse_1x1_kxk` then
    :func:`fuse_kxk_1x1`)."""
    w, b = fuse_1x1_kxk(w_expand, b_expand, wkxk, bkxk, groups=groups)
    return fuse_kxk_1x1(w, b, w_reduce, b_reduce, groups=groups)


def fuse_bn(weight, bias, bn: nn.BatchNorm2d):
    """Fold an inference-mode BatchNorm that follows a conv into the conv (RepVGG, ACNet, DBB transI).

    Works for any kernel shape and groups (the BN scales output channels). Always yields a bias.
    """
    std = (bn.running_var + bn.eps).sqrt()
    gamma = torch.ones_like(std) if bn.weight is None else bn.weight
    beta = torch.zeros_like(std) if bn.bias is None else bn.bias
    scale = gamma / std
    w = weight * scale.view(-1, 1, 1, 1)
    b = beta + (_bias(bias, weight.shape[0], weight) - bn.running_mean) * scale
    return w, b


def bn_scale_shift(bn: nn.BatchNorm2d):
    """``(scale, shift)`` per channel of an inference-mode BatchNorm: ``bn(x) = scale * x + shift``.

    ``shift = beta - running_mean * gamma / sqrt(running_var + eps)`` is also the BatchNorm's output
    on a zero input: the value a map normalized by ``bn`` takes on zero padding (FMEN's
    ``get_bn_bias``, the padding value of its HFAB training form).
    """
    std = (bn.running_var + bn.eps).sqrt()
    gamma = torch.ones_like(std) if bn.weight is None else bn.weight
    beta = torch.zeros_like(std) if bn.bias is None else bn.bias
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


def fuse_bn_before_conv(weight, bias, bn: nn.BatchNorm2d, groups=1):
    """Fold an inference-mode BatchNorm that *feeds* a conv into the conv (FMEN ``merge_bn``,
    ``before_conv=True``): ``conv(bn(x))`` -> ``conv'(x)`` with ``W'[o, c] = W[o, c] * scale[c]``
    and ``b'[o] = b[o] + sum_{c, h, w} W[o, c, h, w] * shift[c]`` (:func:`bn_scale_shift`).

    Any kernel size and ``groups`` (output ``o`` of group ``g`` reads input channels
    ``g * in_g .. (g + 1) * in_g``). Always yields a bias. Exact on border pixels only if the conv's
    input is padded with the BatchNorm's value at zero (``shift``; equivalently the BatchNorm is
    applied to the zero-padded map) instead of zeros: the fused conv zero-pads ``x``, and
    ``bn(0) = shift``. Stride and dilation do not matter.
    """
    out, in_g = weight.shape[:2]
    _check_groups(groups, out_channels=out)
    if in_g * groups != bn.num_features:
        raise ValueError(f'the conv reads {in_g * groups} channels (groups={groups}), '
                         f'the BatchNorm normalizes {bn.num_features}')
    scale, shift = bn_scale_shift(bn)
    per_out = out // groups
    # the input channels each output reads: (out, in_g), group by group
    index = (torch.arange(out, device=weight.device) // per_out * in_g)[:, None] + \
        torch.arange(in_g, device=weight.device)[None, :]
    w = weight * scale[index][:, :, None, None]
    b = _bias(bias, out, weight) + (weight.sum((2, 3)) * shift[index]).sum(1)
    return w, b


def pad_kernel(weight, kernel_size):
    """Zero-pad a smaller centred kernel to ``kernel_size`` (int or (kh, kw)); DBB transVI.

    Any (kh', kw') fits into (kh, kw) when both differences are even and non-negative, e.g. 1x1,
    1x3 and 3x1 into 3x3, 1x5 into 5x5; the centre tap stays the centre tap. Otherwise the centres
    cannot align and a ValueError is raised.
    """
    kh, kw = pair(kernel_size)
    h, w = weight.shape[-2:]
    dh, dw = kh - h, kw - w
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f'cannot centre a {h}x{w} kernel in {kh}x{kw}: the sizes must differ by even amounts >= 0')
    return torch.nn.functional.pad(weight, [dw // 2, dw // 2, dh // 2, dh // 2])


def identity_kernel(channels, kernel_size, like, groups=1):
    """The (kh, kw) kernel of the identity map on ``channels`` features, for a conv with ``groups``.

    Shape (channels, channels / groups, kh, kw): 1 at [i, i mod (channels / groups), kh//2, kw//2]
    (output ``i`` is in group ``i // (channels / groups)``, which reads input ``i`` at that local
    index); ``groups == channels`` is the depthwise identity. kh and kw must be odd (a centre tap).
    """
    w, own = _per_channel_kernel(channels, kernel_size, like, groups, 'kernel has no centre tap: the identity')
    kh, kw = w.shape[2:]
    w[own + (kh // 2, kw // 2)] = 1
    return w


def avg_pool_kernel(channels, kernel_size, like, groups=1):
    """``AvgPool2d(kernel_size)`` on ``channels`` maps as the kernel of a conv with ``groups`` groups
    (DBB transV): shape (channels, channels / groups, kh, kw), ``1 / (kh * kw)`` at
    [i, i mod (channels / groups), :, :] and 0 elsewhere (output ``i`` averages input ``i``).

    Equal to the pooling with the same stride when the pooled map is padded the way the fused conv
    pads: no padding (the pooling reads a map already padded by half the kernel, e.g. a
    ``BNAndPadLayer``), or zero padding counted in the mean (``count_include_pad=True``, PyTorch's
    default). kh and kw must be odd (centred on the same pixel as the other branches).
    """
    w, own = _per_channel_kernel(channels, kernel_size, like, groups, 'pooling window has no centre tap: the fusion')
    kh, kw = w.shape[2:]
    w[own] = 1.0 / (kh * kw)
    return w


def _per_channel_kernel(channels, kernel_size, like, groups, what):
    """A zero (channels, channels / groups, kh, kw) kernel and the index ``(i, i mod (channels /
    groups))`` of every output's own input (output ``i`` of a grouped conv reads input ``i`` at that
    local index); kh and kw must be odd ('a <kh>x<kw> <what> needs odd kernel sizes')."""
    kh, kw = pair(kernel_size)
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f'a {kh}x{kw} {what} needs odd kernel sizes')
    _check_groups(groups, channels=channels)
    per_group = channels // groups
    idx = torch.arange(channels, device=like.device)
    return like.new_zeros(channels, per_group, kh, kw), (idx, idx % per_group)


def dense_grouped(weight, groups):
    """A grouped kernel (out, in / groups, kh, kw) as the equivalent dense (out, in, kh, kw) kernel
    (block diagonal over the groups)."""
    out, in_g = weight.shape[:2]
    _check_groups(groups, out_channels=out)
    per_out = out // groups
    w = weight.new_zeros(out, in_g * groups, *weight.shape[2:])
    for g in range(groups):
        w[g * per_out:(g + 1) * per_out, g * in_g:(g + 1) * in_g] = weight[g * per_out:(g + 1) * per_out]
    return w


def dense_depthwise(weight):
    """A depthwise kernel (C, 1, kh, kw) as the equivalent dense kernel (C, C, kh, kw)."""
    return dense_grouped(weight, weight.shape[0])


def merge_parallel(branches, kernel_size):
    """Sum parallel branches ``[(weight, bias), ...]`` into one ``kernel_size`` conv (DBB
    transII + transVI): each kernel is centred by :func:`pad_kernel`, a ``None`` bias counts as
    zero (the result's bias is ``None`` only if every branch's is). All branches must share
    groups and stride and pad by half their kernel (see the module docstring)."""
    weight = bias = None
    for w, b in branches:
        w = pad_kernel(w, kernel_size)
        weight = w if weight is None else weight + w
        if b is not None:
            bias = b if bias is None else bias + b
    return weight, bias
