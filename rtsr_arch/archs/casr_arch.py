"""CASR: Yoon, Gankhuyag, Park, Son, Min, "CASR: Efficient Cascade Network Structure with Channel
Aligned method for 4K Real-Time Single Image Super-Resolution", CVPRW 2024; team Z6, 1st place of the
AIS 2024 Real-Time 4K SR challenge (challenge report §3.4, Fig. 8, Table 1).
Official code: rlghksdbs/CASR@2b0554a (no licence stated)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS
from .official import (ImportNotes, OfficialImport, count_indexed, infer_upscale, register_importer, resolve_aliases,
                       top_level_names)
from .rep import COLLAPSIBLE_ALIASES, CollapsibleBlock

__all__ = ['CASR', 'CASR_BLOCKS']

UNSHUFFLE = 3  # the cascade's first stage works at 1/3 resolution (channel alignment: 3 x 3 x colors)
CASR_BLOCKS = ('head', 'backbone', 'transition', 'input_conv2')  # official top-level names


@ARCH_REGISTRY.register()
class CASR(SRArch):
    """CASR (AIS 2024 RTSR report §3.4, Fig. 8; official ``RepNetwork_V011_BestStruct`` /
    ``RepNetwork_V010_BestStruct_deploy`` of rlghksdbs/CASR ``source/models/RepNetworkPlain.py``):
    a two-stage cascade of RepBlockV5 blocks (dual-branch collapsible blocks,
    :class:`~rtsr_arch.archs.rep.CollapsibleBlock` with ``feature_size_b2``; each deploys to one 3x3
    conv):

    1. PixelUnshuffle(3): the LR image becomes ``9 * num_in_ch`` channels at 1/3 resolution;
    2. ``head`` (``9 * num_in_ch -> num_feat``, act) -> ``backbone`` (``num_block`` blocks, act,
       identity shortcut) -> ``transition`` (``num_feat -> 9 * num_in_ch``, linear) ->
       PixelShuffle(3): back to the LR size with the image's channels ("channel alignment");
    3. ``input_conv2`` (``num_in_ch -> num_out_ch * upscale**2``, linear) applied to that plus the
       LR image (the LR-image residual), then PixelShuffle(upscale).

    No clamp, no mean shift; inputs in [0, 1]. There is no feature skip around the backbone (unlike
    LRSRN). Input height and width must be multiples of 3 (``input_multiple = 3``; inference pads
    and crops back; 540x960 -> 180x320 in the first stage).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels of the first stage (32: ``c_plainsr``).
        num_block: backbone blocks (1: ``m_plainsr``).
        upscale: 2, 3 or 4 (the second stage's PixelShuffle; the challenge is x4).
        act_type: activation after the head and backbone blocks (gelu).
        feature_size, feature_size_b2: widths of each block's two collapsible branches (256, 128).
        bias: False removes every bias (CASR's last stage, report §3.4: "we turn off the bias term
            of the reparametrization block", 0.2 ms faster for about -0.02 dB); start it from a
            biased checkpoint with ``strict_load_g: false`` so the biases are dropped.
        deploy: build the reparameterized network (four 3x3 convs) directly.
        preset: ``'ais24'`` (the published configuration, the defaults) or ``'ais24_nobias'``.
    """

    paper = ('Yoon, Gankhuyag, Park, Son, Min, CASR: Efficient Cascade Network Structure with Channel Aligned '
             'method for 4K Real-Time Single Image Super-Resolution, CVPRW 2024 (AIS 2024 RTSR report §3.4)')
    code = 'rlghksdbs/CASR@2b0554a'
    license = 'none stated'
    input_multiple = UNSHUFFLE
    preset_key = 'preset'
    presets = {
        'ais24': dict(upscale=4, num_feat=32, num_block=1, act_type='gelu', bias=True),
        'ais24_nobias': dict(upscale=4, num_feat=32, num_block=1, act_type='gelu', bias=False),
    }

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 32, num_block: Int(0) = 1,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*ACTIVATIONS) = 'gelu', feature_size: Int(1) = 256,
                 feature_size_b2: Int(1) = 128, bias: bool = True, deploy: bool = False, preset: str = None):
        super().__init__()
        self.upscale = upscale
        # num_block + 2 3x3 convs at 1/3 resolution reach 3 * (num_block + 2) + 2 LR pixels from the
        # farthest phase of a 3x3 cell; input_conv2 adds one
        self.receptive_radius = UNSHUFFLE * (num_block + 3)
        aligned = num_in_ch * UNSHUFFLE ** 2

        def block(cin, cout, act):
            return CollapsibleBlock(cin, cout, feature_size, act, deploy=deploy, bias=bias,
                                    feature_size_b2=feature_size_b2)

        self.pixelUnShuffle = nn.PixelUnshuffle(UNSHUFFLE)
        self.head = block(aligned, num_feat, act_type)
        self.backbone = nn.Sequential(*[block(num_feat, num_feat, act_type) for _ in range(num_block)])
        self.transition = nn.Sequential(block(num_feat, aligned, 'linear'))
        self.upsampler = nn.PixelShuffle(UNSHUFFLE)
        self.input_conv2 = block(num_in_ch, num_out_ch * upscale ** 2, 'linear')
        self.upsampler1 = nn.PixelShuffle(upscale)

    def forward(self, x):
        y = self.transition(self.backbone(self.head(self.pixelUnShuffle(x))))
        return self.upsampler1(self.input_conv2(self.upsampler(y) + x))


def _block_prefixes(sd):
    return ['head', *(f'backbone.{i}' for i in range(count_indexed(sd, 'backbone'))), 'transition.0', 'input_conv2']


def _weight(sd, prefix, conv):
    """The weight of ``conv`` ('conv0', 'conv1', 'conv0_b2', 'conv3x3') of a block, under its
    official name or its alias."""
    alias = {v: k for k, v in COLLAPSIBLE_ALIASES.items()}.get(f'{conv}.weight')
    return sd.get(f'{prefix}.{conv}.weight', sd.get(f'{prefix}.{alias}') if alias else None)


def _is_casr(sd):
    return top_level_names(sd) in (set(CASR_BLOCKS), set(CASR_BLOCKS) - {'backbone'}) and \
        all(_weight(sd, p, 'conv3x3') is not None or _weight(sd, p, 'conv0') is not None for p in _block_prefixes(sd))


def _is_training_form(sd, prefix):
    return _weight(sd, prefix, 'conv0') is not None


@register_importer('CASR', detect=_is_casr)
def import_official_casr(sd, overrides):
    """rlghksdbs/CASR ``model_x4_best_submission.pt`` (training form, with the ``w0/b0/w1/b1/w0_b2/...``
    alias keys), ``model_x4_best_submission_deploy.pt`` (``conv3x3`` layers), and the partially
    fused checkpoint of the ``scratch_22.78`` folder (head/backbone/transition fused, ``input_conv2``
    still in training form), whose remaining training-form blocks are fused here with the block
    library (float64 merge) so that it loads as a deploy network."""
    sd = resolve_aliases(sd, COLLAPSIBLE_ALIASES)
    notes = ImportNotes(overrides)

    prefixes = _block_prefixes(sd)
    trained = [p for p in prefixes if _is_training_form(sd, p)]
    in_ch = _weight(sd, 'input_conv2', 'conv0' if 'input_conv2' in trained else 'conv3x3').shape[1]
    num_out_ch = int(overrides.get('num_out_ch', in_ch))
    head_out = sd['head.conv1.weight' if 'head' in trained else 'head.conv3x3.weight'].shape[0]
    up_out = sd['input_conv2.conv1.weight' if 'input_conv2' in trained else 'input_conv2.conv3x3.weight'].shape[0]
    bias = any(k.endswith('.bias') for k in sd)
    opt = dict(type='CASR', num_in_ch=in_ch, num_out_ch=num_out_ch, num_feat=head_out,
               num_block=count_indexed(sd, 'backbone'), upscale=infer_upscale(up_out, num_out_ch))
    if trained:
        opt['feature_size'] = sd[f'{trained[0]}.conv0.weight'].shape[0]
        opt['feature_size_b2'] = sd[f'{trained[0]}.conv0_b2.weight'].shape[0]
    else:
        notes.assumed += ['feature_size', 'feature_size_b2']
        notes.note('feature_size, feature_size_b2: a deploy checkpoint does not store the branch widths; '
                   'using the official 256 and 128')
    notes.activation(opt, any(k.endswith('act.weight') for k in sd), 'gelu', "the official 'gelu'")
    opt['bias'] = bias
    opt.update(overrides)
    if trained and len(trained) < len(prefixes):  # partially fused: fuse the rest, as the official fuse_model
        for prefix in trained:
            part = {k[len(prefix) + 1:]: sd.pop(k) for k in [k for k in sd if k.startswith(prefix + '.')]}
            block = CollapsibleBlock(part['conv0.weight'].shape[1], part['conv1.weight'].shape[0],
                                     part['conv0.weight'].shape[0], 'prelu' if 'act.weight' in part else 'linear',
                                     bias='conv0.bias' in part, feature_size_b2=part['conv0_b2.weight'].shape[0])
            block.load_state_dict(part)
            block.to(next(iter(part.values())).dtype).reparameterize()
            sd.update({f'{prefix}.{k}': v for k, v in block.state_dict().items()})
        notes.note(f"partially fused checkpoint: {', '.join(trained)} still in training form (the other blocks "
                     f"fused); fused here with the block library (float64 merge), so it loads as a deploy network")
        trained = []
    opt['deploy'] = not trained
    return OfficialImport(sd, opt, notes.notes, tuple(notes.assumed))
