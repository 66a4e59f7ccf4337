"""LKDN-S: Xie, Zhao et al., "Large Kernel Distillation Network for Efficient Single Image
Super-Resolution", CVPRW 2023 (NTIRE 2023 ESR report §4.23, team Set5_Baby). Official code and
weights: stella-von/LKDN@54df78a ``basicsr/archs/lkdns_arch.py``, ``lkdn_blocks.py`` (MIT)."""
import math

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ResidualTrunk
from .official import (OfficialImport, OfficialImportError, count_numbered, infer_upscale, numbered_layout,
                       register_importer)
from .rep import BSConvU, BSConvURep, RepUpsampler

__all__ = ['LKDNS', 'LKDB', 'LargeKernelAttention']


class LargeKernelAttention(nn.Module):
    """LKDN's large kernel attention (paper §3.2, Fig. 2c; official ``Attention``): a 17x17 kernel
    decomposed as ``pointwise`` (1x1) -> ``depthwise`` (5x5) -> ``depthwise_dilated`` (5x5,
    dilation 3), all with bias; output ``x * attention(x)``."""

    def __init__(self, channels):
        super().__init__()
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.depthwise = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.depthwise_dilated = nn.Conv2d(channels, channels, 5, padding=6, groups=channels, dilation=3)

    def forward(self, x):
        return x * self.depthwise_dilated(self.depthwise(self.pointwise(x)))


class LKDB(nn.Module):
    """Large kernel distillation block (paper §3.2, Fig. 2a; official ``LKDB``).

    Three stages on the running features r (r_0 = the input): distilled_i = GELU(c{i}_d(r)) (1x1,
    C -> C // 2) and r_i = GELU(c{i}_r(r)) (an RBSB: :class:`~rtsr_arch.archs.rep.BSConvURep`,
    deploying to a BSConv-U; no residual outside it); then GELU(c4(r_3)) (BSConv-U, C -> C // 2);
    c5 (1x1) fuses the four maps into ``num_atten`` features, the large kernel attention gates
    them, c6 (1x1) maps back to C, ``pixel_norm`` (``nn.LayerNorm`` over the channels of every
    pixel, eps 1e-5, on the channels-last map as the official block) and + the block input.
    One GELU module (``act``) serves every call, as the official block.
    """

    def __init__(self, num_feat, num_atten, deploy=False):
        super().__init__()
        dc = num_feat // 2
        for i in (1, 2, 3):
            setattr(self, f'c{i}_d', nn.Conv2d(num_feat, dc, 1))
            setattr(self, f'c{i}_r', BSConvURep(num_feat, num_feat, 3, deploy=deploy))
        self.c4 = BSConvU(num_feat, dc, 3)
        self.act = nn.GELU()
        self.c5 = nn.Conv2d(4 * dc, num_atten, 1)
        self.atten = LargeKernelAttention(num_atten)
        self.c6 = nn.Conv2d(num_atten, num_feat, 1)
        self.pixel_norm = nn.LayerNorm(num_feat)  # applied channels-last, as the official block (eps 1e-5)

    def forward(self, x):
        distilled = []
        r = x
        for i in (1, 2, 3):
            distilled.append(self.act(getattr(self, f'c{i}_d')(r)))
            r = self.act(getattr(self, f'c{i}_r')(r))
        distilled.append(self.act(self.c4(r)))
        out = self.c6(self.atten(self.c5(torch.cat(distilled, dim=1))))
        # torch's layer_norm accumulates in float32 for float16 inputs: c6's outputs reach ~5e4 with the
        # released weights, whose squares overflow a float16 variance computed by hand
        return self.pixel_norm(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) + x


@ARCH_REGISTRY.register()
class LKDNS(ResidualTrunk, SRArch):
    """LKDN-S, the NTIRE 2023 ESR entry of team Set5_Baby (report §4.23, Fig. 36/37; paper §3.1):
    the input repeated ``num_in`` times along the channels -> ``fea_conv`` (BSConv-U 3x3) -> B1..Bn
    LKDBs in a chain -> ``c1`` (1x1 over the concatenation of every block's output) -> GELU ->
    ``c2`` (BSConv-U 3x3) + ``fea_conv``'s output -> ``upsampler`` (3x3 conv to 3·s² channels,
    PixelShuffle(s)).

    Training form (the official ``conv='BSConvU_rep', upsampler='pixelshuffle_rep'``, the
    checkpoint ``LKDN-S_x4.pth``): the three c{i}_r of every block are RBSBs
    (:class:`~rtsr_arch.archs.rep.BSConvURep`) and the upsampler is the re-parameterized
    upsampler (:class:`~rtsr_arch.archs.rep.RepUpsampler`); ``fea_conv``, ``c4`` and ``c2`` are
    plain BSConv-U in both forms. Deploy form (``conv='BSConvU', upsampler='pixelshuffledirect'``,
    ``LKDN-S_del_rep_x4.pth``): BSConv-U everywhere and one 3x3 conv ``upsampler.0``.
    :func:`rtsr_arch.reparameterize` turns the first into the second exactly (float64 fusion).

    Every operation is local (no global pooling), so tiled inference is exact with a receptive
    radius of 12 per block (four 3x3 convs and the 5x5 + dilated 5x5 attention) + 3. Not float16
    safe: with the released weights the features before each block's LayerNorm exceed float16's
    range (use float32 or bfloat16).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (42); distilled features C // 2.
        num_atten: attention channels (42).
        num_block: LKDBs (5), keys B1..Bn.
        upscale: 2, 3 or 4 (4: the released weights).
        num_in: how many copies of the input are concatenated (4).
        deploy: build the reparameterized network directly.
    """

    paper = ('Xie, Zhao et al., Large Kernel Distillation Network for Efficient Single Image Super-Resolution, '
             'CVPRW 2023 (NTIRE 2023 ESR, team Set5_Baby)')
    code = 'stella-von/LKDN@54df78a'
    license = 'MIT'
    # the released weights drive c6's outputs (before the LayerNorm) past float16's 65504 on ordinary
    # photographs (~8e4 on a 64x64 crop, ~8e5 on a random binary image): float16 gives inf/NaN;
    # bfloat16 (float32's range) is fine
    fp16_safe = False
    trunk_names = ('fea_conv', 'c2', 'upsampler')
    block_prefix = 'B'

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(2) = 42, num_atten: Int(1) = 42,
                 num_block: Int(1) = 5, upscale: OneOf(2, 3, 4) = 4, num_in: Int(1) = 4, deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.num_in = num_in
        self.deploy = deploy
        self.receptive_radius = 12 * num_block + 3
        self.fea_conv = BSConvU(num_in_ch * num_in, num_feat, 3)
        self.add_blocks([LKDB(num_feat, num_atten, deploy) for _ in range(num_block)])
        self.c1 = nn.Conv2d(num_feat * num_block, num_feat, 1)
        self.GELU = nn.GELU()
        self.c2 = BSConvU(num_feat, num_feat, 3)
        self.upsampler = RepUpsampler(num_feat, num_out_ch, upscale, deploy=deploy)

    def body(self, fea):
        return self.GELU(self.c1(torch.cat(self.block_outputs(fea), dim=1)))

    def forward(self, x):
        return super().forward(x.repeat(1, self.num_in, 1, 1))


def _is_square_multiple(channels, image_channels):
    ratio, rest = divmod(channels, image_channels)
    return not rest and ratio > 1 and math.isqrt(ratio) ** 2 == ratio


def _is_lkdns(sd):
    return numbered_layout(sd, ('fea_conv', 'c1', 'c2', 'upsampler'), LKDNS.block_prefix) \
        and 'B1.atten.depthwise_dilated.weight' in sd and 'fea_conv.pw.weight' in sd


@register_importer('LKDNS', detect=_is_lkdns, param_keys=('params_ema', 'params'))
def import_official_lkdns(sd, overrides):
    """stella-von/LKDN ``LKDN-S_del_rep_x4.pth`` (deploy form, raw state dict) and ``LKDN-S_x4.pth``
    (training form, ``{params, params_ema}``: ``params_ema`` is read, as the official test config
    does); any state dict with the official LKDN-S keys."""
    num_block = count_numbered(sd, LKDNS.block_prefix, 'LKDN-S')
    num_feat, stacked = sd['fea_conv.pw.weight'].shape[:2]
    rep_blocks = 'B1.c1_r.rep1x1.weight' in sd
    rep_up = 'upsampler.conv3.weight' in sd
    if rep_blocks != rep_up:
        raise OfficialImportError('mixed forms: the blocks are ' + ('re-parameterizable' if rep_blocks else 'deployed')
                                  + ' but the upsampler is ' + ('re-parameterizable' if rep_up else 'deployed'))
    up = sd['upsampler.conv3.weight' if rep_up else 'upsampler.0.weight']
    notes, assumed = [], ['num_in_ch']
    if 'num_in_ch' in overrides:
        num_in_ch = int(overrides['num_in_ch'])
    else:  # RGB when the widths allow it, else grayscale
        num_in_ch = next((c for c in (3, 1) if stacked % c == 0 and _is_square_multiple(up.shape[0], c)), 1)
        notes.append(f'num_in_ch: fea_conv reads {stacked} channels = image channels x copies (num_in); '
                     f'assuming {num_in_ch} image channels x {stacked // num_in_ch} copies')
    if stacked % num_in_ch:
        raise OfficialImportError(f'fea_conv reads {stacked} channels: not a multiple of num_in_ch={num_in_ch}')
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    opt = dict(type='LKDNS', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
               num_atten=sd['B1.c5.weight'].shape[0], num_block=num_block,
               upscale=infer_upscale(up.shape[0], num_out_ch), num_in=stacked // num_in_ch, deploy=not rep_blocks)
    opt.update(overrides)
    return OfficialImport(sd, opt, notes, tuple(assumed))
