"""SPAN: Wan, Yu, Li, Chen, Zou, Liu, Yin, Zuo, "Swift Parameter-free Attention Network for
Efficient Super-Resolution", CVPRW 2024 (NTIRE 2024 ESR winner; XiaomiMM's entry to the AIS 2024
RTSR challenge, AIS 2024 RTSR report §3.8). Official code: hongyuanyu/SPAN@c77a591
``basicsr/archs/span_arch.py`` (Apache-2.0)."""
import re

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import conv_pixel_shuffle
from .official import OfficialImport, OfficialImportError, infer_upscale, register_importer, top_level_names
from .rep import Conv3XC
from .rep.conv3xc import fuse_conv3xc

__all__ = ['SPAN', 'SPAB', 'SPAN_RGB_MEAN', 'SPAN_IMG_RANGE', 'span_official_training_layout']

SPAN_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # official rgb_mean (DIV2K)
SPAN_IMG_RANGE = 255.0  # official img_range

_CONV3XC_BRANCHES = ('sk', 'conv.0', 'conv.1', 'conv.2')


class SPAB(nn.Module):
    """Swift parameter-free attention block (paper §3.2, Eq. 2): three Conv3XC with SiLU between,
    ``att = sigmoid(out3) - 0.5`` (the parameter-free, origin-symmetric attention), output
    ``(out3 + x) * att``. Returns ``(output, out1)`` where ``out1`` is the first conv's output
    **after** its SiLU: the official block applies ``SiLU(inplace=True)`` to that tensor and then
    returns it, so the value SPAN concatenates is the activated one. (The official block also
    returns the attention map and holds an unused LeakyReLU ``act2``; neither has parameters.)"""

    def __init__(self, channels, deploy=False):
        super().__init__()
        self.c1_r = Conv3XC(channels, channels, gain=2, deploy=deploy)
        self.c2_r = Conv3XC(channels, channels, gain=2, deploy=deploy)
        self.c3_r = Conv3XC(channels, channels, gain=2, deploy=deploy)
        self.act1 = nn.SiLU()

    def forward(self, x):
        out1 = self.act1(self.c1_r(x))
        out3 = self.c3_r(self.act1(self.c2_r(out1)))
        att = torch.sigmoid(out3) - 0.5
        return (out3 + x) * att, out1


@ARCH_REGISTRY.register()
class SPAN(SRArch):
    """SPAN (paper §3, Fig. 2; AIS 2024 RTSR report §3.8, Fig. 15, Eq. 3):
    ``x <- (x - mean) * 255`` -> ``conv_1`` (Conv3XC) -> ``block_1`` ... ``block_N`` (SPAB) ->
    ``conv_2`` (Conv3XC) on the last block's output -> ``conv_cat`` (1x1 over
    ``cat[conv_1 out, conv_2 out, block_1 out, last block's activated c1_r out]``) -> ``upsampler``
    (3x3 conv + PixelShuffle). Every Conv3XC deploys to one 3x3 conv (``eval_conv``).

    Official quirks kept: the input is mean-subtracted and scaled by 255 and the output is **not**
    de-normalized (the network learns a [0, 1] output directly); the fourth concatenated feature
    is the last block's first conv output after its in-place SiLU (see :class:`SPAB`); training
    checkpoints hold ``eval_conv`` next to the training branches (see
    :class:`~rtsr_arch.archs.rep.Conv3XC`: buffers here, refreshed from the branches whenever a
    state dict is taken, ignored on load as the official eval forward ignores them). The official
    class has 6 blocks; ``num_block`` generalizes it with the last block in block 6's role (the
    AIS 2024 entry has 2 SPABs; its code is not public).

    Args:
        num_in_ch, num_out_ch: image channels (``norm`` needs 3 input channels).
        num_feat: feature channels (official ``feature_channels``, 48).
        num_block: SPABs (6; the AIS 2024 entry: 2).
        upscale: 1, 2, 3, 4 or 8 (official default 4).
        norm: subtract the official mean and scale by 255 inside (official); False for spandrel's
            ``norm=False`` SPAN, which computes on the [0, 1] input and carries a ``no_norm``
            buffer in its state dict, as here.
        deploy: build the reparameterized network directly (only ``eval_conv`` per Conv3XC).
        preset: ``'span_ch48'`` (the paper's SPAN: 6 SPABs, 48 channels, x4; the defaults) or
            ``'ais24'`` (XiaomiMM's AIS 2024 entry: 2 SPABs, 16 channels, x4; the width is inferred
            from the report's Table 1, see :attr:`presets`).
    """

    paper = ('Wan, Yu, Li, Chen, Zou, Liu, Yin, Zuo, Swift Parameter-free Attention Network for Efficient '
             'Super-Resolution, CVPRW 2024')
    code = 'hongyuanyu/SPAN@c77a591'
    license = 'Apache-2.0'
    value_range = (0.0, SPAN_IMG_RANGE)  # computes on (x - mean) * 255
    preset_key = 'preset'
    # 'ais24': the report (§3.8) gives 2 SPABs but no width; Table 1 gives 0.026 M parameters and
    # 13.3 G MACs at 960x540. With B blocks and C channels at x4 the deploy network has
    # (27 B + 13) C^2 + (462 + 3 B) C + 48 parameters and (27 B + 13) C^2 + 459 C MACs per LR pixel;
    # for B = 2: C = 16 gives 24,688 parameters and 12.70 G MACs, C = 17 gives 27,367 and 14.08 G
    # (no integer width gives both figures); C = 16 is the nearer on both (-5 % / -4.5 %, against
    # +5 % / +6 % for C = 17).
    presets = {
        'span_ch48': dict(num_feat=48, num_block=6, upscale=4),
        'ais24': dict(num_feat=16, num_block=2, upscale=4),
    }

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 48, num_block: Int(1) = 6,
                 upscale: OneOf(1, 2, 3, 4, 8) = 4, norm: bool = True, deploy: bool = False, preset: str = None):
        super().__init__()
        if norm and num_in_ch != len(SPAN_RGB_MEAN):
            raise ValueError(f'SPAN: num_in_ch={num_in_ch} needs norm=False (the official mean subtraction is '
                             f'defined for {len(SPAN_RGB_MEAN)} RGB channels)')
        self.upscale = upscale
        self.num_block = num_block
        self.norm = norm
        self.deploy = deploy
        # 3x3 convs on the longest path: conv_1, 3 per block, conv_2, the upsampler
        self.receptive_radius = 3 * num_block + 3
        if norm:
            self.register_buffer('mean', torch.tensor(SPAN_RGB_MEAN).view(1, -1, 1, 1), persistent=False)
        else:
            self.value_range = (0.0, 1.0)
            self.register_buffer('no_norm', torch.zeros(1))  # spandrel's marker of a norm=False SPAN
        self.conv_1 = Conv3XC(num_in_ch, num_feat, gain=2, deploy=deploy)
        for i in range(1, num_block + 1):
            self.add_module(f'block_{i}', SPAB(num_feat, deploy=deploy))
        self.conv_cat = nn.Conv2d(num_feat * 4, num_feat, 1)
        self.conv_2 = Conv3XC(num_feat, num_feat, gain=2, deploy=deploy)
        self.upsampler = conv_pixel_shuffle(num_feat, num_out_ch, upscale)

    def forward(self, x):
        if self.norm:
            x = (x - self.mean) * SPAN_IMG_RANGE
        feat = self.conv_1(x)
        out, out1 = self.block_1(feat)
        out_b1 = out
        for i in range(2, self.num_block + 1):
            out, out1 = getattr(self, f'block_{i}')(out)
        out = self.conv_cat(torch.cat([feat, self.conv_2(out), out_b1, out1], 1))
        return self.upsampler(out)


# ----------------------------------------------------------------------------- official checkpoints

_FIXED = {'conv_1', 'conv_2', 'conv_cat', 'upsampler'}


def _block_numbers(names):
    return sorted(int(m.group(1)) for m in map(re.compile(r'block_(\d+)$').match, names) if m)


def _is_span(sd):
    names = top_level_names(sd)
    blocks = {f'block_{i}' for i in _block_numbers(names)}
    return (_FIXED | {'block_1'} <= names and names <= _FIXED | blocks | {'no_norm'}
            and ('conv_1.eval_conv.weight' in sd or 'conv_1.sk.weight' in sd) and 'upsampler.0.weight' in sd)


def _conv3xc_prefixes(num_block):
    return ['conv_1', 'conv_2'] + [f'block_{i}.c{j}_r' for i in range(1, num_block + 1) for j in (1, 2, 3)]


@register_importer('SPAN', detect=_is_span)
def import_official_span(sd, overrides):
    """hongyuanyu/SPAN (and spandrel) SPAN state dicts: the training form, whose every Conv3XC
    holds ``sk``, ``conv.{0,1,2}`` and ``eval_conv`` (the official module registers all of them),
    or the deploy form (``eval_conv`` only, as this package's fused checkpoints). The official
    ``eval_conv`` values are kept as loaded and ignored (the training form computes from its
    branches, as the official eval forward re-fuses them); a training-form dict without them gets
    them fused. spandrel's ``no_norm`` marker selects ``norm=False``."""
    sd = dict(sd)
    notes = []
    numbers = _block_numbers(top_level_names(sd))
    num_block = len(numbers)
    if numbers != list(range(1, num_block + 1)):
        raise OfficialImportError(f'SPAN blocks must be block_1 ... block_N; found block_{numbers}')
    deploy = 'conv_1.sk.weight' not in sd
    if not deploy:
        missing = [p for p in _conv3xc_prefixes(num_block) if f'{p}.eval_conv.weight' not in sd]
        for prefix in missing:
            pairs = [(sd[f'{prefix}.{b}.weight'], sd.get(f'{prefix}.{b}.bias')) for b in _CONV3XC_BRANCHES]
            weight, bias = fuse_conv3xc(*[(w.double(), None if b is None else b.double()) for w, b in pairs], 3)
            sd[f'{prefix}.eval_conv.weight'] = weight.to(pairs[0][0].dtype)
            if bias is not None:
                sd[f'{prefix}.eval_conv.bias'] = bias.to(pairs[0][0].dtype)
        if missing:
            notes.append(f'eval_conv was missing in {len(missing)} Conv3XC; fused from their branches')
    head = sd['conv_1.sk.weight' if not deploy else 'conv_1.eval_conv.weight']
    num_feat, num_in_ch = head.shape[:2]
    out_channels = sd['upsampler.0.weight'].shape[0]
    if 'num_out_ch' in overrides:
        num_out_ch = int(overrides['num_out_ch'])
    else:  # the input's channel count, else RGB, else gray (as spandrel)
        num_out_ch = next((c for c in (num_in_ch, 3, 1) if _fits(out_channels, c)), num_in_ch)
        if num_out_ch != num_in_ch:
            notes.append(f'num_out_ch: {num_out_ch} ({out_channels} upsampler outputs do not fit {num_in_ch})')
    opt = dict(type='SPAN', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=num_block,
               upscale=infer_upscale(out_channels, num_out_ch), norm='no_norm' not in sd, deploy=deploy)
    if num_block != 6:
        notes.append(f'{num_block} SPABs: the official class has 6; block_{num_block} takes block 6\'s role in the '
                     f'concatenation')
    opt.update(overrides)
    return OfficialImport(sd, opt, notes, ())


def _fits(out_channels, channels):
    """Whether ``out_channels`` upsampler outputs are ``channels`` times a square."""
    try:
        infer_upscale(out_channels, channels)
    except OfficialImportError:
        return False
    return True


@torch.no_grad()
def span_official_training_layout(state_dict, gain=2):
    """A deploy-form SPAN state dict (``eval_conv`` only) as an exactly equivalent state dict in
    the official *training* layout, which hongyuanyu/SPAN's class and spandrel load strictly
    (they require the ``sk``/``conv`` keys and re-fuse them into ``eval_conv`` in eval mode).

    Each ``eval_conv`` (W, b) becomes ``conv.0`` = [I; 0] (1x1, the input into the first ``in``
    of ``gain*in`` channels, bias 0), ``conv.1`` = W in the top-left block (bias [b; 0]),
    ``conv.2`` = [I, 0] (bias 0), ``sk`` = 0; ``eval_conv`` is kept. Every product in the
    re-fusion is by an exact 0 or 1, so it returns W and b bit for bit. Training-form entries
    pass through unchanged; other keys (``conv_cat``, ``upsampler``, ``no_norm``) are copied."""
    out = {}
    for key, value in state_dict.items():
        out[key] = value
        if not key.endswith('.eval_conv.weight') or key.replace('.eval_conv.weight', '.sk.weight') in state_dict:
            continue
        prefix = key[:-len('.eval_conv.weight')]
        weight = value
        bias = state_dict.get(f'{prefix}.eval_conv.bias')
        if bias is None:
            raise OfficialImportError(f'{prefix}.eval_conv has no bias: the official Conv3XC always has one')
        c_out, c_in, kh, kw = weight.shape
        w0 = weight.new_zeros(gain * c_in, c_in, 1, 1)
        w0[range(c_in), range(c_in)] = 1
        w1 = weight.new_zeros(gain * c_out, gain * c_in, kh, kw)
        w1[:c_out, :c_in] = weight
        b1 = bias.new_zeros(gain * c_out)
        b1[:c_out] = bias
        w2 = weight.new_zeros(c_out, gain * c_out, 1, 1)
        w2[range(c_out), range(c_out)] = 1
        out.update({f'{prefix}.sk.weight': weight.new_zeros(c_out, c_in, 1, 1),
                    f'{prefix}.sk.bias': bias.new_zeros(c_out),
                    f'{prefix}.conv.0.weight': w0, f'{prefix}.conv.0.bias': bias.new_zeros(gain * c_in),
                    f'{prefix}.conv.1.weight': w1, f'{prefix}.conv.1.bias': b1,
                    f'{prefix}.conv.2.weight': w2, f'{prefix}.conv.2.bias': bias.new_zeros(c_out)})
    return out
