"""PRFDN: the NTIRE 2023 ESR entry of team SEU_CNII ("Expand Big, Then Shrink": RFDN widened and
fine-tuned; NTIRE 2023 Efficient SR challenge report §4.21, Fig. 33). Official code and weights:
yindaheng98/NTIRE2023_ESR@9d5f418 ``models/rfdn_half/``, ``model_zoo/PRFDN_28.992.pth`` (MIT)."""
from basicsr.utils.registry import ARCH_REGISTRY

from .contract import Int, OneOf, SRArch
from .layers import ESA_MIN_INPUT_SIZE, RFDN_ACTIVATIONS, RFDN_MODULES, RFDNTrunk
from .official import (OFFICIAL_LEAKY_RELU, ImportNotes, PickledModuleStateDict, check_width, count_numbered,
                       numbered_layout, register_importer, trunk_options, unstored_note)

__all__ = ['PRFDN', 'is_prfdn_state_dict']


@ARCH_REGISTRY.register()
class PRFDN(RFDNTrunk, SRArch):
    """PRFDN (report §4.21): the RFDN topology (Liu et al., ECCV-W 2020; :class:`~.rfdn_arch.RFDN`)
    with every layer widened — the released network has C = 60 features, distilled C // 2 = 30,
    and an ESA (RFDN's original form, with ``conv_max``/``conv3_`` and two ReLUs) of width f = 14,
    *not* RFDN's C // 4 = 15: the team expanded a trained RFDN (C 50, f 12) by zero-padding its
    convs and fine-tuned it ("Expand Big, Then Shrink"). The ESA width that differs from C // 4 is
    what tells a PRFDN state dict from an RFDN one (same keys); ``esa_channels = num_feat // 4``
    is therefore refused (that network is :class:`~.rfdn_arch.RFDN`).

    fea_conv (3x3) -> B1..Bn RFDBs in a chain -> ``c`` (1x1 over the concatenation of every
    block's output, + LeakyReLU 0.05) -> LR_conv (3x3) + fea_conv's output -> upsampler (3x3 conv
    to 3·s² channels, PixelShuffle(s)). Computes on [0, 255] images like the official network:
    the input is multiplied by 255 inside and the output divided by 255. Not reparameterizable
    (``deploy`` accepted; its own deploy form). ESA's coarse map is bilinearly resized to the image
    size: inputs of at least 15x15, and tiled inference is not exact (``tile_exact = False``).

    The official file is a whole pickled module (``torch.save(model)`` of class ``RFDNEXP``); it is
    read by the restricted reader without running its code (see :func:`import_official_prfdn`).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (60).
        num_block: RFDBs (4).
        upscale: 2, 3 or 4 (4: the released weights).
        act_type: activation of the blocks and of ``c`` (LeakyReLU 0.05; no PReLU: one module
            serves C and C // 2 channels).
        esa_channels: ESA width f (14), anything but C // 4.
        deploy: accepted for the contract (nothing to fuse).
    """

    paper = ('SEU_CNII, PRFDN ("Expand Big, Then Shrink" RFDN), in Li, Zhang, Timofte et al., NTIRE 2023 '
             'Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, §4.21')
    code = 'yindaheng98/NTIRE2023_ESR@9d5f418'
    license = 'MIT'
    min_input_size = ESA_MIN_INPUT_SIZE
    value_range = (0, 255)
    fp16_safe = True
    tile_exact = False

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(4) = 60, num_block: Int(1) = 4,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*RFDN_ACTIVATIONS) = 'lrelu', esa_channels: Int(1) = 14,
                 deploy: bool = False):
        super().__init__()
        if esa_channels == num_feat // 4:
            raise ValueError(f'PRFDN: esa_channels={esa_channels}: expected anything but num_feat // 4 = '
                             f'{num_feat // 4} (that network is RFDN)')
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        self.add_rfdn_trunk(num_in_ch, num_out_ch, num_feat, num_block, upscale, act_type, esa_channels)


def is_prfdn_state_dict(sd):
    """RFDN's key layout (blocks B1..Bn, each with c{1,2,3}_{d,r}, c4, c5 and the original ESA) with
    an ESA width other than num_feat // 4 (PRFDN's widened network)."""
    return numbered_layout(sd, RFDN_MODULES, PRFDN.block_prefix) and 'B1.c1_d.weight' in sd \
        and 'B1.esa.conv_max.weight' in sd and sd['B1.esa.conv1.weight'].shape[0] != sd['fea_conv.weight'].shape[0] // 4


@register_importer('PRFDN', detect=is_prfdn_state_dict)
def import_official_prfdn(sd, overrides):
    """yindaheng98/NTIRE2023_ESR ``PRFDN_28.992.pth``: a whole pickled ``RFDNEXP`` module (the official
    ``test_demo.py`` calls ``torch.load`` on it, which runs the pickle); read here by the restricted
    reader, which rebuilds its tensors and nothing else, then its module state dict (RFDN key
    names, 128 tensors). Any state dict with RFDN's keys and an ESA width other than C // 4."""
    opt = trunk_options(sd, overrides, 'PRFDN', 'fea_conv', 'upsampler.0',
                        count_numbered(sd, PRFDN.block_prefix, 'PRFDN'))
    check_width(sd, 'B1.c1_d.weight', opt['num_feat'] // 2, 'distilled width', 'num_feat // 2')
    opt.update(act_type=overrides.get('act_type', 'lrelu'), esa_channels=sd['B1.esa.conv1.weight'].shape[0],
               deploy=False)
    notes = ImportNotes(overrides, assumed=['act_type', 'deploy'])
    if isinstance(sd, PickledModuleStateDict):
        notes.note(f'the file is a whole pickled module ({sd.pickled_class}, saved with torch.save(model)); it was '
                   f'read without running its code (restricted unpickler): only its tensors were taken')
    if 'act_type' not in overrides:
        notes.note(unstored_note('act_type', OFFICIAL_LEAKY_RELU))
    notes.single_form('PRFDN')
    return notes.result(sd, opt)
