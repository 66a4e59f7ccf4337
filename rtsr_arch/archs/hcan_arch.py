"""HCAN: FRL Team 3 (Tianle Liu, Jinpeng Shi, Shizhuang Weng; Anhui University / Fried Rice Lab),
"Hierarchical Context Aggregation Network", in Li et al., "NTIRE 2023 Challenge on Efficient
Super-Resolution: Methods and Results", CVPRW 2023, §4.28, Fig. 45 and Table 1 (row "FRL Team 3":
0.179 M parameters, 11.54 G FLOPs, 285.41 M activations, 112 convs). Official code and weights:
TIANLE233/NTIRE2023_ESR@cc5f0e6 (``models/team06_HCAN.py``, ``model_zoo/team06_hcan.pth``), MIT (the
NTIRE 2023 ESR organisers' licence text)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import FRLMLP, PARAMETER_FREE_ACTIVATIONS, FRLSkeleton, MeanShiftConv, NormFreeGroup, make_activation
from .official import (ImportNotes, OfficialImportError, count_indexed, infer_upscale, official_note, register_importer,
                       top_level_names)

__all__ = ['HCAN', 'HCAA', 'NTBGroup', 'HCAN_ACTIVATIONS']

# one activation module serves every focal level (as the official FocalModulation): no PReLU
HCAN_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS


class HCAA(nn.Module):
    """Hierarchical context aggregation attention (report §4.28; the official ``FocalModulation``,
    FocalNet without its global level, gating and normalization): ``f`` (1x1, C -> 2C) splits into
    q and ctx; ctx passes ``focal_level`` bias-free depthwise convs of sizes window + factor·l
    (3, 5, 7, 9), each followed by the activation, in sequence, and the level outputs are summed;
    output ``proj(q * sigmoid(h(sum)))`` (``h``, ``proj``: 1x1)."""

    def __init__(self, dim, focal_level, focal_window, focal_factor, act_type):
        super().__init__()
        self.dim = dim
        self.act = make_activation(act_type, dim)
        self.f = nn.Conv2d(dim, 2 * dim, 1)
        self.focal_layers = nn.ModuleList()
        for level in range(focal_level):
            k = focal_window + focal_factor * level
            self.focal_layers.append(nn.Sequential(
                nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), self.act))
        self.h = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        q, ctx = self.f(x).split([self.dim, self.dim], dim=1)
        total = 0
        for layer in self.focal_layers:
            ctx = layer(ctx)
            total = total + ctx
        return self.proj(q * self.h(total).sigmoid())


class NTBGroup(NormFreeGroup):
    """A group of normalization-free transformer blocks (official ``FocalTG``):
    ``x = x + sa_list[i](x); x = x + mlp_list[i](x)`` for each block, no normalization; the MLPs
    are plain 1x1 convs C -> r·C -> C."""

    def __init__(self, num_block, dim, hidden, focal, act_type):
        super().__init__()
        self.sa_list = nn.ModuleList([HCAA(dim, *focal, act_type) for _ in range(num_block)])
        self.mlp_list = nn.ModuleList([FRLMLP(dim, hidden, act_type, shift=False) for _ in range(num_block)])


@ARCH_REGISTRY.register()
class HCAN(FRLSkeleton, SRArch):
    """HCAN (report §4.28, Fig. 45; official ``HCAN()``: dim 32, n_t 12, n_g 1, GELU): the FRL
    skeleton (DF2K mean shift at the 255 scale, 3x3 ``head``, ``body``, + head output, 3x3 conv to
    3·s² channels + PixelShuffle as ``tail``) with a body of ``num_group`` groups of ``num_block``
    normalization-free transformer blocks (HCAA + MLP, each with a residual). The released x4
    model: 178,760 parameters (Table 1: 0.179 M), of which 24 are the two mean-shift 1x1 convs
    ``sub_mean`` / ``add_mean`` (identity kernels and ∓255·mean biases, frozen): HCAN stores them
    in its checkpoint and the NTIRE counters count them (parameters and 2 of the 112 convs).

    Computes on [0, 255] inside (inputs RGB in [0, 1], outputs unclamped). Purely convolutional
    with zero padding: tiled inference is exact; receptive radius 2 + blocks · Σ_l k_l // 2 (122
    for the released model: 12 blocks of 1 + 2 + 3 + 4). Nothing is reparameterizable:
    ``deploy`` is accepted and the network is its own deploy form.

    Args:
        num_in_ch, num_out_ch: image channels (3: the mean shift is RGB).
        num_feat: feature channels (official ``dim``, 32).
        num_block: blocks per group (official ``n_t``, 12).
        num_group: groups (official ``n_g``, 1).
        focal_level, focal_window, focal_factor: HCAA's levels and kernel sizes window + factor·l
            (4, 3, 2: 3x3, 5x5, 7x7, 9x9; every size must be odd).
        mlp_ratio: MLP expansion (2 in the official code).
        upscale: 2, 3 or 4 (the challenge: 4).
        act_type: activation of the focal levels and the MLPs (official GELU); parameter-free
            ones only (one module serves every focal level).
        deploy: accepted for the contract; the network has a single form.
    """

    paper = ('Li et al., NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, '
             'Sec. 4.28 (FRL Team 3: HCAN)')
    code = 'TIANLE233/NTIRE2023_ESR@cc5f0e6'
    license = 'MIT'
    value_range = (0, 255)
    fp16_safe = True
    tile_exact = True

    def __init__(self, num_in_ch: OneOf(3) = 3, num_out_ch: OneOf(3) = 3, num_feat: Int(1) = 32,
                 num_block: Int(1) = 12, num_group: Int(1) = 1, focal_level: Int(1) = 4, focal_window: Int(1) = 3,
                 focal_factor: Int(0) = 2, mlp_ratio: Int(1) = 2, upscale: OneOf(2, 3, 4) = 4,
                 act_type: OneOf(*HCAN_ACTIVATIONS) = 'gelu', deploy: bool = False):
        super().__init__()
        kernels = [focal_window + focal_factor * level for level in range(focal_level)]
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f'HCAN: focal_window={focal_window!r}, focal_factor={focal_factor!r} give even kernel '
                             f'sizes {kernels}: expected odd sizes (an odd window and an even factor)')
        self.upscale = upscale
        self.deploy = deploy
        self.receptive_radius = 2 + num_group * num_block * sum(k // 2 for k in kernels)
        focal = (focal_level, focal_window, focal_factor)
        self.add_skeleton(nn.Conv2d(num_in_ch, num_feat, 3, padding=1),
                          nn.Sequential(*[NTBGroup(num_block, num_feat, num_feat * mlp_ratio, focal, act_type)
                                          for _ in range(num_group)]),
                          num_feat, num_out_ch, upscale, mean_shift=MeanShiftConv)


def _is_hcan(sd):
    return top_level_names(sd) == {'sub_mean', 'add_mean', 'head', 'body', 'tail'} \
        and 'body.0.sa_list.0.focal_layers.0.0.weight' in sd


@register_importer('HCAN', detect=_is_hcan)
def import_official_hcan(sd, overrides):
    """TIANLE233/NTIRE2023_ESR ``model_zoo/team06_hcan.pth``: ``{'params': state dict}``, no prefix
    (and any state dict with the official HCAN keys), the mean-shift convs included. Width,
    blocks, groups, focal levels and kernel sizes, MLP ratio and scale come from the shapes; the
    activation is assumed (GELU)."""
    num_feat = sd['head.weight'].shape[0]
    kernels = [sd[f'body.0.sa_list.0.focal_layers.{level}.0.weight'].shape[-1]
               for level in range(count_indexed(sd, 'body.0.sa_list.0.focal_layers'))]
    steps = {b - a for a, b in zip(kernels, kernels[1:])}
    if len(steps) > 1:
        raise OfficialImportError(f'HCAN: focal kernel sizes {kernels} do not grow by a constant factor')
    opt = dict(type='HCAN', num_in_ch=3, num_out_ch=3, num_feat=num_feat,
               num_block=count_indexed(sd, 'body.0.sa_list'), num_group=count_indexed(sd, 'body'),
               focal_level=len(kernels), focal_window=kernels[0], focal_factor=steps.pop() if steps else 2,
               mlp_ratio=sd['body.0.mlp_list.0.fc1.weight'].shape[0] // num_feat,
               upscale=infer_upscale(sd['tail.0.weight'].shape[0], 3), act_type='gelu', deploy=False)
    notes = ImportNotes(overrides, assumed=['act_type', 'deploy'])
    if len(kernels) == 1:
        notes.assumed.append('focal_factor')
        notes.note('focal_factor: one focal level, the factor is not in the weights (2 assumed, the official value)')
    if 'act_type' not in overrides:
        notes.note(official_note('act_type', 'gelu', 'HCAN'))
    notes.single_form('HCAN')
    return notes.result(sd, opt)
