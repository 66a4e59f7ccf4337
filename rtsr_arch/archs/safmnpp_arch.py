"""SAFMN++ (light): team VPEG (NJUST: Lv, Sun, Pan, Dong, Tang), "SAFMN++: Improved Feature
Modulation Network for Real-Time Compressed Image Super-Resolution", in Conde et al., "Real-Time 4K
Super-Resolution of Compressed AVIF Images. AIS 2024 Challenge Survey", CVPRW 2024, §3.3 (entry
VPEG-S), Fig. 7, Tables 1 and 3; an improvement of SAFMN (Sun et al., ICCV 2023).
Official code: sunny2109/SAFMN@68c2182, folder ``AIS2024-RTSR/`` (``light_safmnpp_arch.py``,
``inference.py``, ``pretrained_model/light_safmnpp.pth``), Apache-2.0."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from .contract import Float, Int, OneOf, SRArch
from .layers import (PARAMETER_FREE_ACTIVATIONS, SAFMNSkeleton, adaptive_max_pool2d_by, check_ffn_scale,
                     conv_channel_mixer, ffn_scale_for, make_activation)
from .official import ImportNotes, count_indexed, register_importer, top_level_names, trunk_options

__all__ = ['SAFMNPP', 'SimpleSAFM', 'CCM', 'AttBlock', 'SAFMNPP_ACTIVATIONS', 'POOL_FACTOR']

POOL_FACTOR = 8  # SimpleSAFM pools to (H // 8, W // 8)
# activations without parameters: SimpleSAFM applies one activation module to 16- and 32-channel maps
SAFMNPP_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS


class SimpleSAFM(nn.Module):
    """SAFM++ (Fig. 7): a 3x3 conv for local features; half of them modulate themselves with a
    single-scale non-local branch (adaptive max pool to 1/8 -> depthwise 3x3 -> bilinear back ->
    GELU); the other half passes; concat -> GELU -> 1x1 fusion. Bias-free convs."""

    def __init__(self, dim, act_type='gelu'):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)
        self.dwconv = nn.Conv2d(dim // 2, dim // 2, 3, 1, 1, groups=dim // 2, bias=False)
        self.out = nn.Conv2d(dim, dim, 1, 1, 0, bias=False)
        self.act = make_activation(act_type, dim)

    def forward(self, x):
        h, w = x.shape[-2:]
        x0, x1 = self.proj(x).chunk(2, dim=1)
        x2 = self.dwconv(adaptive_max_pool2d_by(x0, POOL_FACTOR))
        x2 = F.interpolate(x2, size=(h, w), mode='bilinear', align_corners=False)
        x2 = self.act(x2) * x0
        return self.out(self.act(torch.cat([x1, x2], dim=1)))


class CCM(nn.Module):
    """Convolutional channel mixer: 3x3 conv (dim -> int(dim * ffn_scale)) -> GELU -> 1x1 conv back."""

    def __init__(self, dim, ffn_scale, act_type='gelu'):
        super().__init__()
        self.conv = conv_channel_mixer(dim, ffn_scale, act_type)

    def forward(self, x):
        return self.conv(x)


class AttBlock(nn.Module):
    """SimpleSAFM then CCM, without residual connections (as the official ``AttBlock``)."""

    def __init__(self, dim, ffn_scale, act_type='gelu'):
        super().__init__()
        self.conv1 = SimpleSAFM(dim, act_type)
        self.conv2 = CCM(dim, ffn_scale, act_type)

    def forward(self, x):
        return self.conv2(self.conv1(x))


@ARCH_REGISTRY.register()
class SAFMNPP(SAFMNSkeleton, SRArch):
    """SAFMN++ light (AIS 2024 RTSR survey §3.3, Fig. 7; official ``SAFMN_VIS24``): bias-free
    3x3 ``to_feat`` -> ``num_block`` x [SimpleSAFM -> CCM] with one global skip
    (``feats(x) + x``) -> bias-free 3x3 conv -> PixelShuffle(upscale).

    The AIS 2024 entry (``light_safmnpp.pth``) is C32, 2 blocks, FFN scale 1.5, x4: 66,176
    parameters, 34.16 G MACs at 960x540 (Table 3: 34.1587 G; Table 1: 34.2 G). Nothing is
    reparameterizable: ``deploy`` is accepted and the network is its own deploy form.

    SimpleSAFM pools to ``(H // 8, W // 8)`` and resizes back bilinearly, so every output pixel
    depends on the whole input size: ``tile_exact = False``, ``receptive_radius = None``, and
    ``min_input_size = 8``. The pooling is ``F.adaptive_max_pool2d`` in eager mode and a
    bit-identical traceable form while a graph is captured
    (:func:`rtsr_arch.archs.layers.adaptive_max_pool2d_by`), so ONNX / torch.export graphs are
    correct at every height and width, including sizes not divisible by 8 (540).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels (official ``dim``; even: SimpleSAFM splits it in halves).
        num_block: AttBlocks (official ``n_blocks``).
        ffn_scale: CCM expansion; the hidden width is ``int(num_feat * ffn_scale)``.
        upscale: 2, 3 or 4 (the challenge: 4).
        act_type: the activation of SimpleSAFM and CCM (GELU in the official code).
        preset: ``'ais24_light'``, the released AIS 2024 configuration (= the defaults).
        deploy: accepted for the contract; the network has a single form.
    """

    paper = ('Conde et al., Real-Time 4K Super-Resolution of Compressed AVIF Images, AIS 2024 Challenge Survey, '
             'CVPRW 2024, Sec. 3.3 (VPEG-S: SAFMN++)')
    code = 'sunny2109/SAFMN@68c2182'
    license = 'Apache-2.0'
    min_input_size = POOL_FACTOR
    tile_exact = False
    preset_key = 'preset'
    presets = {'ais24_light': dict(num_feat=32, num_block=2, ffn_scale=1.5, upscale=4)}

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(2) = 32, num_block: Int(1) = 2,
                 ffn_scale: Float(0) = 1.5, upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*SAFMNPP_ACTIVATIONS) = 'gelu',
                 preset: str = None, deploy: bool = False):
        super().__init__()
        if num_feat % 2:
            raise ValueError(f'SAFMNPP: num_feat={num_feat!r}: expected an even int >= 2 '
                             f'(SimpleSAFM splits it in halves)')
        check_ffn_scale('SAFMNPP', num_feat, ffn_scale)
        self.upscale = upscale
        self.receptive_radius = None  # global: the pooling grid and the resize follow the input size
        self.deploy = deploy
        self.add_skeleton(num_in_ch, num_out_ch, num_feat, upscale,
                          [AttBlock(num_feat, ffn_scale, act_type) for _ in range(num_block)], bias=False)


def _is_safmnpp(sd):
    return (top_level_names(sd) == {'to_feat', 'feats', 'to_img'} and 'feats.0.conv1.proj.weight' in sd
            and 'feats.0.conv1.dwconv.weight' in sd and 'feats.0.conv2.conv.0.weight' in sd)


@register_importer('SAFMNPP', detect=_is_safmnpp, param_keys=('params', 'params_ema'))
def import_official_safmnpp(sd, overrides):
    """sunny2109/SAFMN ``AIS2024-RTSR/pretrained_model/light_safmnpp.pth``: BasicSR dict
    ``{params, params_ema}`` whose two weight sets differ; the official ``inference.py`` loads
    ``params``, which is preferred here (``rtsr_arch.load_model(path, param_key='params_ema')``
    takes the EMA weights). Keys without prefix, every conv bias-free."""
    hidden = sd['feats.0.conv2.conv.0.weight'].shape[0]
    opt = trunk_options(sd, overrides, 'SAFMNPP', 'to_feat', 'to_img.0', count_indexed(sd, 'feats'),
                        ffn_scale=ffn_scale_for(sd['to_feat.weight'].shape[0], hidden))
    opt.update(act_type='gelu', deploy=False)
    notes = ImportNotes(overrides, assumed=['deploy'])
    notes.single_form('SAFMN++')
    notes.official(opt, 'act_type', 'gelu', 'SAFMN_VIS24')
    notes.params_preferred('inference.py')
    return notes.result(sd, opt)
