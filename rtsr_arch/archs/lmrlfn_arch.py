"""LMRLFN: low memory residual local feature network, team SeaOuter (Heaseo Chung), NTIRE 2023
Challenge on Efficient Super-Resolution (Li et al., "NTIRE 2023 Challenge on Efficient Super-Resolution:
Methods and Results", CVPRW 2023, §4.10, Figs. 16-17). Official code:
HeaseoChung/LMRLFN@ddb2081 (``models/team33_LMRLFN.py``; MIT)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import LocalFeatureBlock, ResidualTrunk, conv_pixel_shuffle, make_activation
from .official import (ImportNotes, count_indexed, count_numbered, expansion_ratio, numbered_layout, register_importer,
                       trunk_options)
from .rep import HFAB, format_up_blocks, hfab_warmup, parse_up_blocks

__all__ = ['LMRLFN', 'LMRLFB']


class LMRLFB(LocalFeatureBlock):
    """Low memory residual local feature block (Fig. 17; official ``LMRLFB``): ``c1_r`` (3x3 C -> m),
    ``c2_r`` (3x3 m -> m), ``c3_r`` (3x3 m -> C), each followed by LeakyReLU(0.05) (one registered
    module ``act``, called three times), + the block input, ``c5`` (1x1 C -> C), then an HFAB.

    The trunk convs are plain in both forms (the figure's Conv-3 / Conv-1); only the HFAB has a
    training form (BatchNorms, RRRB-based ERBs)."""

    attention_name = 'hfab'

    def __init__(self, channels, mid_channels, hfab_channels, up_blocks, attention_ratio=2, attention_bn=True,
                 deploy=False):
        super().__init__()
        self.add_convs(channels, mid_channels, lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1))
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.hfab = HFAB(channels, hfab_channels, up_blocks, attention_ratio, use_bn=attention_bn, deploy=deploy)
        self.act = make_activation('lrelu', channels, slope=0.05)


@ARCH_REGISTRY.register()
class LMRLFN(ResidualTrunk, SRArch):
    """LMRLFN (NTIRE 2023 ESR report §4.10, Fig. 16; official ``LMRLFN``): ``head`` conv -> warm-up
    (conv, HFAB with ``hfab_feat - 4`` channels) -> ``num_block`` LMRLFBs -> ``lr_conv``, + head
    features -> conv + PixelShuffle. An RLFN-style trunk (RLFB without ESA) whose attention is
    FMEN's HFAB (:class:`rtsr_arch.archs.rep.HFAB`).

    Training form: the HFABs with BatchNorms and RRRB-based ERBs (Fig. 17: BN -> Conv-3 -> LReLU
    -> ERB -> BN -> Conv-3 -> BN -> Sigmoid; ERB = RRRB -> LReLU -> RRRB), fused exactly by
    :func:`rtsr_arch.reparameterize` into the official deploy layout (``rep_conv``), in which the
    released ``team33_LMRLFN.pt`` is stored. Data range [0, 1] (``test_demo.py``:
    ``data_range = 1.0``).

    Quirk replicated: the HFABs' and ERBs' LeakyReLU(0.1) is a module-level global in the official
    code, not a registered submodule, so the NTIRE 2023 ESR FLOP counter does not count it
    (18.63 G); here it is applied functionally (``F.leaky_relu``), the same computation, equally
    invisible to the hook-based counter, so ``rtsr-runtime`` reproduces the official count. The
    trunk's LeakyReLU(0.05) is a registered module in both and is counted.

    Not float16-safe: with the released weights the attention path peaks at ~3.3e4 on photographs
    (float16 works there, max |diff| ~5e-3) but overflows float16 on high-contrast inputs such as
    1-pixel stripes; bfloat16 keeps float32's range.

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: trunk features (``n_feats``, 36).
        num_block: LMRLFBs (4; the official class ignores its ``down_blocks`` and builds 4).
        mid_feat: width inside each LMRLFB (``m_feats``, 40).
        hfab_feat: HFAB width (``hfab_feats``, 16; the warm-up HFAB uses ``hfab_feat - 4``).
        up_blocks: ERBs per HFAB, warm-up first (``num_block + 1`` entries joined by '+'); the
            entry: '2+2+1+1+1' (the official ``up_blocks[0] = 2`` for the warm-up, and 2, 1, 1, 1
            hard-coded for the blocks).
        upscale: 2, 3 or 4 (the entry: 4).
        attention_ratio: RRRB expansion in the HFAB ERBs (2, FMEN's).
        attention_bn: BatchNorms in the HFABs' training form (Fig. 17: True).
        deploy: build the reparameterized network directly.
    """

    paper = ('Li et al., NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, '
             '§4.10 (team SeaOuter, LMRLFN)')
    code = 'HeaseoChung/LMRLFN@ddb2081'
    license = 'MIT'
    # the released weights' attention path (block_1's HFAB ERBs) reaches ~3.3e4 on photographs and passes
    # float16's 65504 on high-contrast inputs (1-pixel stripes, checkerboards, binary noise): NaN outputs
    fp16_safe = False
    trunk_names = ('head', 'lr_conv', 'tail')

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 36, num_block: Int(1) = 4,
                 mid_feat: Int(1) = 40, hfab_feat: Int(5) = 16, up_blocks: str = '2+2+1+1+1',
                 upscale: OneOf(2, 3, 4) = 4, attention_ratio: Int(1) = 2, attention_bn: bool = True,
                 deploy: bool = False):
        super().__init__()
        ups = parse_up_blocks('LMRLFN', up_blocks, num_block + 1)
        self.upscale = upscale
        self.deploy = deploy
        hfab = dict(attention_ratio=attention_ratio, attention_bn=attention_bn, deploy=deploy)
        self.head = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.warmup = hfab_warmup(num_feat, hfab_feat, ups[0], attention_ratio, attention_bn, deploy)
        self.add_blocks([LMRLFB(num_feat, mid_feat, hfab_feat, ups[i + 1], **hfab) for i in range(num_block)])
        self.lr_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.tail = conv_pixel_shuffle(num_feat, num_out_ch, upscale)
        # head, warm-up conv, lr_conv, tail: 1 each; an LMRLFB: 3 (three 3x3 convs) + its HFAB's
        self.receptive_radius = 4 + self.warmup[1].receptive_radius + \
            sum(3 + b.hfab.receptive_radius for b in self.blocks())

    def body(self, fea):
        return super().body(self.warmup(fea))


def _is_lmrlfn(sd):
    return numbered_layout(sd, ('head', 'warmup', 'lr_conv', 'tail'), LMRLFN.block_prefix) and \
        'block_1.hfab.squeeze.weight' in sd


@register_importer('LMRLFN', detect=_is_lmrlfn)
def import_official_lmrlfn(sd, overrides):
    """HeaseoChung/LMRLFN ``model_zoo/team33_LMRLFN.pt`` (deploy form, raw state dict), or a
    training-form state dict (HFAB ``bn1..3`` and RRRB ``expand_conv``/``fea_conv``/``reduce_conv``)."""
    num_block = count_numbered(sd, LMRLFN.block_prefix, 'LMRLFN')
    hfabs = ['warmup.1', *(f'block_{i + 1}.hfab' for i in range(num_block))]
    hfab_feat = sd['block_1.hfab.squeeze.weight'].shape[0]
    deploy = not any('.expand_conv.' in k for k in sd)
    opt = trunk_options(sd, overrides, 'LMRLFN', 'head', 'tail.0', num_block,
                        mid_feat=sd['block_1.c1_r.weight'].shape[0], hfab_feat=hfab_feat,
                        up_blocks=format_up_blocks([count_indexed(sd, f'{h}.convs') for h in hfabs]))
    opt['deploy'] = deploy
    notes = ImportNotes(overrides)
    if deploy:
        notes.assumed += ['attention_ratio', 'attention_bn']
        notes.note('attention_ratio, attention_bn: training-form settings a deploy checkpoint does not store; '
                     'using 2 and True (FMEN\'s; they do not change the deploy network)')
    else:
        opt['attention_ratio'] = expansion_ratio(sd['block_1.hfab.convs.0.conv1.expand_conv.weight'].shape[0],
                                                 hfab_feat)
        opt['attention_bn'] = 'warmup.1.bn1.weight' in sd
    return notes.result(sd, opt)
