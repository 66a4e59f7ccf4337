"""EXnet (SRneXt): FRL Team 2 (Mingjian Zhang, Shizhuang Weng, Jinpeng Shi; Anhui University / Fried
Rice Lab), in Li et al., "NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results",
CVPRW 2023, §4.30, Fig. 48 and Table 1 (row "FRL Team 2": 0.245 M parameters, 15.37 G FLOPs,
422.90 M activations, 158 convs). Official code and weights: Zhang9317112/NTIRE2023_ESR@61459fb
(``models/team05_exnet.py``, ``model_zoo/team05_exnet.pth``), MIT (the NTIRE 2023 ESR organisers'
licence text)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS, FRLMLP, FRLSkeleton, LayerNorm2d
from .official import ImportNotes, count_indexed, register_importer, top_level_names, trunk_options

__all__ = ['EXnet', 'SelfGate', 'TransLayer']


class SelfGate(nn.Module):
    """The dimensional separable block (report §4.30): ``hw = x + h_mixer(x) * w_mixer(x)`` with
    depthwise (k x 1) and (1 x k) convs (with bias, zero padding k // 2), ``chw = hw + hw *
    c_mixer(hw)`` (1x1), output ``proj(chw)`` (1x1)."""

    def __init__(self, planes, kernel_size):
        super().__init__()
        k = kernel_size
        self.h_mixer = nn.Conv2d(planes, planes, (k, 1), padding=(k // 2, 0), groups=planes)
        self.w_mixer = nn.Conv2d(planes, planes, (1, k), padding=(0, k // 2), groups=planes)
        self.c_mixer = nn.Conv2d(planes, planes, 1)
        self.proj = nn.Conv2d(planes, planes, 1)

    def forward(self, x):
        hw = x + self.h_mixer(x) * self.w_mixer(x)
        return self.proj(hw + hw * self.c_mixer(hw))


class TransLayer(nn.Module):
    """``x + sg(norm1(x))`` then ``x + mlp(norm2(x))`` (LayerNorm4D, eps 1e-5; the MLP of shift 1x1
    convs, the FRL ``ShiftConv2d1x1``, C -> r·C -> C)."""

    def __init__(self, planes, kernel_size, hidden, act_type):
        super().__init__()
        self.sg = SelfGate(planes, kernel_size)
        self.norm1 = LayerNorm2d(planes, eps=1e-5, float32_stats=True)
        self.mlp = FRLMLP(planes, hidden, act_type)
        self.norm2 = LayerNorm2d(planes, eps=1e-5, float32_stats=True)

    def forward(self, x):
        x = x + self.sg(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@ARCH_REGISTRY.register()
class EXnet(FRLSkeleton, SRArch):
    """EXnet / SRneXt (report §4.30, Fig. 48; official ``EXnet(upscale=4, num_in_ch=3, num_out_ch=3,
    task='lsr', n_l=26, dim=35, kernel_size=15)``): the FRL skeleton (DF2K mean shift at the 255
    scale, 3x3 ``head.0``, ``body``, + head output, 3x3 conv to 3·s² channels + PixelShuffle as
    ``tail``) with a body of ``num_block`` transformer-style layers, each LayerNorm -> self gate
    (separable (k x 1) · (1 x k) depthwise product, 1x1 channel gate, 1x1 projection) and
    LayerNorm -> MLP of shift 1x1 convs with Swish (SiLU), each with a residual. The released x4
    model is C35, 26 layers, k = 15: 244,558 parameters (Table 1: 0.245 M).

    Computes on [0, 255] inside (inputs RGB in [0, 1], outputs unclamped). Purely convolutional
    with zero padding: tiled inference is exact; receptive radius 2 + num_block · (k // 2 + 2)
    (236 for the released model: each layer reaches k // 2 rows/columns through the mixers and
    one more through each shift conv). Nothing is reparameterizable: ``deploy`` is accepted and
    the network is its own deploy form.

    Float16: the official LayerNorm4D overflows on these 255-scale features (squared deviations
    beyond 65504 give an infinite variance and zero outputs); the layer norms here compute their
    statistics in float32 for half inputs (``LayerNorm2d(float32_stats=True)``), so the released
    weights run in float16 within ~2e-3 of float32 (``fp16_safe = True``). Float32 and float64
    forwards are the official ones.

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels (official ``dim``, 35; a multiple of 5, the shift groups).
        num_block: layers (official ``n_l``, 26).
        kernel_size: odd length k of the separable depthwise mixers (15).
        mlp_ratio: MLP expansion (2 in the official code).
        upscale: 2, 3 or 4 (the challenge: 4).
        act_type: MLP activation (official Swish = 'silu').
        deploy: accepted for the contract; the network has a single form.
    """

    paper = ('Li et al., NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, '
             'Sec. 4.30 (FRL Team 2: SRneXt / EXnet)')
    code = 'Zhang9317112/NTIRE2023_ESR@61459fb'
    license = 'MIT'
    value_range = (0, 255)
    fp16_safe = True
    tile_exact = True

    def __init__(self, num_in_ch: OneOf(3) = 3, num_out_ch: OneOf(3) = 3, num_feat: Int(5) = 35, num_block: Int(1) = 26,
                 kernel_size: Int(1) = 15, mlp_ratio: Int(1) = 2, upscale: OneOf(2, 3, 4) = 4,
                 act_type: OneOf(*ACTIVATIONS) = 'silu', deploy: bool = False):
        super().__init__()
        if num_feat % 5:
            raise ValueError(f'EXnet: num_feat={num_feat!r}: expected a multiple of 5 (the shift conv groups)')
        if kernel_size % 2 == 0:
            raise ValueError(f'EXnet: kernel_size={kernel_size!r}: expected an odd int')
        self.upscale = upscale
        self.deploy = deploy
        self.receptive_radius = 2 + num_block * (kernel_size // 2 + 2)
        self.add_skeleton(nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 3, padding=1)),
                          nn.Sequential(*[TransLayer(num_feat, kernel_size, num_feat * mlp_ratio, act_type)
                                          for _ in range(num_block)]),
                          num_feat, num_out_ch, upscale)


def _is_exnet(sd):
    return top_level_names(sd) == {'head', 'body', 'tail'} and 'head.0.weight' in sd \
        and 'body.0.sg.h_mixer.weight' in sd and 'body.0.mlp.fc1.weight' in sd


@register_importer('EXnet', detect=_is_exnet)
def import_official_exnet(sd, overrides):
    """Zhang9317112/NTIRE2023_ESR ``model_zoo/team05_exnet.pth``: ``{'params': state dict}``, no
    prefix (and any state dict with the official EXnet keys). Width, layers, mixer length, MLP
    ratio and scale come from the shapes (``num_out_ch`` is taken equal to ``num_in_ch``); the
    activation is assumed (Swish)."""
    opt = trunk_options(sd, overrides, 'EXnet', 'head.0', 'tail.0', count_indexed(sd, 'body'),
                        kernel_size=sd['body.0.sg.h_mixer.weight'].shape[2],
                        mlp_ratio=sd['body.0.mlp.fc1.weight'].shape[0] // sd['head.0.weight'].shape[0])
    opt.update(act_type='silu', deploy=False)
    notes = ImportNotes(overrides, assumed=['act_type', 'deploy'])
    if 'act_type' not in overrides:
        notes.note('act_type: silu (the official Swish); the weights do not say')
    notes.single_form('EXnet')
    return notes.result(sd, opt)
