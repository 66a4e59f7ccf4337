"""RFDN: Liu, Tang, Wu, "Residual Feature Distillation Network for Lightweight Image
Super-Resolution", ECCV Workshops 2020 (AIM 2020 efficient SR winner), the baseline of the NTIRE
2023 Efficient SR challenge (report §2.2). Official code and weights:
ofsoundof/NTIRE2023_ESR@a6d76c7 ``models/team00_RFDN.py``, ``model_zoo/team00_rfdn.pth`` (MIT)."""
import re

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS, ESA, ESA_MIN_INPUT_SIZE, conv_pixel_shuffle, make_activation
from .official import OfficialImport, OfficialImportError, infer_upscale, register_importer, top_level_names

__all__ = ['RFDN', 'RFDB', 'RFDN_ACTIVATIONS']

# one activation module serves features of two widths (C and C // 2), as in the official block:
# a per-channel PReLU cannot, so it is not offered
RFDN_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a != 'prelu')


def _conv(cin, cout, k):
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class RFDB(nn.Module):
    """Residual feature distillation block (RFDN paper §3.2, Fig. 3; official ``RFDB``).

    Three stages on the running features r (r_0 = the block input): distilled_i = act(c{i}_d(r))
    (1x1, C -> C/2) and r_i = act(c{i}_r(r) + r) (3x3 shallow residual block, C -> C); then
    act(c4(r_3)) (3x3, C -> C/2); the four C/2 maps are concatenated, fused by c5 (1x1, 2C -> C)
    and gated by RFDN's ESA (``variant='rfdn'``). One activation module (``act``) serves every
    call, as the official block. (The official ``distillation_rate`` argument is ignored there:
    the distilled width is always C // 2.)
    """

    def __init__(self, num_feat, esa_channels, act_type='lrelu'):
        super().__init__()
        dc = num_feat // 2
        for i in (1, 2, 3):
            setattr(self, f'c{i}_d', _conv(num_feat, dc, 1))
            setattr(self, f'c{i}_r', _conv(num_feat, num_feat, 3))
        self.c4 = _conv(num_feat, dc, 3)
        self.act = make_activation(act_type, num_feat)
        self.c5 = _conv(4 * dc, num_feat, 1)
        self.esa = ESA(num_feat, esa_channels, variant='rfdn')

    def forward(self, x):
        distilled = []
        r = x
        for i in (1, 2, 3):
            distilled.append(self.act(getattr(self, f'c{i}_d')(r)))
            r = self.act(getattr(self, f'c{i}_r')(r) + r)
        distilled.append(self.act(self.c4(r)))
        return self.esa(self.c5(torch.cat(distilled, dim=1)))


@ARCH_REGISTRY.register()
class RFDN(SRArch):
    """RFDN (paper §3.1, Fig. 2; NTIRE 2023 ESR report §2.2): fea_conv (3x3) -> B1..B{num_block}
    RFDBs in a chain -> c (1x1 over the concatenation of every block's output, + LeakyReLU) ->
    LR_conv (3x3) + fea_conv's output -> upsampler (3x3 conv to 3·s² channels, PixelShuffle(s)).

    The official network computes on [0, 255] images: the input is multiplied by 255 inside and
    the output divided by 255, so inputs are RGB in [0, 1] like every network here and the
    official weights load unchanged. Not reparameterizable: ``deploy`` is accepted and the network
    is its own deploy form.

    Every block ends with ESA, whose coarse map is bilinearly resized to the image size: inputs
    must be at least 15x15, and the output depends on the image size, so tiled inference is not
    exact (``tile_exact = False``).

    float16 (``fp16_safe``): computing on [0, 255] leaves 255x less headroom than a [0, 1]
    network. On photographs the official weights' conv outputs peak near 1.5e3 (40x below
    float16's maximum) and half-precision outputs stay within 5e-3 of float32 (0.001 dB); inputs
    far from photographs (a full-contrast one-pixel checkerboard) drive the official weights out
    of the image range in float32 already, and half precision then differs widely.

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (50); distilled features are C // 2.
        num_block: RFDBs (4).
        upscale: 2, 3 or 4 (4: the released weights).
        act_type: activation of the blocks and of ``c`` (LeakyReLU, slope 0.05; no PReLU: one
            module serves C and C // 2 channels).
        deploy: accepted for the contract (nothing to fuse).

    The ESA width is C // 4 (12 for C = 50), as the official code. The same topology with
    another ESA width is :class:`~.prfdn_arch.PRFDN` (NTIRE 2023 team SEU_CNII: C 60, f 14).
    """

    paper = ('Liu, Tang, Wu, Residual Feature Distillation Network for Lightweight Image Super-Resolution, '
             'ECCV Workshops 2020 (AIM 2020); NTIRE 2023 Efficient SR baseline')
    code = 'ofsoundof/NTIRE2023_ESR@a6d76c7'
    license = 'MIT'
    min_input_size = ESA_MIN_INPUT_SIZE
    value_range = (0, 255)
    fp16_safe = True
    tile_exact = False
    img_range = 255.0

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(4) = 50, num_block: Int(1) = 4,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*RFDN_ACTIVATIONS) = 'lrelu', deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        self.fea_conv = _conv(num_in_ch, num_feat, 3)
        self.block_names = [f'B{i}' for i in range(1, num_block + 1)]
        for name in self.block_names:
            self.add_module(name, RFDB(num_feat, num_feat // 4, act_type))
        self.c = nn.Sequential(_conv(num_block * num_feat, num_feat, 1), make_activation(act_type, num_feat))
        self.LR_conv = _conv(num_feat, num_feat, 3)
        self.upsampler = conv_pixel_shuffle(num_feat, num_out_ch, upscale)

    def forward(self, x):
        fea = self.fea_conv(x * self.img_range)
        outs = []
        out = fea
        for name in self.block_names:
            out = getattr(self, name)(out)
            outs.append(out)
        out = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(out) / self.img_range


def _block_numbers(sd, pattern):
    names = {k.split('.', 1)[0] for k in sd}
    return sorted(int(m.group(1)) for m in map(re.compile(pattern).fullmatch, names) if m)


def _is_rfdn(sd):
    # RFDN's keys with ESA width C // 4 (another width: PRFDN, same keys)
    blocks = _block_numbers(sd, r'B(\d+)')
    names = {'fea_conv', 'c', 'LR_conv', 'upsampler'} | {f'B{i}' for i in blocks}
    return bool(blocks) and top_level_names(sd) == names \
        and 'B1.c1_d.weight' in sd and 'B1.esa.conv_max.weight' in sd \
        and sd['B1.esa.conv1.weight'].shape[0] == sd['fea_conv.weight'].shape[0] // 4


@register_importer('RFDN', detect=_is_rfdn)
def import_official_rfdn(sd, overrides):
    """ofsoundof/NTIRE2023_ESR ``team00_rfdn.pth`` (legacy non-zip torch file, raw state dict;
    byte-identical to eduardzamfir/NTIRE23-RTSR ``rfdn_X4.pth``), and any state dict with the
    official RFDN keys (``fea_conv``, ``B{i}.{c1_d,...,c5}``, ``B{i}.esa.*``, ``c.0``,
    ``LR_conv``, ``upsampler.0``) and ESA width C // 4 (other widths are PRFDN's)."""
    blocks = _block_numbers(sd, r'B(\d+)')
    if blocks != list(range(1, len(blocks) + 1)):
        raise OfficialImportError(f'RFDN blocks must be B1..B{len(blocks)}, found B{blocks}')
    num_feat, num_in_ch = sd['fea_conv.weight'].shape[:2]
    if sd['B1.c1_d.weight'].shape[0] != num_feat // 2:
        raise OfficialImportError(f"distilled width {sd['B1.c1_d.weight'].shape[0]} is not num_feat // 2 = "
                                  f'{num_feat // 2} (the official RFDB)')
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    opt = dict(type='RFDN', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=len(blocks),
               upscale=infer_upscale(sd['upsampler.0.weight'].shape[0], num_out_ch), deploy=False)
    notes, assumed = [], ['deploy']
    if 'deploy' not in overrides:
        notes.append('deploy: RFDN has no reparameterizable block; its training and deploy forms are the same '
                     'network (deploy=False)')
    opt['act_type'] = overrides.get('act_type', 'lrelu')
    if 'act_type' not in overrides:
        assumed.append('act_type')
        notes.append("act_type: not stored in the weights; using the official LeakyReLU (slope 0.05) "
                     "(override with --set act_type=...)")
    opt.update(overrides)
    return OfficialImport(sd, opt, notes, tuple(assumed))
