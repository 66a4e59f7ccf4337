"""RepRFN: Deng, Yuan, Deng, Lu, "Reparameterized Residual Feature Network for Lightweight Image
Super-Resolution", CVPR Workshops 2023 (team CUC_SR, NTIRE 2023 Efficient SR challenge, 11th by
runtime; NTIRE 2023 ESR report §4.16, Figs. 24-26). Official code and weights:
laonafahaodange/NTIRE2023-ESR-RepRFN@4ddbab8 ``models/team07_RepRFN.py``,
``model_zoo/team07_reprfn.pth`` (deploy form only; MIT)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS, ESA, ESA_MIN_INPUT_SIZE, ResidualTrunk, make_activation
from .official import (OFFICIAL_LEAKY_RELU, ImportNotes, count_numbered, numbered_layout, register_importer,
                       trunk_options)
from .rep import RepRFNBlock

__all__ = ['RepRFN', 'RepRFB']


class RepRFB(nn.Module):
    """Reparameterized residual feature block (report Fig. 25; official ``RepRFB``): three
    :class:`~rtsr_arch.archs.rep.RepRFNBlock` (``repblock1..3``, each ending in its own
    activation), ``conv3`` (3x3) + activation, + the block input, then the light ESA (``esa``,
    16 channels): ``esa(x + act(conv3(rb3(rb2(rb1(x))))))``."""

    def __init__(self, num_feat, act_type='lrelu', esa_channels=16, expand=2, deploy=False):
        super().__init__()
        for i in (1, 2, 3):
            self.add_module(f'repblock{i}', RepRFNBlock(num_feat, num_feat, act_type, deploy, expand=expand))
        self.conv3 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.esa = ESA(num_feat, esa_channels, variant='light')
        self.act = make_activation(act_type, num_feat)

    def forward(self, x):
        y = self.repblock3(self.repblock2(self.repblock1(x)))
        return self.esa(x + self.act(self.conv3(y)))


class UpsampleBlock(nn.Module):
    """The official ``Upsample_Block``: 3x3 conv (``conv``) to ``out * s²`` maps, PixelShuffle(s)."""

    def __init__(self, in_channels, out_channels, scale):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * scale ** 2, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.pixel_shuffle(self.conv(x))


@ARCH_REGISTRY.register()
class RepRFN(ResidualTrunk, SRArch):
    """RepRFN (report §4.16, Fig. 24): ``fea_conv`` (3x3) -> ``reprfb1..reprfb{num_block}``
    (:class:`RepRFB`) -> ``lr_conv`` (3x3) + ``fea_conv``'s output -> ``upsampler`` (3x3 conv,
    PixelShuffle(s)).

    RFDN with each block's channel concatenation replaced by a local residual, its first three
    convs by RepBlocks and ESA reduced to RLFN's light form. A RepBlock trains as
    3x3 + 3x1 + 1x3 + 1x1 + (1x1 -> 3x3, 2C inside) + identity + ECB's 1x1 -> Sobel-x / Sobel-y /
    Laplacian branches and deploys as one 3x3 conv ``rbr_reparam``
    (:class:`~rtsr_arch.archs.rep.RepRFNBlock`, exact in float64, borders included). Every
    activation is LeakyReLU with slope 0.05 (official ``activation('lrelu')``), one module per
    RepBlock and one per block for ``conv3``. The official weights are the deploy form only, on
    [0, 1] images (``data_range`` 1.0).

    Every block ends with the light ESA, whose coarse map is bilinearly resized to the image size:
    inputs must be at least 15x15, and tiled inference is not exact (``tile_exact = False``).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (48).
        num_block: RepRFBs (4).
        upscale: 2, 3 or 4 (the official weights: x4).
        act_type: activation of the RepBlocks and of ``conv3`` ('lrelu': LeakyReLU(0.05)).
        esa_channels: ESA width (16).
        expand: inner width of the RepBlocks' 1x1 -> 3x3 branch relative to C (2).
        deploy: build the reparameterized network directly.
    """

    paper = ('Deng, Yuan, Deng, Lu, Reparameterized Residual Feature Network for Lightweight Image '
             'Super-Resolution, CVPR Workshops 2023 (NTIRE 2023 ESR report §4.16, team CUC_SR)')
    code = 'laonafahaodange/NTIRE2023-ESR-RepRFN@4ddbab8'
    license = 'MIT'
    min_input_size = ESA_MIN_INPUT_SIZE
    fp16_safe = True
    tile_exact = False
    trunk_names = ('fea_conv', 'lr_conv', 'upsampler')
    block_prefix = 'reprfb'

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 48, num_block: Int(1) = 4,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*ACTIVATIONS) = 'lrelu', esa_channels: Int(1) = 16,
                 expand: Int(1) = 2, deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        self.fea_conv = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.add_blocks([RepRFB(num_feat, act_type, esa_channels, expand, deploy) for _ in range(num_block)])
        self.lr_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.upsampler = UpsampleBlock(num_feat, num_out_ch, upscale)


def _is_reprfn(sd):
    return numbered_layout(sd, RepRFN.trunk_names, RepRFN.block_prefix) \
        and 'upsampler.conv.weight' in sd and 'reprfb1.conv3.weight' in sd \
        and any(k.startswith('reprfb1.repblock1.') for k in sd)


@register_importer('RepRFN', detect=_is_reprfn)
def import_official_reprfn(sd, overrides):
    """laonafahaodange/NTIRE2023-ESR-RepRFN ``model_zoo/team07_reprfn.pth``: a raw state dict of
    the deploy form (``reprfb{i}.repblock{j}.rbr_reparam``), saved from CUDA tensors; training-form
    dicts (``rbr_3x3_branch`` ...) of the official code or this package load too."""
    opt = trunk_options(sd, overrides, 'RepRFN', 'fea_conv', 'upsampler.conv',
                        count_numbered(sd, RepRFN.block_prefix, 'RepRFN'))
    num_feat, num_block = opt['num_feat'], opt['num_block']
    deploy = 'reprfb1.repblock1.rbr_reparam.weight' in sd
    opt.update(esa_channels=sd['reprfb1.esa.conv1.weight'].shape[0], deploy=deploy)
    notes = ImportNotes(overrides)
    notes.note(f"{'deploy' if deploy else 'training'} form: C {num_feat}, {num_block} RepRFBs, "
               f"ESA {opt['esa_channels']}, x{opt['upscale']}")
    notes.expansion(opt, 'expand', sd, 'reprfb1.repblock1.rbr_1x1_3x3_branch_1x1.weight', num_feat,
                    'expand: a deploy checkpoint does not store the 1x1 -> 3x3 branch width; using the official 2 '
                    '(it matters only for training)')
    notes.activation(opt, any(k.endswith('act.weight') for k in sd), 'lrelu', OFFICIAL_LEAKY_RELU)
    return notes.result(sd, opt)
