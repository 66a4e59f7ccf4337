"""GFMN (2023): team NJUST_M (Yang, Sun, Pan, Dong, Tang), "Gated Feature Modulation for Efficient
Super-Resolution", in Li et al., "NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and
Results", CVPRW 2023, §4.6, Fig. 11 and Table 1 (row NJUST_M: 0.104 M parameters, 6.56 G FLOPs,
199.35 M activations, 66 convs; 3rd in the model-complexity sub-track): SAFMN (Sun et al.,
ICCV 2023) with its convolutional channel mixer replaced by Restormer's gated-dconv feed-forward
network (GDFN, Zamir et al., CVPR 2022). Not the different 2024 GFMN (NTIRE 2024 ESR ``team22_GFMN``).
Official code: sunny2109/SAFMN@68c2182, ``NTIRE2023_ESR/models/team14_GFMN.py`` and
``model_zoo/team14_GFMN.pth``; repository licence Apache-2.0, the ``NTIRE2023_ESR/`` folder carries
the organizers' MIT licence."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Float, Int, OneOf, SRArch
from .layers import (NTIRE23_SAFM_LEVELS, NTIRE23_SAFM_POOL_SHIFT, PARAMETER_FREE_ACTIVATIONS, SAFM, LayerNorm2d,
                     SAFMNSkeleton, check_ffn_scale, check_safm_width, ffn_scale_for, safm_min_input_size)
from .official import ImportNotes, count_indexed, register_importer, top_level_names, trunk_options

__all__ = ['GFMN', 'GDFN', 'FMM', 'GFMN_ACTIVATIONS']

GFMN_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS  # SAFM's modulation activation


class GDFN(nn.Module):
    """Gated-dconv feed-forward network (the official ``FeedForward``, Restormer's GDFN without
    its GELU): bias-free 1x1 ``project_in`` (dim -> 2 * hidden) -> depthwise 3x3 ``dwconv`` ->
    split x1, x2 -> ``x1 * x2`` (a plain product: the official GELU gate is commented out) ->
    1x1 ``project_out`` (hidden -> dim); hidden = ``int(dim * ffn_scale)``."""

    def __init__(self, dim, ffn_scale=2.0, bias=False):
        super().__init__()
        hidden = int(dim * ffn_scale)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, 1, 1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(x1 * x2)


class FMM(nn.Module):
    """Feature mixing module (the official ``AttBlock``): x = SAFM(LN(x)) + x; x = GDFN(LN(x)) + x;
    LN = channels-first LayerNorm, eps 1e-6; SAFM with biases, pooling to 1/4, 1/8, 1/16."""

    def __init__(self, dim, ffn_scale=2.0, act_type='gelu'):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.safm = SAFM(dim, NTIRE23_SAFM_LEVELS, pool_shift=NTIRE23_SAFM_POOL_SHIFT, bias=True, act_type=act_type)
        self.ffd = GDFN(dim, ffn_scale)

    def forward(self, x):
        x = self.safm(self.norm1(x)) + x
        return self.ffd(self.norm2(x)) + x


@ARCH_REGISTRY.register()
class GFMN(SAFMNSkeleton, SRArch):
    """GFMN, NTIRE 2023 ESR entry of team NJUST_M (report §4.6, Fig. 11; official
    ``GFMN(dim=36, n_blocks=8, ffn_scale=2, upscaling_factor=4)``): 3x3 ``to_feat`` (3 -> C) ->
    ``num_block`` x :class:`FMM` (LayerNorm -> SAFM, LayerNorm -> GDFN, each with a residual) ->
    + ``to_feat`` output -> 3x3 conv (C -> 3 * s**2) -> PixelShuffle(s). Data range [0, 1], no image
    skip, no clamp.

    The entry (``team14_GFMN.pth``) is C36, 8 FMMs, FFN 2 (GDFN hidden 72), x4: 103,872
    parameters, 6.56 G FLOPs, 66 convs at 256x256 (Table 1; the NTIRE counter gives 199.35 M
    activations, the report's Table 1 row). Nothing is reparameterizable: ``deploy`` is accepted
    and the network is its own deploy form.

    SAFM pools to ``(H // 4, W // 4)``, ``(H // 8, W // 8)``, ``(H // 16, W // 16)`` and resizes
    back (nearest), so every output pixel depends on the whole input size: ``tile_exact = False``,
    ``receptive_radius = None``, ``min_input_size = 16``. Pooling and resizing are exactly
    traceable (:class:`~rtsr_arch.archs.layers.SAFM`): ONNX graphs are correct at every size.

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels (official ``dim``), a multiple of 4 (SAFM's four levels).
        num_block: FMMs (official ``n_blocks``).
        ffn_scale: GDFN expansion; hidden width ``int(num_feat * ffn_scale)`` (gate 2x that).
        upscale: 2, 3 or 4 (the challenge: 4).
        act_type: SAFM's modulation activation (GELU in the official code).
        preset: ``'ntire23_esr'``, the NTIRE 2023 entry (= the defaults).
        deploy: accepted for the contract; the network has a single form.
    """

    paper = ('Li et al., NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, '
             'Sec. 4.6 (team NJUST_M: GFMN)')
    code = 'sunny2109/SAFMN@68c2182'
    license = 'Apache-2.0 (NTIRE2023_ESR/ folder: MIT)'
    min_input_size = safm_min_input_size(NTIRE23_SAFM_LEVELS, NTIRE23_SAFM_POOL_SHIFT)  # 16
    tile_exact = False
    preset_key = 'preset'
    presets = {'ntire23_esr': dict(num_feat=36, num_block=8, ffn_scale=2.0, upscale=4)}

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(NTIRE23_SAFM_LEVELS) = 36,
                 num_block: Int(1) = 8, ffn_scale: Float(0) = 2.0, upscale: OneOf(2, 3, 4) = 4,
                 act_type: OneOf(*GFMN_ACTIVATIONS) = 'gelu', preset: str = None, deploy: bool = False):
        super().__init__()
        check_safm_width('GFMN', num_feat, NTIRE23_SAFM_LEVELS)
        check_ffn_scale('GFMN', num_feat, ffn_scale)
        self.upscale = upscale
        self.receptive_radius = None  # global: the pooling grids and the resizes follow the input size
        self.deploy = deploy
        self.add_skeleton(num_in_ch, num_out_ch, num_feat, upscale,
                          [FMM(num_feat, ffn_scale, act_type) for _ in range(num_block)])


def _is_gfmn(sd):
    return (top_level_names(sd) == {'to_feat', 'feats', 'to_img'} and 'feats.0.norm1.weight' in sd
            and 'feats.0.safm.mfr.0.weight' in sd and 'feats.0.ffd.project_in.weight' in sd)


@register_importer('GFMN', detect=_is_gfmn, param_keys=('params', 'params_ema'))
def import_official_gfmn(sd, overrides):
    """sunny2109/SAFMN ``NTIRE2023_ESR/model_zoo/team14_GFMN.pth``: BasicSR dict ``{params,
    params_ema}`` whose two weight sets differ (by up to 1.3e-4); the official test_demo.py loads
    ``params`` (strict), which is preferred here (``rtsr_arch.load_model(path,
    param_key='params_ema')`` takes the EMA weights). Keys without prefix. Width, blocks, GDFN width,
    image channels and scale come from the shapes; the activation is assumed."""
    hidden = sd['feats.0.ffd.project_out.weight'].shape[1]
    opt = trunk_options(sd, overrides, 'GFMN', 'to_feat', 'to_img.0', count_indexed(sd, 'feats'),
                        ffn_scale=ffn_scale_for(sd['to_feat.weight'].shape[0], hidden))
    opt.update(act_type='gelu', deploy=False)
    notes = ImportNotes(overrides, assumed=['deploy'])
    notes.single_form('GFMN')
    notes.official(opt, 'act_type', 'gelu', 'GFMN')
    notes.params_preferred('test_demo.py')
    return notes.result(sd, opt)
