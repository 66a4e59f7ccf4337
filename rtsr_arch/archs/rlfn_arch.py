"""RLFN: Kong, Li, Cao, Wu, Zhang, Wang, et al., "Residual Local Feature Network for Efficient
Super-Resolution", CVPR Workshops 2022 (team ByteESR, NTIRE 2022 Efficient SR challenge, first in
the runtime track; its pruned entry is the NTIRE 2024 ESR baseline). Official code and weights:
bytedance/RLFN@bccfde9 ``model/block.py``, ``model/rlfn.py``, ``model/rlfn_s.py``,
``model/rlfn_ntire.py``, ``model_zoo/*.pth`` (Apache-2.0)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import (ESA, ESA_MIN_INPUT_SIZE, PARAMETER_FREE_ACTIVATIONS, LocalFeatureBlock, ResidualTrunk,
                     conv_pixel_shuffle, make_activation)
from .official import (OFFICIAL_LEAKY_RELU, ImportNotes, count_numbered, numbered_layout, register_importer,
                       trunk_options)

__all__ = ['RLFN', 'RLFB', 'RLFN_VARIANTS', 'RLFN_ACTIVATIONS']

# the three published forms (official class names); mid_channels is set only where it differs
# from num_feat, so that a network built from the keywords equals the preset's
RLFN_VARIANTS = {
    'RLFN': dict(num_feat=52, num_block=6),  # paper, model/rlfn.py: 543,740 parameters (x4)
    'RLFN_S': dict(num_feat=48, num_block=6),  # paper, model/rlfn_s.py: 470,208
    'RLFN_Prune': dict(num_feat=46, mid_channels=48, num_block=4),  # NTIRE 2022 entry, model/rlfn_ntire.py: 317,218
}

# one activation module serves mid and num_feat channels, as in the official block
RLFN_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS


def _conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)


class RLFB(LocalFeatureBlock):
    """Residual local feature block (RLFN paper §3.1, Fig. 2b; official ``RLFB``):
    ``r = act(c3_r(act(c2_r(act(c1_r(x)))))) + x`` (three 3x3 convs C -> mid -> mid -> C), then
    ``esa(c5(r))`` (c5 1x1, the light ESA with 16 channels). One activation module (``act``)
    serves the three calls, as the official block."""

    def __init__(self, num_feat, mid_channels, esa_channels=16, act_type='lrelu'):
        super().__init__()
        self.add_convs(num_feat, mid_channels, _conv3x3)
        self.c5 = nn.Conv2d(num_feat, num_feat, 1)
        self.esa = ESA(num_feat, esa_channels, variant='light')
        self.act = make_activation(act_type, num_feat)


@ARCH_REGISTRY.register()
class RLFN(ResidualTrunk, SRArch):
    """RLFN (paper §3.1, Fig. 2a): conv_1 (3x3) -> block_1..block_{num_block} RLFBs -> conv_2 (3x3)
    + conv_1's output -> upsampler (3x3 conv to 3·s² channels, PixelShuffle(s)).

    The three published forms are ``variant='RLFN'`` (the paper's model, C 52, 6 blocks: the
    defaults), ``'RLFN_S'`` (C 48, 6 blocks) and ``'RLFN_Prune'`` (the NTIRE 2022 entry: C 46,
    mid 48, 4 blocks). The official network computes on [0, 255] images (the official
    ``test_demo.py`` multiplies by 255 and divides the output by 255): that conversion happens
    inside, so inputs are RGB in [0, 1] and the official weights load unchanged. Not
    reparameterizable: ``deploy`` is accepted and the network is its own deploy form.

    Every block ends with the light ESA, whose coarse map is bilinearly resized to the image size:
    inputs must be at least 15x15, and tiled inference is not exact (``tile_exact = False``).

    float16 (``fp16_safe``): computing on [0, 255] leaves 255x less headroom than a [0, 1]
    network. On photographs the official weights' conv outputs peak near 4e3 (RLFN_Prune; 16x
    below float16's maximum) and half-precision outputs stay within 5e-3 of float32 (0.001 dB);
    inputs far from photographs (a full-contrast one-pixel checkerboard) drive the official
    weights out of the image range in float32 already (RLFN_Prune's features reach 1e5 there and
    overflow float16).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (52).
        num_block: RLFBs (6).
        upscale: 2, 3 or 4 (official weights: x4 for all three forms, x2 for RLFN and RLFN_S).
        act_type: activation inside the blocks (LeakyReLU, slope 0.05; no PReLU: one module
            serves mid and C channels).
        mid_channels: width of the blocks' inner convs (None: C; RLFN_Prune: 48).
        esa_channels: ESA width (16 in every official form).
        variant: a published form (:data:`RLFN_VARIANTS`).
        deploy: accepted for the contract (nothing to fuse).
    """

    paper = 'Kong et al., Residual Local Feature Network for Efficient Super-Resolution, CVPR Workshops 2022'
    code = 'bytedance/RLFN@bccfde9'
    license = 'Apache-2.0'
    min_input_size = ESA_MIN_INPUT_SIZE
    value_range = (0, 255)
    fp16_safe = True
    tile_exact = False
    preset_key = 'variant'
    presets = RLFN_VARIANTS
    img_range = 255.0

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 52, num_block: Int(1) = 6,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*RLFN_ACTIVATIONS) = 'lrelu',
                 mid_channels: Int(1, optional=True) = None, esa_channels: Int(1) = 16, variant: str = None,
                 deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        mid_channels = num_feat if mid_channels is None else mid_channels
        self.conv_1 = _conv3x3(num_in_ch, num_feat)
        self.add_blocks([RLFB(num_feat, mid_channels, esa_channels, act_type) for _ in range(num_block)])
        self.conv_2 = _conv3x3(num_feat, num_feat)
        self.upsampler = conv_pixel_shuffle(num_feat, num_out_ch, upscale)


def _is_rlfn(sd):
    # trunk convs with biases and plain conv keys (``c1_r.weight``): DIPNet (bias-free trunk) and
    # DLFAN (``c1_r.dbb_reparam``) have the same top-level names; the light ESA has no conv_max
    return numbered_layout(sd, RLFN.trunk_names, RLFN.block_prefix) \
        and all(k in sd for k in ('conv_1.bias', 'block_1.c1_r.weight', 'block_1.c1_r.bias',
                                  'block_1.esa.conv3.weight')) \
        and 'block_1.esa.conv_max.weight' not in sd


@register_importer('RLFN', detect=_is_rlfn)
def import_official_rlfn(sd, overrides):
    """bytedance/RLFN ``model_zoo/rlfn_ntire_x4.pth`` (RLFN_Prune; byte-identical to the NTIRE
    2024 ESR ``team00_rlfn.pth``), ``rlfn_x4.pth``, ``rlfn_s_x4.pth`` and the x2 files: raw state
    dicts. The form is told from the shapes (C, mid, blocks) and named in ``variant`` when it is
    one of the published ones."""
    opt = trunk_options(sd, overrides, 'RLFN', 'conv_1', 'upsampler.0', count_numbered(sd, RLFN.block_prefix, 'RLFN'))
    num_feat, num_block, mid = opt['num_feat'], opt['num_block'], sd['block_1.c1_r.weight'].shape[0]
    opt.update(mid_channels=None if mid == num_feat else mid, esa_channels=sd['block_1.esa.conv1.weight'].shape[0],
               deploy=False)
    shape = {k: opt[k] for k in ('num_feat', 'mid_channels', 'num_block')}
    variant = next((name for name, values in RLFN_VARIANTS.items()
                    if {'mid_channels': None, **values} == shape and opt['esa_channels'] == 16), None)
    opt['variant'] = variant
    notes = ImportNotes(overrides, assumed=['deploy'])
    notes.note(f"{variant or 'not a published form'}: C {num_feat}, mid {mid}, {num_block} blocks, "
               f"ESA {opt['esa_channels']}, x{opt['upscale']}")
    notes.single_form('RLFN')
    notes.unstored(opt, 'act_type', 'lrelu', OFFICIAL_LEAKY_RELU)
    return notes.result(sd, opt)
