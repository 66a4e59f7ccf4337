"""PRFDN: the NTIRE 2023 ESR entry of team SEU_CNII ("Expand Big, Then Shrink": RFDN widened and
fine-tuned; NTIRE 2023 Efficient SR challenge report §4.21, Fig. 33). Official code and weights:
yindaheng98/NTIRE2023_ESR@9d5f418 ``models/rfdn_half/``, ``model_zoo/PRFDN_28.992.pth`` (MIT)."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ESA_MIN_INPUT_SIZE, conv_pixel_shuffle, make_activation
from .official import (OfficialImport, OfficialImportError, PickledModuleStateDict, infer_upscale, register_importer,
                       top_level_names)
from .rfdn_arch import RFDB, RFDN_ACTIVATIONS

__all__ = ['PRFDN', 'is_prfdn_state_dict']


@ARCH_REGISTRY.register()
class PRFDN(SRArch):
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
    img_range = 255.0

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
        self.fea_conv = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.block_names = [f'B{i}' for i in range(1, num_block + 1)]
        for name in self.block_names:
            self.add_module(name, RFDB(num_feat, esa_channels, act_type))
        self.c = nn.Sequential(nn.Conv2d(num_block * num_feat, num_feat, 1), make_activation(act_type, num_feat))
        self.LR_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)
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


def _rfdn_layout(sd):
    """RFDN's official keys: blocks B1..Bn, each with c{1,2,3}_{d,r}, c4, c5 and the original ESA."""
    names = top_level_names(sd)
    blocks = {n for n in names if n.startswith('B') and n[1:].isdigit()}
    return bool(blocks) and names == {'fea_conv', 'c', 'LR_conv', 'upsampler'} | blocks \
        and 'B1.c1_d.weight' in sd and 'B1.esa.conv_max.weight' in sd


def is_prfdn_state_dict(sd):
    """RFDN's key layout with an ESA width other than num_feat // 4 (PRFDN's widened network)."""
    return _rfdn_layout(sd) and sd['B1.esa.conv1.weight'].shape[0] != sd['fea_conv.weight'].shape[0] // 4


@register_importer('PRFDN', detect=is_prfdn_state_dict)
def import_official_prfdn(sd, overrides):
    """yindaheng98/NTIRE2023_ESR ``PRFDN_28.992.pth``: a whole pickled ``RFDNEXP`` module (the official
    ``test_demo.py`` calls ``torch.load`` on it, which runs the pickle); read here by the restricted
    reader, which rebuilds its tensors and nothing else, then its module state dict (RFDN key
    names, 128 tensors). Any state dict with RFDN's keys and an ESA width other than C // 4."""
    blocks = sorted(int(n[1:]) for n in top_level_names(sd) if n.startswith('B') and n[1:].isdigit())
    if blocks != list(range(1, len(blocks) + 1)):
        raise OfficialImportError(f'PRFDN blocks must be B1..B{len(blocks)}, found B{blocks}')
    num_feat, num_in_ch = sd['fea_conv.weight'].shape[:2]
    if sd['B1.c1_d.weight'].shape[0] != num_feat // 2:
        raise OfficialImportError(f"distilled width {sd['B1.c1_d.weight'].shape[0]} is not num_feat // 2 = "
                                  f'{num_feat // 2} (the official RFDB)')
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    opt = dict(type='PRFDN', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=len(blocks),
               upscale=infer_upscale(sd['upsampler.0.weight'].shape[0], num_out_ch),
               act_type=overrides.get('act_type', 'lrelu'), esa_channels=sd['B1.esa.conv1.weight'].shape[0],
               deploy=False)
    notes, assumed = [], ['act_type', 'deploy']
    if isinstance(sd, PickledModuleStateDict):
        notes.append(f'the file is a whole pickled module ({sd.pickled_class}, saved with torch.save(model)); it was '
                     f'read without running its code (restricted unpickler): only its tensors were taken')
    if 'act_type' not in overrides:
        notes.append("act_type: not stored in the weights; using the official LeakyReLU (slope 0.05) "
                     "(override with --set act_type=...)")
    if 'deploy' not in overrides:
        notes.append('deploy: PRFDN has no reparameterizable block; its training and deploy forms are the same '
                     'network (deploy=False)')
    opt.update(overrides)
    return OfficialImport(sd, opt, notes, tuple(assumed))
