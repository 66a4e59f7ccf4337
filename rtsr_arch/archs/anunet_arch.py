"""ANUNet: Anchor-based Nested UnshuffleNet for Real-time Super-Resolution, team LeRTSR (Lenovo
Research; Menghan Zhou, Yiqiang Yan), 4th in the AIS 2024 Real-Time 4K Super-Resolution of
Compressed AVIF Images challenge (Conde et al., "Real-Time 4K Super-Resolution of Compressed AVIF
Images. AIS 2024 Challenge Survey", CVPRW 2024, §3.6, Figs. 10-11).
Official code (deploy form and x4 weights only): zhoumenghan/AIS2024_ANUNet@c41a2d8 (no licence stated)."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS, make_activation
from .official import ImportNotes, OfficialImportError, count_indexed, infer_upscale, register_importer, top_level_names
from .rep import ECB, NRB

__all__ = ['ANUNet', 'NRBAct']


class NRBAct(nn.Module):
    """One body block: :class:`~rtsr_arch.archs.rep.NRB` (``nrb``, linear) then the activation
    (``act``), the official ``NRBACT`` layout (deploy keys ``nrb.rep_conv.{weight,bias}``)."""

    def __init__(self, num_feat, act_type, ratio, deploy):
        super().__init__()
        self.nrb = NRB(num_feat, ratio=ratio, depth_multiplier=2.0, act_type='linear', deploy=deploy)
        self.act = make_activation(act_type, num_feat)

    def forward(self, x):
        return self.act(self.nrb(x))


@ARCH_REGISTRY.register()
class ANUNet(SRArch):
    """ANUNet (AIS 2024 RTSR report §3.6, Fig. 11): PixelUnshuffle(2) -> ECB + act -> num_block x
    [NRB + act] -> ECB (linear, to ``4 * num_out_ch * upscale^2`` channels) -> PixelShuffle(2),
    plus the anchor (every input channel repeated ``upscale^2`` times, ``repeat_interleave``:
    R..R G..G B..B) at LR resolution, then PixelShuffle(upscale). The anchor through the final
    shuffle is exactly a nearest-neighbour upscale of the input, so the body learns the residual.
    The anchor is computed as a gather with constant channel indices (the same values as the
    official ``repeat_interleave``, bit for bit) so that traced and ONNX graphs keep a static
    channel count; with one image channel the official code adds ``x`` by broadcasting, which is
    the same sum.

    Deploy form (``deploy=True`` or after :func:`rtsr_arch.reparameterize`): exactly the released
    ``LeRTSR(4)`` = official ``ANUNet(upscale=4, deploy=True)``: ``backbone.0.rbr_reparam``
    (12 -> 28), ``backbone.{1,2,3}.nrb.rep_conv`` (28 -> 28), ``backbone.4.rbr_reparam``
    (28 -> 192), 72,880 parameters; ``ANUNet_x4.pth`` loads strictly.

    Training form: the two ECBs are ECBSR's block as in the official code (depth multiplier 2.0,
    *no* identity branch: ``with_idt=False``, official ``conv3x3`` / ``conv1x1_3x3`` /
    ``conv1x1_sbx`` / ``conv1x1_sby`` / ``conv1x1_lpl`` keys). The NRB's training form is not
    published; the report says the outer structure is FMEN's ERB RepBlock (RRRB) and the inner one
    an "enhanced ECB". We build it as :class:`~rtsr_arch.archs.rep.NRB`: 1x1 expand (ratio
    ``nrb_ratio``) -> ECB with its identity branch (= RRRB's inner residual) -> 1x1 reduce, + x;
    bias-padded so that it fuses exactly, border pixels included (see the NRB docstring for the
    reasoning and the choice).

    Args:
        num_in_ch, num_out_ch: image channels; must be equal (the anchor repeats the input).
        num_feat: feature channels (28).
        num_block: NRB blocks (3; at least 1: the importer recognises ANUNet by its NRB keys).
        upscale: 2, 3 or 4 (4: the challenge's 540p -> 4K).
        act_type: activation after the first ECB and every NRB ('gelu', as the official code).
        nrb_ratio: expansion ratio of the NRB's outer 1x1 convs (2, FMEN's RRRB ratio); training
            form only, the deploy form does not depend on it.
        deploy: build the reparameterized network directly.

    Input height and width must be even (PixelUnshuffle(2)): ``input_multiple = 2``; inference
    pads to it and crops back (the official code requires even sizes).
    """

    paper = ('Conde et al., Real-Time 4K Super-Resolution of Compressed AVIF Images. AIS 2024 Challenge Survey, '
             'CVPRW 2024, §3.6 (ANUNet, team LeRTSR / Lenovo Research)')
    code = 'zhoumenghan/AIS2024_ANUNet@c41a2d8'
    license = 'none stated'
    input_multiple = 2
    min_input_size = 2

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 28, num_block: Int(1) = 3,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*ACTIVATIONS) = 'gelu', nrb_ratio: Int(1) = 2,
                 deploy: bool = False):
        super().__init__()
        if num_out_ch != num_in_ch:
            raise ValueError(f'ANUNet: num_out_ch={num_out_ch} must equal num_in_ch={num_in_ch} '
                             f'(the anchor repeats the input channels)')
        self.upscale = upscale
        self.num_in_ch = num_in_ch
        self.deploy = deploy
        # num_block + 2 3x3 convs at half resolution; PixelUnshuffle(2) adds one LR pixel
        self.receptive_radius = 2 * (num_block + 2) + 1
        self.backbone = nn.Sequential(
            ECB(4 * num_in_ch, num_feat, depth_multiplier=2.0, act_type=act_type, with_idt=False, deploy=deploy),
            *[NRBAct(num_feat, act_type, nrb_ratio, deploy) for _ in range(num_block)],
            ECB(num_feat, 4 * num_out_ch * upscale ** 2, depth_multiplier=2.0, act_type='linear', with_idt=False,
                deploy=deploy))
        self.upsampler = nn.PixelShuffle(upscale)
        self.down = nn.PixelUnshuffle(2)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        # the official repeat_interleave(x, upscale^2, dim=1) as a gather with constant indices
        # (0..0 1..1 2..2), which keeps the channel count static in traced / ONNX graphs
        index = torch.arange(self.num_in_ch, device=x.device).repeat_interleave(self.upscale ** 2)
        anchor = x.index_select(1, index)
        return self.upsampler(self.up(self.backbone(self.down(x))) + anchor)


def _is_anunet(sd):
    return top_level_names(sd) == {'backbone'} and any(k.startswith('backbone.1.nrb.') for k in sd) and \
        any(f'backbone.0.{k}.weight' in sd for k in ('rbr_reparam', 'conv3x3'))


@register_importer('ANUNet', detect=_is_anunet)
def import_official_anunet(sd, overrides):
    """zhoumenghan/AIS2024_ANUNet ``ANUNet_x4.pth``: a raw state dict of the deploy form
    (``backbone.{0,4}.rbr_reparam``, ``backbone.{1,2,3}.nrb.rep_conv``); this package's training
    form (ECB branches, ``nrb.expand_conv`` / ``nrb.eecb`` / ``nrb.reduce_conv``) too."""
    n = count_indexed(sd, 'backbone')
    last = n - 1
    fused = {i: f'backbone.{i}.rbr_reparam.weight' in sd for i in (0, last)}
    fused.update({i: f'backbone.{i}.nrb.rep_conv.weight' in sd for i in range(1, last)})
    if len(set(fused.values())) != 1:
        raise OfficialImportError(f'ANUNet: partially fused checkpoint (fused blocks: '
                                  f'{sorted(i for i, f in fused.items() if f)} of backbone.0..{last})')
    deploy = fused[0]
    key = 'rbr_reparam' if deploy else 'conv3x3'
    num_feat, in_x4 = sd[f'backbone.0.{key}.weight'].shape[:2]
    if in_x4 % 4:
        raise OfficialImportError(f'ANUNet: the first conv reads {in_x4} channels, not 4 x image channels')
    num_in_ch = in_x4 // 4
    opt = dict(type='ANUNet', num_in_ch=num_in_ch, num_out_ch=num_in_ch, num_feat=num_feat, num_block=n - 2,
               upscale=infer_upscale(sd[f'backbone.{last}.{key}.weight'].shape[0], num_in_ch, shuffle_per_scale=2),
               deploy=deploy)
    notes = ImportNotes(overrides)
    notes.activation(opt, 'backbone.0.act.weight' in sd, 'gelu', "the official 'gelu'")
    notes.expansion(opt, 'nrb_ratio', sd, 'backbone.1.nrb.expand_conv.weight', num_feat,
                    'nrb_ratio: a deploy checkpoint does not record the training-form expansion ratio; using 2 (it '
                    'does not change the deploy network)')
    return notes.result(sd, opt)
