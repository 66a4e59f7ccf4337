"""LGTT: FRL Team 0 (Jinchen Zhu, Jinpeng Shi, Hui Li, Qianru Xv; Anhui University / Fried Rice Lab),
"LGTT: Local-Global Term Transformer for SR", in Li et al., "NTIRE 2023 Challenge on Efficient
Super-Resolution: Methods and Results", CVPRW 2023, §4.27, Figs. 43-44 and Table 1 (row "FRL Team 0":
0.115 M parameters, 7.38 G FLOPs, 170.26 M activations, 58 convs). Official code and weights:
Jinchen2028/NTIRE2023_ESR@8969e41 (``models/team03_LGTT.py``, ``model_zoo/team03_LGTT.pth``), MIT (the
NTIRE 2023 ESR organisers' licence text)."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS, FRLMLP, FRLSkeleton, NormFreeGroup
from .official import (ImportNotes, OfficialImportError, count_indexed, infer_upscale, official_note, register_importer,
                       top_level_names)

__all__ = ['LGTT', 'GTModeler', 'LTModeler', 'LGTGroup', 'pixel_mixer', 'striped_window_attention']


def pixel_mixer(x):
    """The parameter-free pixel mixer (report §4.27, official ``PixelMixer``): channel c takes its
    right, left, lower, upper neighbour for c mod 5 = 0, 1, 2, 3 and itself for c mod 5 = 4, with
    circular wrap-around (the official circular padding). C must be a multiple of 5."""
    v = x.unflatten(1, (-1, 5))
    return torch.stack([v[:, :, 0].roll(-1, 3), v[:, :, 1].roll(1, 3), v[:, :, 2].roll(-1, 2),
                        v[:, :, 3].roll(1, 2), v[:, :, 4]], dim=2).flatten(1, 2)


def striped_window_attention(s, window, heads, shift=None):
    """Attention of one channel slice ``s`` (B, 2·heads·d, H, W) in windows of ``window`` = (rows,
    cols): reflect-padded at the bottom/right to window multiples (and cyclically shifted by
    ``shift`` if given), channels [q | v] with heads head-major; per window and head
    ``softmax(q qᵀ) v`` over its rows·cols tokens (q is also the key; no scale, no position bias);
    shifted back and cropped to H x W. Returns (B, heads·d, H, W)."""
    b, c, h, w = s.shape
    wh, ww = window
    s = F.pad(s, (0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh), mode='reflect')
    if shift is not None:
        s = s.roll(shift, dims=(2, 3))
    hp, wp = s.shape[2], s.shape[3]
    d = c // (2 * heads)
    t = s.reshape(b, 2, heads, d, hp // wh, wh, wp // ww, ww).permute(1, 0, 2, 4, 6, 5, 7, 3)
    t = t.reshape(2, -1, wh * ww, d)
    q, v = t[0], t[1]
    out = torch.softmax(q @ q.transpose(-2, -1), dim=-1) @ v
    out = out.reshape(b, heads, hp // wh, wp // ww, wh, ww, d).permute(0, 1, 6, 2, 4, 3, 5)
    out = out.reshape(b, heads * d, hp, wp)
    if shift is not None:
        out = out.roll((-shift[0], -shift[1]), dims=(2, 3))
    return out[:, :, :h, :w]


class GTModeler(nn.Module):
    """Global-term modeler, multi-window and multi-head self-attention (report Fig. 44; official
    ``GTModeler``): ``attn`` = 1x1 conv (C -> 2C) + BatchNorm; its output is split into one slice
    of C channels per window shape (long x short, then short x long), each attended by
    :func:`striped_window_attention`; the outputs are concatenated and projected by ``proj``
    (1x1). ``shifted``: the windows are cyclically shifted by half their size (the official code
    does so for a GTModeler at an odd block index; the released model has none)."""

    def __init__(self, dim, num_heads, windows, shifted):
        super().__init__()
        self.num_heads = num_heads
        self.windows = windows
        self.shifts = [(wh // 2, ww // 2) for wh, ww in windows] if shifted else [None] * len(windows)
        self.attn = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.BatchNorm2d(2 * dim))
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 1))

    def forward(self, x):
        slices = self.attn(x).chunk(len(self.windows), dim=1)
        return self.proj(torch.cat([striped_window_attention(s, window, self.num_heads, shift)
                                    for s, window, shift in zip(slices, self.windows, self.shifts)], dim=1))


class LTModeler(nn.Module):
    """Local-term modeler (official ``LTModeler``): ``norm(pixel_mixer(x) - x)``, BatchNorm."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x):
        return self.norm(pixel_mixer(x) - x)


class LGTGroup(NormFreeGroup):
    """One group: ``x = x + sa_list[j](x); x = x + mlp_list[j](x)`` for each block j, with no
    normalization before either; blocks j < ``num_gtmodeler`` attend (GTModeler, shifted at odd
    j), the others mix pixels (LTModeler); the MLPs are shift 1x1 convs (the FRL
    ``ShiftConv2d1x1``) C -> r·C -> C."""

    def __init__(self, dim, num_block, num_heads, num_gtmodeler, windows, hidden, act_type):
        super().__init__()
        self.sa_list = nn.ModuleList([GTModeler(dim, num_heads, windows, shifted=j % 2 == 1) if j < num_gtmodeler
                                      else LTModeler(dim) for j in range(num_block)])
        self.mlp_list = nn.ModuleList([FRLMLP(dim, hidden, act_type) for _ in range(num_block)])


@ARCH_REGISTRY.register()
class LGTT(FRLSkeleton, SRArch):
    """LGTT (report §4.27, Figs. 43-44; official ``LGTT()``: dim 30, 4 groups of 6 blocks, 3 heads,
    MLP ratio 2, one GTModeler per group, windows 36x8 and 8x36, Swish): the FRL skeleton (DF2K
    mean shift at the 255 scale, 3x3 ``head``, ``body``, + head output, 3x3 conv to 3·s² channels +
    PixelShuffle as ``tail``) with a body of ``num_group`` groups of ``num_block`` blocks, each
    token mixer + residual then shift-conv MLP + residual. The first ``num_gtmodeler`` token
    mixers of a group are striped-window self-attention (GTModeler), the others the
    parameter-free pixel mixer with BatchNorm (LTModeler). 115,248 parameters (Table 1: 0.115 M).

    Quirks kept from the official code: the attention uses q as its own key with no 1/√d scale;
    windows are (window_long x window_short) for the first half of the attention channels and
    (window_short x window_long) for the second; the input of each window slice is reflect-padded
    at the bottom/right to window multiples, so H and W must be at least
    ``max(window_long, window_short) // 2 + 1`` (19 for the released model; 1 without
    GTModelers); the official
    cyclic window shift applies only to a GTModeler at an odd block index, which the released
    configuration never has (the shift is implemented for ``num_gtmodeler >= 2``).

    Computes on [0, 255] inside (inputs RGB in [0, 1], outputs unclamped). Not tile-exact: the
    windows are anchored at the image origin and padded by reflection at the image border, and the
    pixel mixer wraps around the image, so an output pixel depends on where the image starts and
    ends (``tile_exact = False``, ``receptive_radius = None``). BatchNorm runs with its running
    statistics in eval mode and is not folded (the official keys are kept): nothing is
    reparameterizable; ``deploy`` is accepted and the network is its own deploy form.

    Not declared fp16-safe (``fp16_safe = False``): the attention logits q·qᵀ are unscaled. With
    the released weights they stay below ~60 on photographs and float16 is accurate to ~2e-3, but
    nothing bounds them for other weights (a random initialization reaches ~1e5, beyond float16's
    65504: NaN outputs).

    Args:
        num_in_ch, num_out_ch: image channels (3: the mean shift is RGB).
        num_feat: feature channels (official ``dim``, 30): a multiple of 5 (the pixel mixer and
            shift groups) and, with GTModelers, of 2·num_heads (q and v of each window slice).
        num_group, num_block: groups (``n_groups``, 4) and blocks per group (``n_blocks``, 6).
        num_heads: attention heads per window slice (3).
        num_gtmodeler: attention blocks at the start of each group (1).
        window_long, window_short: window sides (36, 8).
        mlp_ratio: MLP expansion (2).
        upscale: 2, 3 or 4 (the challenge: 4).
        act_type: MLP activation (official Swish = 'silu').
        deploy: accepted for the contract; the network has a single form.
    """

    paper = ('Li et al., NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, '
             'Sec. 4.27 (FRL Team 0: LGTT)')
    code = 'Jinchen2028/NTIRE2023_ESR@8969e41'
    license = 'MIT'
    value_range = (0, 255)
    fp16_safe = False
    tile_exact = False

    def __init__(self, num_in_ch: OneOf(3) = 3, num_out_ch: OneOf(3) = 3, num_feat: Int(5) = 30,
                 num_group: Int(1) = 4, num_block: Int(1) = 6, num_heads: Int(1) = 3, num_gtmodeler: Int(0) = 1,
                 window_long: Int(1) = 36, window_short: Int(1) = 8, mlp_ratio: Int(1) = 2,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*ACTIVATIONS) = 'silu', deploy: bool = False):
        super().__init__()
        if num_feat % 5 or (num_gtmodeler and num_feat % (2 * num_heads)):
            raise ValueError(f'LGTT: num_feat={num_feat!r}: expected a multiple of 5 (pixel mixer, shift groups) and '
                             f'of 2 * num_heads = {2 * num_heads} (q and v per head)')
        if num_gtmodeler > num_block:
            raise ValueError(f'LGTT: num_gtmodeler={num_gtmodeler!r}: expected at most num_block={num_block}')
        self.upscale = upscale
        self.deploy = deploy
        self.receptive_radius = None
        # reflect padding to the window multiple needs a pad smaller than the side
        self.min_input_size = max(window_long, window_short) // 2 + 1 if num_gtmodeler else 1
        windows = ((window_long, window_short), (window_short, window_long))
        self.add_skeleton(nn.Conv2d(num_in_ch, num_feat, 3, padding=1),
                          nn.Sequential(*[LGTGroup(num_feat, num_block, num_heads, num_gtmodeler, windows,
                                                   num_feat * mlp_ratio, act_type) for _ in range(num_group)]),
                          num_feat, num_out_ch, upscale)


def _is_lgtt(sd):
    return top_level_names(sd) == {'head', 'body', 'tail'} and 'body.0.mlp_list.0.fc1.weight' in sd \
        and any(k.startswith('body.0.sa_list.0.') for k in sd) and 'head.weight' in sd


@register_importer('LGTT', detect=_is_lgtt)
def import_official_lgtt(sd, overrides):
    """Jinchen2028/NTIRE2023_ESR ``model_zoo/team03_LGTT.pth``: ``{'params': state dict}`` with the
    BatchNorm buffers, no prefix (and any state dict with the official LGTT keys). Width, groups,
    blocks, attention blocks per group, MLP ratio and scale come from the shapes; the heads, the
    window sides and the activation are not in the weights and are assumed (the official 3,
    36 x 8 and Swish)."""
    num_feat = sd['head.weight'].shape[0]
    num_block = count_indexed(sd, 'body.0.sa_list')
    attends = [f'body.0.sa_list.{j}.attn.0.weight' in sd for j in range(num_block)]
    num_gtmodeler = sum(attends)
    if attends != [j < num_gtmodeler for j in range(num_block)]:
        raise OfficialImportError(f'LGTT: attention blocks at {[j for j, a in enumerate(attends) if a]}: expected '
                                  f'the first blocks of each group')
    opt = dict(type='LGTT', num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_group=count_indexed(sd, 'body'),
               num_block=num_block, num_heads=3, num_gtmodeler=num_gtmodeler, window_long=36, window_short=8,
               mlp_ratio=sd['body.0.mlp_list.0.fc1.weight'].shape[0] // num_feat,
               upscale=infer_upscale(sd['tail.0.weight'].shape[0], 3), act_type='silu', deploy=False)
    notes = ImportNotes(overrides, assumed=('num_heads', 'window_long', 'window_short', 'act_type', 'deploy'))
    for key in notes.assumed[:-1]:
        if key not in overrides:
            notes.note(official_note(key, repr(opt[key]), 'LGTT'))
    notes.single_form('LGTT')
    return notes.result(sd, opt)
