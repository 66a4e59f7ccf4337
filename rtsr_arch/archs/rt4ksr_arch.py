"""RT4KSR: Zamfir, Conde, Timofte, "Towards Real-Time 4K Image Super-Resolution", CVPRW 2023.
Official code: eduardzamfir/RT4KSR@fd6627a (Apache-2.0)."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS, GaussianBlur, LayerNorm2d, conv_pixel_shuffle, make_activation
from .official import OfficialImport, count_indexed, infer_upscale, register_importer, top_level_names
from .rep import RRRB

__all__ = ['RT4KSR', 'RT4KSR_SIZES']

# Table 3b of the paper, (num_block, num_feat); S is the challenge model (Table 1).
RT4KSR_SIZES = {
    'XXS': (2, 24), 'XS': (2, 32), 'S': (4, 24), 'M': (4, 32),
    'L': (6, 24), 'XL': (6, 32), 'XXL': (8, 24), 'XXXL': (8, 32),
}


class RT4KSRBlock(nn.Module):
    """The simplified NAFNet block of Fig. 5g: LayerNorm2d -> RRRB -> activation, no skip."""

    def __init__(self, num_feat, act_type, deploy):
        super().__init__()
        self.norm = LayerNorm2d(num_feat)
        self.conv1 = RRRB(num_feat, ratio=2, deploy=deploy)
        self.act = make_activation(act_type, num_feat)

    def forward(self, x):
        return self.act(self.conv1(self.norm(x)))


@ARCH_REGISTRY.register()
class RT4KSR(SRArch):
    """RT4KSR (paper §3.1, Fig. 3): PixelUnshuffle(2) -> head -> B x [LayerNorm2d -> RRRB -> GELU]
    -> LayerNorm2d -> RRRB -> conv -> PixelShuffle(2 * upscale), with a high-frequency branch
    (x - GaussianBlur(x), through the shared head and an RRRB + GELU).

    The high-frequency branch is injected as ``tail(gamma * deep + hf)`` when ``hf_gate=True``
    (the official ``forget=True`` path). The released x2/x3 weights were trained and are evaluated
    with ``hf_gate=False``: the branch and ``gamma`` exist (and load) but their result is unused,
    so this implementation does not compute them at all in that case.

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C; num_block: blocks B (defaults: the S model, C24 B4).
        upscale: 2, 3 or 4.
        act_type: activation ('gelu').
        size: one of :data:`RT4KSR_SIZES` ('XXS' ... 'XXXL', Table 3b), setting num_block and num_feat.
        hf_gate: inject the high-frequency branch (see above).
        deploy: build the reparameterized network directly.

    Input height and width must be even (PixelUnshuffle(2)): ``input_multiple = 2``; with
    ``hf_gate`` at least 4 (the blur's reflect padding).
    """

    paper = 'Zamfir, Conde, Timofte, Towards Real-Time 4K Image Super-Resolution, CVPRW 2023'
    code = 'eduardzamfir/RT4KSR@fd6627a'
    license = 'Apache-2.0'
    input_multiple = 2
    preset_key = 'size'
    presets = {name: dict(num_block=b, num_feat=c) for name, (b, c) in RT4KSR_SIZES.items()}

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 24, num_block: Int(0) = 4,
                 upscale: OneOf(2, 3, 4) = 2, act_type: OneOf(*ACTIVATIONS) = 'gelu', size: str = None,
                 hf_gate: bool = False, deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.hf_gate = hf_gate
        if hf_gate:
            self.min_input_size = 4  # the blur's reflect padding needs 3 pixels; even: 4
        # 3x3 convs at half resolution: head, B blocks, tail, upsample; the HF branch adds the
        # blur's 2 pixels before the unshuffle to head, hfb, tail and upsample
        self.receptive_radius = max(2 * (num_block + 3) + 1, 2 * 4 + 1 + 2 if hf_gate else 0)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.blur = GaussianBlur(kernel_size=5, sigma=1.0)
        self.down = nn.PixelUnshuffle(2)
        self.head = nn.Sequential(nn.Conv2d(num_in_ch * 4, num_feat, 3, padding=1))
        self.hfb = nn.Sequential(RRRB(num_feat, ratio=2, deploy=deploy), make_activation(act_type, num_feat))
        self.body = nn.Sequential(*[RT4KSRBlock(num_feat, act_type, deploy) for _ in range(num_block)])
        self.tail = nn.Sequential(LayerNorm2d(num_feat), RRRB(num_feat, ratio=2, deploy=deploy))
        self.upsample = conv_pixel_shuffle(num_feat, num_out_ch, 2 * upscale)

    def forward(self, x):
        feats = self.body(self.head(self.down(x)))
        if self.hf_gate:
            hf = self.hfb(self.head(self.down(self.blur.high_frequencies(x))))
            feats = self.gamma * feats + hf
        return self.upsample(self.tail(feats))


def _is_rt4ksr(sd):
    return top_level_names(sd) == {'gamma', 'head', 'hfb', 'body', 'tail', 'upsample'}


@register_importer('RT4KSR', detect=_is_rt4ksr)
def import_official_rt4ksr(sd, overrides):
    """eduardzamfir/RT4KSR ``rt4ksr_x{2,3}.pth``: ``{epoch, iteration, state_dict, ...}``, keys
    prefixed ``module.`` (DataParallel), training form; deploy-form dicts (``rep_conv``) too."""
    num_feat, in_x4 = sd['head.0.weight'].shape[:2]
    num_in_ch = in_x4 // 4
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    opt = dict(type='RT4KSR', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
               num_block=count_indexed(sd, 'body'),
               upscale=infer_upscale(sd['upsample.0.weight'].shape[0], num_out_ch, shuffle_per_scale=2),
               act_type='gelu', hf_gate=False, deploy=not any('.expand_conv.' in k for k in sd))
    notes, assumed = [], ['act_type']
    if 'hf_gate' not in overrides:
        assumed.append('hf_gate')
        notes.append('hf_gate: false as in the official code (forget=False): the high-frequency branch and gamma '
                     'load but do not change the output')
    opt.update(overrides)
    return OfficialImport(sd, opt, notes, tuple(assumed))
