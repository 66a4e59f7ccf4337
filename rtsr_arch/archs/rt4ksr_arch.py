"""RT4KSR (Zamfir, Conde, Timofte, "Towards Real-Time 4K Image Super-Resolution", CVPRW 2023),
official code eduardzamfir/RT4KSR."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
import torch

from .layers import GaussianBlur, LayerNorm2d, check_divisible, make_activation
from .official import (OfficialImport, count_indexed, infer_upscale, register_official_importer, strip_prefix,
                       unwrap_state_dict)
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
class RT4KSR(nn.Module):
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
        size: one of :data:`RT4KSR_SIZES` ('XXS' ... 'XXXL', Table 3b) instead of num_feat/num_block.
        upscale: 2, 3 or 4.
        act_type: activation ('gelu').
        hf_gate: inject the high-frequency branch (see above).
        deploy: build the reparameterized network directly.

    Input height and width must be even (PixelUnshuffle(2)).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=None, num_block=None, upscale=2, act_type='gelu',
                 size=None, hf_gate=False, deploy=False):
        super().__init__()
        num_block, num_feat = _resolve_size(size, num_block, num_feat)
        if upscale not in (2, 3, 4):
            raise ValueError(f'RT4KSR upscale must be 2, 3 or 4; got {upscale}')
        self.upscale = upscale
        self.hf_gate = hf_gate
        self.gamma = nn.Parameter(torch.zeros(1))
        self.blur = GaussianBlur(kernel_size=5, sigma=1.0)
        self.down = nn.PixelUnshuffle(2)
        self.head = nn.Sequential(nn.Conv2d(num_in_ch * 4, num_feat, 3, padding=1))
        self.hfb = nn.Sequential(RRRB(num_feat, ratio=2, deploy=deploy), make_activation(act_type, num_feat))
        self.body = nn.Sequential(*[RT4KSRBlock(num_feat, act_type, deploy) for _ in range(num_block)])
        self.tail = nn.Sequential(LayerNorm2d(num_feat), RRRB(num_feat, ratio=2, deploy=deploy))
        self.upsample = nn.Sequential(
            nn.Conv2d(num_feat, num_out_ch * (2 * upscale) ** 2, 3, padding=1), nn.PixelShuffle(2 * upscale))

    def forward(self, x):
        check_divisible(x, 2, 'RT4KSR')
        feats = self.body(self.head(self.down(x)))
        if self.hf_gate:
            hf = self.hfb(self.head(self.down(self.blur.high_frequencies(x))))
            feats = self.gamma * feats + hf
        return self.upsample(self.tail(feats))


def _resolve_size(size, num_block, num_feat):
    if size is None:
        return (4 if num_block is None else num_block), (24 if num_feat is None else num_feat)
    if size not in RT4KSR_SIZES:
        raise ValueError(f"RT4KSR size '{size}' is unknown; expected one of: {', '.join(RT4KSR_SIZES)}")
    if num_block is not None or num_feat is not None:
        raise ValueError(f"RT4KSR: give either size='{size}' or num_block/num_feat, not both")
    return RT4KSR_SIZES[size]


@register_official_importer('RT4KSR')
def import_official_rt4ksr(checkpoint, overrides):
    """eduardzamfir/RT4KSR ``rt4ksr_x{2,3}.pth``: ``{epoch, iteration, state_dict, ...}``, keys
    prefixed ``module.`` (DataParallel), training form; deploy-form dicts (``rep_conv``) too."""
    sd = strip_prefix(unwrap_state_dict(checkpoint), 'module.')
    if 'head.0.weight' not in sd or 'upsample.0.weight' not in sd:
        raise ValueError("not an RT4KSR checkpoint: 'head.0.weight' / 'upsample.0.weight' not found")
    num_feat, in_x4 = sd['head.0.weight'].shape[:2]
    num_in_ch = in_x4 // 4
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    opt = dict(type='RT4KSR', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
               num_block=count_indexed(sd, 'body'),
               upscale=infer_upscale(sd['upsample.0.weight'].shape[0], num_out_ch, shuffle_per_scale=2),
               act_type='gelu', hf_gate=False, deploy=not any('.expand_conv.' in k for k in sd))
    notes = []
    if 'hf_gate' not in overrides:
        notes.append('hf_gate: false as in the official code (forget=False): the high-frequency branch and gamma '
                     'load but do not change the output')
    opt.update(overrides)
    return OfficialImport(sd, opt, notes)
