"""RFDN: Liu, Tang, Wu, "Residual Feature Distillation Network for Lightweight Image
Super-Resolution", ECCV Workshops 2020 (AIM 2020 efficient SR winner), the baseline of the NTIRE
2023 Efficient SR challenge (report §2.2). Official code and weights:
ofsoundof/NTIRE2023_ESR@a6d76c7 ``models/team00_RFDN.py``, ``model_zoo/team00_rfdn.pth`` (MIT)."""
from basicsr.utils.registry import ARCH_REGISTRY

from .contract import Int, OneOf, SRArch
from .layers import ESA_MIN_INPUT_SIZE, RFDB, RFDN_ACTIVATIONS, RFDN_MODULES, RFDNTrunk
from .official import (OFFICIAL_LEAKY_RELU, ImportNotes, check_width, count_numbered, numbered_layout,
                       register_importer, trunk_options)

__all__ = ['RFDN', 'RFDB', 'RFDN_ACTIVATIONS']


@ARCH_REGISTRY.register()
class RFDN(RFDNTrunk, SRArch):
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

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(4) = 50, num_block: Int(1) = 4,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*RFDN_ACTIVATIONS) = 'lrelu', deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        self.add_rfdn_trunk(num_in_ch, num_out_ch, num_feat, num_block, upscale, act_type, num_feat // 4)


def _is_rfdn(sd):
    # RFDN's keys with ESA width C // 4 (another width: PRFDN, same keys)
    return numbered_layout(sd, RFDN_MODULES, RFDN.block_prefix) and 'B1.c1_d.weight' in sd \
        and 'B1.esa.conv_max.weight' in sd and sd['B1.esa.conv1.weight'].shape[0] == sd['fea_conv.weight'].shape[0] // 4


@register_importer('RFDN', detect=_is_rfdn)
def import_official_rfdn(sd, overrides):
    """ofsoundof/NTIRE2023_ESR ``team00_rfdn.pth`` (legacy non-zip torch file, raw state dict;
    byte-identical to eduardzamfir/NTIRE23-RTSR ``rfdn_X4.pth``), and any state dict with the
    official RFDN keys (``fea_conv``, ``B{i}.{c1_d,...,c5}``, ``B{i}.esa.*``, ``c.0``,
    ``LR_conv``, ``upsampler.0``) and ESA width C // 4 (other widths are PRFDN's)."""
    opt = trunk_options(sd, overrides, 'RFDN', 'fea_conv', 'upsampler.0',
                        count_numbered(sd, RFDN.block_prefix, 'RFDN'))
    check_width(sd, 'B1.c1_d.weight', opt['num_feat'] // 2, 'distilled width', 'num_feat // 2')
    opt['deploy'] = False
    notes = ImportNotes(overrides, assumed=['deploy'])
    notes.single_form('RFDN')
    notes.unstored(opt, 'act_type', 'lrelu', OFFICIAL_LEAKY_RELU)
    return notes.result(sd, opt)
