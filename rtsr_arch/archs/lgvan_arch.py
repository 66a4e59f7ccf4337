"""LGVAN: Local-Global Visual Attention Network, the NTIRE 2023 ESR entry of team Dase-IDEALab
(NTIRE 2023 Efficient SR challenge report §4.26, Fig. 42, Eqs. 13-16). Official code and weights:
charonf/LGVAN-NTIRE2023-ESR@a6fa8ff ``models/team18_LGVAN.py``, ``model_zoo/team18_LGVAN.pth`` (MIT)."""
import re

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from .contract import Int, OneOf, SRArch
from .layers import LayerNorm2d
from .official import ImportNotes, OfficialImportError, count_indexed, register_importer, top_level_names

__all__ = ['LGVAN', 'LGCA', 'LGVANAttention', 'LEFN']


def _depthwise(channels, kernel_size, padding, dilation=1):
    return nn.Conv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, groups=channels)


class LGCA(nn.Module):
    """Local-global convolutional attention (report Eqs. 13-14; official ``LKA``): ``h = head(u)``
    (1x1); branch 0 = ``conv_spatial(conv0(h))`` (depthwise 5x5, then depthwise 5x5 dilation 3);
    branch 1 = ``conv_h(conv_v(h))`` (depthwise 1x5 then 5x1), branch 2 = ``conv_h_2(conv_v_2(h))``
    (depthwise 1x3 then 3x1), branch 3 = h; output ``u * conv1(sum of the branches)`` (1x1).

    **Padding quirk, replicated**: the official asymmetric pairs pad on the wrong axis —
    ``conv_v`` (1x5) pads 2 rows and no column, ``conv_h`` (5x1) 2 columns and no row (the 1x3 /
    3x1 pair likewise by 1). The intermediate map is (H + 4) x (W - 4), the result H x W, but not
    a same-padded separable 5x5: its rows beyond the image carry ``conv_v``'s bias instead of
    zeros, and its two outer columns on each side are ``conv_h``'s bias alone (one column for the
    3-pair). The official weights were trained with it, so it is kept (the names are the
    official ones: ``conv_v`` is the horizontal kernel). Inputs must be at least 5 pixels wide
    (``min_input_size``). The effect is confined to the image border: tiled inference with the
    declared radius stays exact.
    """

    def __init__(self, channels):
        super().__init__()
        self.head = nn.Conv2d(channels, channels, 1)
        self.conv0 = _depthwise(channels, 5, 2)
        self.conv_spatial = _depthwise(channels, 5, 6, dilation=3)
        self.conv_v = _depthwise(channels, (1, 5), (2, 0))
        self.conv_h = _depthwise(channels, (5, 1), (0, 2))
        self.conv_v_2 = _depthwise(channels, (1, 3), (1, 0))
        self.conv_h_2 = _depthwise(channels, (3, 1), (0, 1))
        self.conv1 = nn.Conv2d(channels, channels, 1)

    def forward(self, u):
        h = self.head(u)
        attn = self.conv_spatial(self.conv0(h)) + self.conv_h(self.conv_v(h)) + h + self.conv_h_2(self.conv_v_2(h))
        return u * self.conv1(attn)


class LGVANAttention(nn.Module):
    """The attention half of an LGAB (official ``Attention``): ``x + scale * proj_2(LGCA(GELU(
    proj_1(LN(x)))))``, LN channels-first with eps 1e-6, ``scale`` a learned (1, C, 1, 1) gain
    (initialized to 0, as the official code)."""

    def __init__(self, channels):
        super().__init__()
        self.norm = LayerNorm2d(channels, eps=1e-6)
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LGCA(channels)
        self.proj_2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        y = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(self.norm(x)))))
        return y * self.scale + x


class LEFN(nn.Module):
    """Locally enhanced feed-forward network (report Eqs. 15-16; official ``MLP``): ``t = fc1(LN(x))``
    (1x1, C -> 2C); ``x + scale * fc2(GELU(dwconv(t) + t))`` (depthwise 3x3 without bias: the
    self-residual)."""

    def __init__(self, channels):
        super().__init__()
        self.norm = LayerNorm2d(channels, eps=1e-6)
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.fc1 = nn.Conv2d(channels, 2 * channels, 1)
        self.activation = nn.GELU()
        self.dwconv = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels, bias=False)
        self.fc2 = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x):
        t = self.fc1(self.norm(x))
        return self.fc2(self.activation(self.dwconv(t) + t)) * self.scale + x


class LGAB(nn.Module):
    """Local-global attention block (official ``BasicConv``): attention (``atten``) then LEFN (``MLP``)."""

    def __init__(self, channels):
        super().__init__()
        self.atten = LGVANAttention(channels)
        self.MLP = LEFN(channels)

    def forward(self, x):
        return self.MLP(self.atten(x))


@ARCH_REGISTRY.register()
class LGVAN(SRArch):
    """LGVAN (report §4.26, Fig. 42a): ``conv_first`` (3x3) -> ``num_block`` LGABs (attention then
    LEFN, each with its own learned residual gain) -> ``conv_after_body`` (3x3, **2 groups**) + the
    ``conv_first`` output -> upsampling (x4: two [1x1 conv to 4C, PixelShuffle(2)]; x2/x3: one
    [1x1 conv to C·s², PixelShuffle(s)]) -> LeakyReLU(0.2) -> ``conv_last`` (3x3 at the output
    resolution) -> + the bilinear upscaled input (``align_corners=False``).

    The official key of the upsampler is ``upsapling`` (sic); kept. Not reparameterizable:
    ``deploy`` is accepted and the network is its own deploy form. The asymmetric depthwise
    pairs keep the official wrong-axis padding (see :class:`LGCA`). Every operation is local:
    tiled inference is exact with a receptive radius of 9 per block (the dilated 5x5 of the
    attention reaches 8 pixels, the LEFN's 3x3 one more) + 3 (``conv_first``,
    ``conv_after_body``, and ``conv_last``'s 3x3 at the output resolution).

    Args:
        num_in_ch, num_out_ch: image channels (the bilinear skip adds the input to the output:
            equal counts).
        num_feat: feature channels C (32; even: ``conv_after_body`` has 2 groups).
        num_block: LGABs (9).
        upscale: 2, 3 or 4 (4: the released weights).
        deploy: accepted for the contract (nothing to fuse).
    """

    paper = ('Dase-IDEALab, LGVAN: Local-Global Visual Attention Network, in Li, Zhang, Timofte et al., '
             'NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, §4.26')
    code = 'charonf/LGVAN-NTIRE2023-ESR@a6fa8ff'
    license = 'MIT'
    min_input_size = 5  # conv_v's (1, 5) kernel is not padded along the width

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(2) = 32, num_block: Int(0) = 9,
                 upscale: OneOf(2, 3, 4) = 4, deploy: bool = False):
        super().__init__()
        if num_feat % 2:
            raise ValueError(f'LGVAN: num_feat={num_feat}: expected an even number (conv_after_body has 2 groups)')
        if num_in_ch != num_out_ch:
            raise ValueError(f'LGVAN: num_out_ch={num_out_ch}: expected num_in_ch={num_in_ch} (the bilinear '
                             f'skip adds the input to the output)')
        self.upscale = upscale
        self.deploy = deploy
        self.receptive_radius = 9 * num_block + 3
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.layers = nn.ModuleList([LGAB(num_feat) for _ in range(num_block)])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, padding=1, groups=2)
        if upscale == 4:
            self.upsapling = nn.Sequential(nn.Conv2d(num_feat, 4 * num_feat, 1), nn.PixelShuffle(2),
                                           nn.Conv2d(num_feat, 4 * num_feat, 1), nn.PixelShuffle(2))
        else:
            self.upsapling = nn.Sequential(nn.Conv2d(num_feat, num_feat * upscale ** 2, 1), nn.PixelShuffle(upscale))
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)

    def forward(self, x):
        fea = self.conv_first(x)
        res = fea
        for layer in self.layers:
            res = layer(res)
        res = self.conv_after_body(res) + fea
        y = self.conv_last(self.act(self.upsapling(res)))
        return y + F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)


def _is_lgvan(sd):
    return top_level_names(sd) in ({'conv_first', 'layers', 'conv_after_body', 'upsapling', 'conv_last'},
                                   {'conv_first', 'conv_after_body', 'upsapling', 'conv_last'}) \
        and 'upsapling.0.weight' in sd and 'conv_after_body.weight' in sd


@register_importer('LGVAN', detect=_is_lgvan, param_keys=('params_ema', 'params'))
def import_official_lgvan(sd, overrides):
    """charonf/LGVAN-NTIRE2023-ESR ``team18_LGVAN.pth``: ``{params, params_ema}`` (they differ;
    ``params_ema`` is read, as the official ``test_demo.py`` does); any state dict with the
    official LGVAN keys (``upsapling`` sic)."""
    num_feat, num_in_ch = sd['conv_first.weight'].shape[:2]
    num_out_ch = sd['conv_last.weight'].shape[0]
    if sd['conv_after_body.weight'].shape[1] * 2 != num_feat:
        raise OfficialImportError('conv_after_body does not have 2 groups (the official LGVAN)')
    four = 'upsapling.2.weight' in sd
    ratio, rest = divmod(sd['upsapling.0.weight'].shape[0], num_feat)
    scale = 4 if four else {4: 2, 9: 3}.get(ratio)
    if rest or scale is None or (four and ratio != 4):
        raise OfficialImportError(f"upsapling.0 has {sd['upsapling.0.weight'].shape[0]} outputs for {num_feat} "
                                  f'features: not a x2, x3 or x4 LGVAN upsampler')
    blocks = count_indexed(sd, 'layers')
    if any(not re.fullmatch(r'layers\.\d+\.(atten|MLP)\..+', k) for k in sd if k.startswith('layers.')):
        raise OfficialImportError('unexpected keys under layers.* (not LGVAN blocks)')
    opt = dict(type='LGVAN', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=blocks,
               upscale=scale, deploy=False)
    notes = ImportNotes(overrides, assumed=['deploy'])
    notes.single_form('LGVAN')
    return notes.result(sd, opt)
