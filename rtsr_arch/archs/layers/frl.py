"""Pieces shared by the Fried Rice Lab (FRL) entries of the NTIRE 2023 Efficient SR challenge
(LGTT, GateFormer, EXnet, HCAN; report §4.27-4.30 and the teams' repositories, which share one
helper code base): the DF2K mean shift at the 255 scale, the parameter-free-shift 1x1 conv of the
MLPs, and the common skeleton

    x -> sub_mean -> head (3x3) -> body -> + head output -> tail (3x3 conv, PixelShuffle) -> add_mean

computed on [0, 255] images (the teams' ``test_demo.py`` data_range 255). The networks take RGB in
[0, 1] like every network of this package: the skeleton multiplies by 255 on the way in and divides
on the way out, so the official weights load unchanged.

and the parts two or more of them share: the MLP of 1x1 convs (shift convs in LGTT and EXnet,
plain in HCAN) and the group of normalization-free transformer blocks (HCAN, LGTT).

The layer norm of these networks (the FRL ``LayerNorm4D``, eps 1e-5) is
:class:`~rtsr_arch.archs.layers.normalization.LayerNorm2d` with ``eps=1e-5`` (and
``float32_stats=True``: on 255-scale features the squared deviations overflow float16); their
``Swish`` (a custom autograd function computing ``x * sigmoid(x)``) is ``nn.SiLU``.
"""
import torch
from torch import nn
from torch.nn import functional as F

from .activations import make_activation
from .upsamplers import conv_pixel_shuffle

__all__ = ['DF2K_RGB_MEAN', 'FRL_RGB_RANGE', 'MeanShift', 'MeanShiftConv', 'ShiftConv2d1x1', 'shift_channel_groups',
           'FRLMLP', 'NormFreeGroup', 'FRLSkeleton']

# RGB mean of DF2K (DIV2K 1-800 + Flickr2K 1-2650), as the FRL helper code states it; the std is 1
DF2K_RGB_MEAN = (0.4690, 0.4490, 0.4036)
FRL_RGB_RANGE = 255.0


class MeanShift(nn.Module):
    """``x + sign * rgb_range * mean`` per channel, without parameters (the FRL ``MeanShift``
    used by LGTT, GateFormer and EXnet, which computes it as a functional 1x1 conv with an
    identity kernel: the same values, and nothing counted by the NTIRE counters).

    The shift is a non-persistent buffer: it follows ``.to(dtype/device)`` and is not in the
    state dict."""

    def __init__(self, sign, rgb_range=FRL_RGB_RANGE, mean=DF2K_RGB_MEAN):
        super().__init__()
        if sign not in (-1, 1):
            raise ValueError(f'MeanShift: sign={sign!r}: expected -1 or 1')
        self.register_buffer('shift', sign * rgb_range * torch.tensor(mean).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return x + self.shift


class MeanShiftConv(nn.Conv2d):
    """The same shift stored as a 1x1 conv (``len(mean)`` -> ``len(mean)``): identity kernel and
    bias ``sign * rgb_range * mean``, frozen (``requires_grad=False``), as HCAN's ``MeanShift``.
    Its 12 parameters are in the official checkpoint and counted (params and #conv) by the NTIRE
    counters. Loading a checkpoint overwrites them with the stored values."""

    def __init__(self, sign, rgb_range=FRL_RGB_RANGE, mean=DF2K_RGB_MEAN):
        if sign not in (-1, 1):
            raise ValueError(f'MeanShiftConv: sign={sign!r}: expected -1 or 1')
        channels = len(mean)
        super().__init__(channels, channels, 1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        self.requires_grad_(False)


class ShiftConv2d1x1(nn.Conv2d):
    """A fixed, parameter-free spatial shift of channel groups followed by a 1x1 conv (the FRL
    ``ShiftConv2d1x1``, shift mode '+'), used by the MLPs of LGTT and EXnet.

    With g = in_channels // 5 channels per group (contiguous), the shifted map is
    ``[0, g)``: in(y, x + 1); ``[g, 2g)``: in(y, x - 1); ``[2g, 3g)``: in(y + 1, x);
    ``[3g, 4g)``: in(y - 1, x); ``[4g, in_channels)``: unchanged, with zeros outside the image
    (the official depthwise 3x3 one-hot kernel with zero padding 1, computed here by padding and
    slicing: the same values). in_channels must be a multiple of 5 (as the official assertion).
    Parameters: the 1x1 conv's ``weight`` and ``bias`` only, under the conv's own keys; the
    NTIRE counters count it as one 1x1 conv."""

    def __init__(self, in_channels, out_channels, bias=True):
        if in_channels % 5:
            raise ValueError(f'ShiftConv2d1x1: in_channels={in_channels} is not a multiple of 5')
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x):
        return super().forward(shift_channel_groups(x, self.in_channels // 5))


def shift_channel_groups(x, g):
    """The shift of :class:`ShiftConv2d1x1`: four groups of ``g`` channels moved by one pixel
    (right neighbour, left, below, above) with zeros outside the image, the rest unchanged."""
    p = F.pad(x[:, :4 * g], (1, 1, 1, 1))
    return torch.cat([p[:, :g, 1:-1, 2:],           # in(y, x + 1)
                      p[:, g:2 * g, 1:-1, :-2],     # in(y, x - 1)
                      p[:, 2 * g:3 * g, 2:, 1:-1],  # in(y + 1, x)
                      p[:, 3 * g:, :-2, 1:-1],      # in(y - 1, x)
                      x[:, 4 * g:]], dim=1)


class FRLMLP(nn.Module):
    """``fc2(act(fc1(x)))`` with 1x1 convs C -> hidden -> C: :class:`ShiftConv2d1x1` (LGTT, EXnet)
    or, with ``shift=False``, plain 1x1 convs (HCAN)."""

    def __init__(self, dim, hidden, act_type, shift=True):
        super().__init__()
        conv = ShiftConv2d1x1 if shift else (lambda cin, cout: nn.Conv2d(cin, cout, 1))
        self.fc1 = conv(dim, hidden)
        self.act = make_activation(act_type, hidden)
        self.fc2 = conv(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class NormFreeGroup(nn.Module):
    """A group of transformer blocks without normalization (HCAN's ``FocalTG``, LGTT's group):
    ``x = x + sa_list[j](x); x = x + mlp_list[j](x)`` for each block j. A subclass builds the
    token mixers ``sa_list`` and the MLPs ``mlp_list`` (official key names)."""

    def forward(self, x):
        for sa, mlp in zip(self.sa_list, self.mlp_list):
            x = x + sa(x)
            x = x + mlp(x)
        return x


class FRLSkeleton(nn.Module):
    """The forward shared by the FRL networks; a subclass builds ``sub_mean``, ``add_mean``,
    ``head``, ``body`` and ``tail`` (official key names) with :meth:`add_skeleton` and inherits
    this ``forward``:

    ``add_mean(tail(body(h) + h)) / 255`` with ``h = head(sub_mean(255 * x))``."""

    rgb_range = FRL_RGB_RANGE

    def add_skeleton(self, head, body, num_feat, num_out_ch, upscale, mean_shift=MeanShift):
        """The mean shifts (``mean_shift``: :class:`MeanShift`, or HCAN's :class:`MeanShiftConv`),
        ``head``, ``body`` and the tail (3x3 conv to C_out·s² channels, PixelShuffle(s))."""
        self.sub_mean = mean_shift(-1)
        self.add_mean = mean_shift(1)
        self.head = head
        self.body = body
        self.tail = conv_pixel_shuffle(num_feat, num_out_ch, upscale)

    def forward(self, x):
        head = self.head(self.sub_mean(x * self.rgb_range))
        return self.add_mean(self.tail(self.body(head) + head)) / self.rgb_range
