"""DLFAN: Diversified Local Feature Arch-Network for Efficient Super-Resolution (team Sissie_Lab:
Ouyang, Ma, Liu, Zheng, Zhang, Zhang, Chen; NTIRE 2023 Efficient SR challenge, 16th by runtime;
NTIRE 2023 ESR report §4.18, Figs. 28-29). Official code and weights: N1koLiu/NTIRE2023_ESR@66069f0
``models/team17_DLFAN.py``, ``model_zoo/team17_dlfan.pth`` (deploy) and
``model_zoo/team17_beforerep_dlfan.pth`` (training form) (MIT)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import (ESA, ESA_MIN_INPUT_SIZE, PARAMETER_FREE_ACTIVATIONS, LocalFeatureBlock, ResidualTrunk,
                     conv_pixel_shuffle, make_activation)
from .official import (ImportNotes, OfficialImportError, count_numbered, numbered_layout, register_importer,
                       trunk_options)
from .rep import LEDBB

__all__ = ['DLFAN', 'DALFB', 'ESCA', 'DLFAN_ACTIVATIONS', 'DLFAN_SLOPE']

# one activation module serves mid and num_feat channels, as in the official block: no PReLU
DLFAN_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS
DLFAN_SLOPE = 0.02  # the official DALFB's ``activation('lrelu', neg_slope=0.02)`` (RLFN: 0.05)


class ESCA(ESA):
    """The official ``ESCA`` (enhanced spatial-channel attention, ``esa_mode='esca'``; defined in
    ``team17_DLFAN.py`` but not used by the released weights): the light ESA's spatial mask ``m``
    plus a squeeze-excitation gate ``z`` (``se``: global mean -> Linear(C, C // ratio) -> ReLU ->
    Linear -> sigmoid, keys ``se.excitation.{0,2}``), output ``x * (m + z)``."""

    def __init__(self, num_feat, esa_channels, ratio=8):
        super().__init__(num_feat, esa_channels, variant='light')
        if num_feat // ratio < 1:
            raise ValueError(f'ESCA: num_feat={num_feat} gives a squeeze-excitation width num_feat // {ratio} = 0')
        self.se = nn.Module()
        self.se.squeeze = nn.AdaptiveAvgPool2d(1)
        self.se.excitation = nn.Sequential(nn.Linear(num_feat, num_feat // ratio), nn.ReLU(inplace=True),
                                           nn.Linear(num_feat // ratio, num_feat), nn.Sigmoid())

    def forward(self, x):
        z = self.se.excitation(self.se.squeeze(x).flatten(1))[:, :, None, None]
        return super().forward(x) + x * z


class DALFB(LocalFeatureBlock):
    """DLFAN's block (report Fig. 28, "DLFB"; official ``DALFB``): RLFN's RLFB with its three 3x3
    convs replaced by LEDBBs: ``r = act(c3_r(act(c2_r(act(c1_r(x)))))) + x`` (C -> mid -> mid ->
    C), then ``esa(c5(r))`` (c5 1x1, the light ESA with 16 channels, or ESCA). One activation
    module (``act``, LeakyReLU with slope 0.02) serves the three calls, as the official block.

    Training form: ``c1_r``, ``c2_r``, ``c3_r`` are :class:`~rtsr_arch.archs.rep.LEDBB` (keys
    ``dbb_origin``, ``dbb_1x1``, ``dbb_1x1_kxk_1``); deploy form: each one 3x3 conv
    ``c{i}_r.dbb_reparam`` (official keys in both forms).
    """

    def __init__(self, num_feat, mid_channels, esa_channels=16, act_type='lrelu', esa_mode='esa', deploy=False):
        super().__init__()
        self.add_convs(num_feat, mid_channels, lambda cin, cout: LEDBB(cin, cout, 3, 'linear', deploy))
        self.c5 = nn.Conv2d(num_feat, num_feat, 1)
        self.esa = ESA(num_feat, esa_channels, variant='light') if esa_mode == 'esa' else ESCA(num_feat, esa_channels)
        self.act = make_activation(act_type, num_feat, slope=DLFAN_SLOPE)


def archway_sources(num_block):
    """``{j: i}``: block ``j`` (1-based) reads ``out_{j-1} + out_i`` (DLFAN's archway connections);
    the other blocks read ``out_{j-1}``. With 5 blocks (the official network) ``{4: 2, 5: 1}``:
    ``b4 = B4(b3 + b2)``, ``b5 = B5(b4 + b1)``; in general block j reads the output of its mirror
    block ``num_block + 1 - j`` when that is an earlier, non-adjacent block."""
    return {j: num_block + 1 - j for j in range(1, num_block + 1) if 2 * j >= num_block + 3}


@ARCH_REGISTRY.register()
class DLFAN(ResidualTrunk, SRArch):
    """DLFAN (report §4.18, Fig. 28): ``conv_1`` (3x3) = f0 -> ``block_1..block_5`` (:class:`DALFB`)
    with archway connections (``b4 = B4(b3 + b2)``, ``b5 = B5(b4 + b1)``) -> ``conv_2`` (3x3) + f0
    -> ``upsampler`` (3x3 conv to 3·s² maps, PixelShuffle(s)).

    RLFN modified in two ways (report): the archway-shaped connections merging shallow block outputs
    into the later blocks, and every 3x3 conv of the blocks trained as an LEDBB (DBB's
    kxk+BN / 1x1+BN / identity-based 1x1 -> BN-value padding -> kxk -> BN branches, no pooling
    branch; :class:`~rtsr_arch.archs.rep.LEDBB`), fused exactly (float64, borders included) into
    one 3x3 conv ``dbb_reparam``. The block activation is LeakyReLU with slope **0.02** (RLFN uses
    0.05). Official weights: the deploy form (``team17_dlfan.pth``) and the training form
    (``team17_beforerep_dlfan.pth``), on [0, 1] images (``data_range`` 1.0).

    The published deploy file is not the exact float32 fusion of the published training file: its
    fused kernels differ from an exact fusion by up to ~2e-3 (outputs by ~2e-4), as a fusion run
    with TF32 convolutions on an Ampere GPU produces (see ``tests/archs/test_dlfan.py``). Both files
    load; each reproduces its own official forward.

    Every block ends with the light ESA, whose coarse map is bilinearly resized to the image size:
    inputs must be at least 15x15, and tiled inference is not exact (``tile_exact = False``).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (52; official ``feature_channels``).
        num_block: blocks (5); block j with 2j >= num_block + 3 also reads the output of block
            num_block + 1 - j (:func:`archway_sources`).
        upscale: 2, 3 or 4 (the official weights: x4).
        act_type: activation inside the blocks ('lrelu': LeakyReLU(0.02); no PReLU: one module
            serves mid and C channels).
        mid_channels: width of the blocks' inner convs (None: C; official ``mid_channels`` 52, and
            the official network builds only with mid == C).
        esa_channels: ESA width (16).
        esa_mode: 'esa' (the light ESA, official default and weights) or 'esca' (ESA + squeeze-
            excitation, the official ``ESCA``).
        deploy: build the reparameterized network directly.
    """

    paper = ('Ouyang, Ma, Liu, Zheng, Zhang, Zhang, Chen, Diversified Local Feature Arch-Network for Efficient '
             'Super-Resolution (NTIRE 2023 ESR report §4.18, team Sissie_Lab), CVPR Workshops 2023')
    code = 'N1koLiu/NTIRE2023_ESR@66069f0'
    license = 'MIT'
    min_input_size = ESA_MIN_INPUT_SIZE
    fp16_safe = True
    tile_exact = False

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 52, num_block: Int(1) = 5,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*DLFAN_ACTIVATIONS) = 'lrelu',
                 mid_channels: Int(1, optional=True) = None, esa_channels: Int(1) = 16,
                 esa_mode: OneOf('esa', 'esca') = 'esa', deploy: bool = False):
        super().__init__()
        if esa_mode == 'esca' and num_feat < 8:
            raise ValueError(f"DLFAN: esa_mode='esca' needs num_feat >= 8 (squeeze-excitation width num_feat // 8), "
                             f"got num_feat={num_feat}")
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        mid_channels = num_feat if mid_channels is None else mid_channels
        self.conv_1 = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.add_blocks([DALFB(num_feat, mid_channels, esa_channels, act_type, esa_mode, deploy)
                         for _ in range(num_block)])
        self.archway = archway_sources(num_block)
        self.conv_2 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.upsampler = conv_pixel_shuffle(num_feat, num_out_ch, upscale)

    def body(self, fea):
        """The blocks in a chain, block j also reading the output of block ``archway[j]``."""
        outs = []
        out = fea
        for j, block in enumerate(self.blocks(), 1):
            if j in self.archway:
                out = out + outs[self.archway[j] - 1]
            out = block(out)
            outs.append(out)
        return out


def _is_dlfan(sd):
    # RLFN's top-level names and light ESA, with LEDBB convs: deploy ``c1_r.dbb_reparam`` or the
    # training branches ``c1_r.dbb_origin`` (RLFN / DIPNet have ``c1_r.weight`` / ``c1_r.expand_conv``)
    return numbered_layout(sd, DLFAN.trunk_names, DLFAN.block_prefix) \
        and 'block_1.esa.conv3.weight' in sd and 'block_1.esa.conv_max.weight' not in sd \
        and ('block_1.c1_r.dbb_reparam.weight' in sd or 'block_1.c1_r.dbb_origin.conv.weight' in sd)


@register_importer('DLFAN', detect=_is_dlfan)
def import_official_dlfan(sd, overrides):
    """N1koLiu/NTIRE2023_ESR ``model_zoo/team17_dlfan.pth`` (deploy: ``c{i}_r.dbb_reparam``) and
    ``team17_beforerep_dlfan.pth`` (training form: ``dbb_origin``, ``dbb_1x1``, ``dbb_1x1_kxk_1``
    with BatchNorm statistics): raw state dicts saved from CUDA tensors."""
    opt = trunk_options(sd, overrides, 'DLFAN', 'conv_1', 'upsampler.0',
                        count_numbered(sd, DLFAN.block_prefix, 'DLFAN'))
    num_feat, num_block = opt['num_feat'], opt['num_block']
    deploy = 'block_1.c1_r.dbb_reparam.weight' in sd
    c1 = sd['block_1.c1_r.dbb_reparam.weight' if deploy else 'block_1.c1_r.dbb_origin.conv.weight']
    mid = c1.shape[0]
    if not deploy and 'block_1.c1_r.dbb_1x1_kxk_1.idconv1.weight' not in sd:
        raise OfficialImportError('DLFAN training form without dbb_1x1_kxk_1.idconv1: not the official LEDBB')
    if not deploy and 'block_1.c1_r.dbb_avg.avgbn.weight' in sd:
        raise OfficialImportError('DLFAN LEDBBs have no average-pooling branch (dbb_avg found)')
    opt.update(mid_channels=None if mid == num_feat else mid, esa_channels=sd['block_1.esa.conv1.weight'].shape[0],
               esa_mode='esca' if 'block_1.esa.se.excitation.0.weight' in sd else 'esa', deploy=deploy)
    notes = ImportNotes(overrides)
    notes.note(f"{'deploy' if deploy else 'training'} form: C {num_feat}, mid {mid}, {num_block} blocks, "
               f"{opt['esa_mode'].upper()} {opt['esa_channels']}, x{opt['upscale']}")
    notes.unstored(opt, 'act_type', 'lrelu', f'the official LeakyReLU (slope {DLFAN_SLOPE})')
    return notes.result(sd, opt)
