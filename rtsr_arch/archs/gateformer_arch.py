"""GateFormer: FRL Team 1 (Yulong Liu, Jinpeng Shi; Anhui University / Fried Rice Lab), NTIRE 2023
Efficient SR challenge (Li et al., "NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and
Results", CVPRW 2023, Table 1 row "FRL Team 1": 0.200 M parameters, 12.76 G FLOPs, 243.20 M
activations, 100 convs; the report has no method section for this team, the description is the
team's factsheet "GateFormer is What You Need for SR"). Official code and weights:
LiuYLong/NTIRE2023_ESR@98435b2 (``models/team04_GateFormer.py``, ``model_zoo/team04_gateformer.pth``),
MIT (the NTIRE 2023 ESR organisers' licence text)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import FRLSkeleton, LayerNorm2d
from .official import ImportNotes, OfficialImportError, count_indexed, register_importer, top_level_names, trunk_options

__all__ = ['GateFormer', 'GateModule', 'GateLayer', 'GATEFORMER_BLOCKS']

# the official ``block_type`` values: depthwise kernels (bias-free) of the context gate
GATEFORMER_BLOCKS = {'33conv': (3,), '77conv': (7,), '1111conv': (11,), '1515conv': (15,), '5577conv': (5, 7)}


def _depthwise(channels, k):
    return nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, bias=False)


class GateModule(nn.Module):
    """``tail_conv(main_branch(x) * block(gate_branch(x)))``: three 1x1 convs (with bias) and, in
    a context gate, a bias-free depthwise ``block`` on the gate (one k x k conv, or a 5x5 then a
    7x7 for '5577conv'); in a basic gate ``block`` is the identity. No activation."""

    def __init__(self, planes, kernels):
        super().__init__()
        self.main_branch = nn.Conv2d(planes, planes, 1)
        self.gate_branch = nn.Conv2d(planes, planes, 1)
        if not kernels:
            self.block = nn.Identity()
        elif len(kernels) == 1:
            self.block = _depthwise(planes, kernels[0])
        else:
            self.block = nn.Sequential(*[_depthwise(planes, k) for k in kernels])
        self.tail_conv = nn.Conv2d(planes, planes, 1)

    def forward(self, x):
        return self.tail_conv(self.main_branch(x) * self.block(self.gate_branch(x)))


class GateLayer(nn.Module):
    """``x + gate_module(norm(x))``, norm = the FRL LayerNorm4D (per pixel over channels, eps 1e-5)."""

    def __init__(self, planes, kernels):
        super().__init__()
        self.gate_module = GateModule(planes, kernels)
        self.norm = LayerNorm2d(planes, eps=1e-5, float32_stats=True)

    def forward(self, x):
        return x + self.gate_module(self.norm(x))


@ARCH_REGISTRY.register()
class GateFormer(FRLSkeleton, SRArch):
    """GateFormer (factsheet §2, official ``GateFormer()``): the FRL skeleton (DF2K mean shift at
    the 255 scale, 3x3 ``head``, ``body``, + head output, 3x3 conv to 3·s² channels + PixelShuffle
    as ``tail``) with a body of ``num_block`` gate layers ``x + GateModule(LN(x))``. Layer i is a
    context gate (a depthwise ``block_type`` conv on the gate branch, standing in for
    self-attention) when ``(i + 1) % inter_rate != 0`` and a basic gate (no block, standing in for
    the MLP) otherwise: with ``inter_rate=2`` the even layers 0, 2, ..., 26. The released x4 model
    is C37, 28 layers, 11x11 blocks: 199,922 parameters (Table 1: 0.200 M).

    Computes on [0, 255] inside (inputs RGB in [0, 1], outputs unclamped). Purely convolutional
    with zero padding: tiled inference is exact with a receptive radius of 2 (head and tail) plus
    the depthwise radii of the context gates (72 for the released model). Nothing is
    reparameterizable: ``deploy`` is accepted and the network is its own deploy form.

    Float16: the official LayerNorm4D overflows on these 255-scale features (squared deviations
    beyond 65504 give an infinite variance and zero outputs); the layer norms here compute their
    statistics in float32 for half inputs (``LayerNorm2d(float32_stats=True)``), so the released
    weights run in float16 within ~2e-3 of float32 (``fp16_safe = True``). Float32 and float64
    forwards are the official ones.

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels (official ``planes``, 37).
        num_block: gate layers (official ``num_layers``, 28).
        block_type: the context gate's depthwise block (official names: '33conv', '77conv',
            '1111conv', '1515conv', '5577conv').
        inter_rate: every ``inter_rate``-th layer is a basic gate (official ``inter_rate``, 2).
        upscale: 2, 3 or 4 (the challenge: 4).
        deploy: accepted for the contract; the network has a single form.
    """

    paper = ('Li et al., NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, '
             'Table 1 (FRL Team 1: GateFormer; method in the team factsheet)')
    code = 'LiuYLong/NTIRE2023_ESR@98435b2'
    license = 'MIT'
    value_range = (0, 255)
    fp16_safe = True
    tile_exact = True

    def __init__(self, num_in_ch: OneOf(3) = 3, num_out_ch: OneOf(3) = 3, num_feat: Int(1) = 37, num_block: Int(1) = 28,
                 block_type: OneOf(*GATEFORMER_BLOCKS) = '1111conv', inter_rate: Int(1) = 2,
                 upscale: OneOf(2, 3, 4) = 4, deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.deploy = deploy
        kernels = GATEFORMER_BLOCKS[block_type]
        context = [(i + 1) % inter_rate != 0 for i in range(num_block)]
        self.receptive_radius = 2 + sum(context) * sum(k // 2 for k in kernels)
        self.add_skeleton(nn.Conv2d(num_in_ch, num_feat, 3, padding=1),
                          nn.Sequential(*[GateLayer(num_feat, kernels if c else ()) for c in context]),
                          num_feat, num_out_ch, upscale)


def _is_gateformer(sd):
    return top_level_names(sd) == {'head', 'body', 'tail'} and 'body.0.gate_module.main_branch.weight' in sd \
        and 'body.0.norm.weight' in sd


@register_importer('GateFormer', detect=_is_gateformer)
def import_official_gateformer(sd, overrides):
    """LiuYLong/NTIRE2023_ESR ``model_zoo/team04_gateformer.pth``: ``{'params': state dict}``,
    no prefix (and any state dict with the official GateFormer keys). Width, layers, block type,
    inter rate and scale come from the shapes (``num_out_ch`` is taken equal to ``num_in_ch``)."""
    num_block = count_indexed(sd, 'body')
    has_block = [any(k.startswith(f'body.{i}.gate_module.block.') for k in sd) for i in range(num_block)]
    first = next((i for i, b in enumerate(has_block) if not b), None)
    inter_rate = num_block + 1 if first is None else first + 1
    if has_block != [(i + 1) % inter_rate != 0 for i in range(num_block)]:
        raise OfficialImportError(f'GateFormer: context gates at layers {[i for i, b in enumerate(has_block) if b]} '
                                  f'do not follow an inter_rate pattern')
    notes = ImportNotes(overrides, assumed=['deploy'])
    if any(has_block):
        i = has_block.index(True)
        shapes = tuple(v.shape[-1] for k, v in sd.items() if k.startswith(f'body.{i}.gate_module.block.'))
        block_type = next((name for name, ks in GATEFORMER_BLOCKS.items() if ks == shapes), None)
        if block_type is None:
            raise OfficialImportError(f'GateFormer: depthwise kernels {shapes} are not one of the official block types')
    else:
        block_type = '1111conv'
        notes.assumed.append('block_type')
        notes.note('block_type: no context gate in the weights; 1111conv assumed (it is never used)')
    if first is None:
        notes.note(f'inter_rate: every layer is a context gate; inter_rate={inter_rate} (num_block + 1) reproduces '
                     f'that')
    opt = trunk_options(sd, overrides, 'GateFormer', 'head', 'tail.0', num_block, block_type=block_type,
                        inter_rate=inter_rate)
    opt['deploy'] = False
    notes.single_form('GateFormer')
    return notes.result(sd, opt)
