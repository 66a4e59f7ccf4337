"""LRSRN: Gankhuyag, Yoon et al., "Lightweight Real-Time Image Super-Resolution Network for 4K
Images", CVPRW 2023 (NTIRE 2023 RTSR). Official code: Ganzooo/LRSRN@ac58548 (no licence file)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS
from .official import ImportNotes, count_indexed, infer_upscale, register_importer, resolve_aliases, top_level_names
from .rep import COLLAPSIBLE_ALIASES, CollapsibleBlock

__all__ = ['LRSRN', 'LRSRN_VARIANTS']

# variant -> whether head and transition are RepConv blocks (True) or plain 3x3 convs (False)
LRSRN_VARIANTS = {
    'plain': False,  # official PlainRepConv: the x2 submission
    'blockv2': True,  # official PlainRepConv_BlockV2: the x3 submission (and CASR's x4 teacher)
}


@ARCH_REGISTRY.register()
class LRSRN(SRArch):
    """LRSRN: head -> m RepConv blocks -> transition(backbone + head features) -> PixelShuffle
    (paper §3.1, Eqs. 1-3). Every RepConv block collapses to a 3x3 conv at deploy time (§3.2).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (32 in the paper).
        num_block: backbone blocks m (4 in the paper).
        upscale: 2, 3 or 4.
        act_type: activation after the head and every backbone block (relu in the submissions).
        variant: 'plain' (plain 3x3 head/transition, x2 submission) or 'blockv2' (RepConv
            head/transition with 1x1 shortcuts, x3 submission).
        feature_size: expanded width inside each RepConv block (256).
        deploy: build the reparameterized network directly.
        bias: False removes every bias (CASR's final training stage, AIS 2024 RTSR report §3.4:
            "we turn off the bias term of the reparametrization block"); start it from a biased
            checkpoint with ``strict_load_g: false`` so the biases are dropped.
        preset: a submitted configuration of :attr:`presets` (x2, x3, x3 C48, CASR's x4 teacher).
    """

    paper = 'Gankhuyag, Yoon et al., Lightweight Real-Time Image Super-Resolution Network for 4K Images, CVPRW 2023'
    code = 'Ganzooo/LRSRN@ac58548'
    license = 'none stated'
    preset_key = 'preset'
    presets = {
        'ntire23_x2': dict(upscale=2, num_feat=32, num_block=4, act_type='relu', variant='plain'),
        'ntire23_x3': dict(upscale=3, num_feat=32, num_block=4, act_type='relu', variant='blockv2'),
        'ntire23_x3_c48': dict(upscale=3, num_feat=48, num_block=4, act_type='relu', variant='blockv2'),
        'casr_teacher_x4': dict(upscale=4, num_feat=64, num_block=10, act_type='gelu', variant='blockv2'),
    }

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 32, num_block: Int(0) = 4,
                 upscale: OneOf(2, 3, 4) = 2, act_type: OneOf(*ACTIVATIONS) = 'relu',
                 variant: OneOf(*LRSRN_VARIANTS) = 'plain', feature_size: Int(1) = 256, deploy: bool = False,
                 bias: bool = True, preset: str = None):
        super().__init__()
        self.upscale = upscale
        self.receptive_radius = num_block + 2  # one 3x3 conv per block, head and transition
        rep_ends = LRSRN_VARIANTS[variant]

        def block(cin, cout, act, rep=True):
            return CollapsibleBlock(cin, cout, feature_size, act, deploy=deploy or not rep, bias=bias)

        self.head = block(num_in_ch, num_feat, act_type, rep_ends)
        self.backbone = nn.Sequential(*[block(num_feat, num_feat, act_type) for _ in range(num_block)])
        self.transition = nn.Sequential(block(num_feat, num_out_ch * upscale ** 2, 'linear', rep_ends))
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x):
        y0 = self.head(x)
        return self.upsampler(self.transition(self.backbone(y0) + y0))


def _is_lrsrn(sd):
    return top_level_names(sd) in ({'head', 'backbone', 'transition'}, {'head', 'transition'}) and \
        any(f'transition.0.{k}' in sd for k in ('conv3x3.weight', 'conv1.weight', 'w1'))


@register_importer('LRSRN', detect=_is_lrsrn)
def import_official_lrsrn(sd, overrides):
    """Ganzooo/LRSRN checkpoints: ``model_x*_best_submission.pt`` (training form, with the
    ``w0/b0/w1/b1`` alias keys), ``*_deploy.pt`` (``conv3x3`` layers), or ``model_x*_best.pt``
    (``model_state_dict``); also CASR's x4 m10 C64 teacher."""
    sd = resolve_aliases(sd, COLLAPSIBLE_ALIASES)
    notes = ImportNotes(overrides)
    # a RepConv head/transition (training form of 'blockv2') is conv0 (in -> feature_size) then
    # conv1 (feature_size -> out): the block's input is conv0's, its output conv1's
    rep_head = 'head.conv0.weight' in sd
    head_in, head_out = ('head.conv0.weight', 'head.conv1.weight') if rep_head else ('head.conv3x3.weight',) * 2
    trans_key = 'transition.0.conv1.weight' if 'transition.0.conv0.weight' in sd else 'transition.0.conv3x3.weight'
    num_in_ch, num_feat = sd[head_in].shape[1], sd[head_out].shape[0]
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    deploy = not any('.conv0.' in k for k in sd)
    opt = dict(type='LRSRN', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
               num_block=count_indexed(sd, 'backbone'), upscale=infer_upscale(sd[trans_key].shape[0], num_out_ch))
    if deploy:
        opt['variant'] = 'blockv2'
        notes.assumed += ['variant', 'feature_size']
        notes.note("variant: a deploy checkpoint does not tell 'plain' from 'blockv2' (same layers); using 'blockv2'")
    else:
        opt['variant'] = 'blockv2' if rep_head else 'plain'
        opt['feature_size'] = next(sd[k].shape[0] for k in ('backbone.0.conv0.weight', 'head.conv0.weight')
                                   if k in sd)
    notes.activation(opt, any(k.endswith('act.weight') for k in sd), 'relu', "the submissions' 'relu'")
    opt['bias'] = 'head.conv3x3.bias' in sd or 'head.conv0.bias' in sd
    opt['deploy'] = deploy
    return notes.result(sd, opt)
