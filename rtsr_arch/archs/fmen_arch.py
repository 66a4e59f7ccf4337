"""FMEN: Du, Liu, Liu, Tang, Wu, Fu, "Fast and Memory-Efficient Network Towards Efficient Image
Super-Resolution", CVPRW 2022 (NTIRE 2022 ESR: lowest memory, second-shortest runtime).
Official code: NJU-Jet/FMEN@a1def16 (``train_fmen.py``, ``test_fmen.py``, ``reparameterize.py``;
Apache-2.0)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ResidualTrunk, conv_pixel_shuffle
from .official import ImportNotes, count_indexed, expansion_ratio, register_importer, top_level_names, trunk_options
from .rep import ERB, HFAB, format_up_blocks, hfab_warmup, parse_up_blocks

__all__ = ['FMEN', 'parse_up_blocks']


@ARCH_REGISTRY.register()
class FMEN(ResidualTrunk, SRArch):
    """FMEN (paper §3, Fig. 2; official ``TRAIN_FMEN`` / ``TEST_FMEN``): head conv -> warm-up
    (conv, HFAB with ``mid_feat - 4`` channels) -> ``num_block`` x [ERB -> HFAB] -> ``lr_conv``, +
    head features -> conv + PixelShuffle.

    Training form: every ERB is RRRB -> LeakyReLU(0.1) -> RRRB (bias-padded, §3.2), every HFAB
    has BatchNorms before ``squeeze`` and around ``excitate`` (``attention_bn``, §3.3: "BN ...
    introduces global contexts and achieves the sigmoid's unsaturated area"), padded with the BN
    value so that :func:`rtsr_arch.reparameterize` (the official ``reparameterize.py`` merge) is
    exact on every pixel. Deploy form: 3x3 convs, LeakyReLU(0.1), sigmoid, element-wise ops only,
    with the keys of the released ``test_weights.pt``.

    The official networks compute in [0, 255] (EDSR framework, ``rgb_range = 255``, no mean
    shift): inputs are scaled by 255 inside and outputs divided by 255 (``value_range``). Not
    float16-safe: with the released weights the attention path's features reach ~2e7 on photographs.
    The 0.1-slope LeakyReLUs are applied functionally, as the official module-level ``act``: the
    NTIRE ESR FLOP counter does not count them, as for the official network.

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: trunk features (``n_feats``, 50).
        num_block: [ERB, HFAB] pairs (``down_blocks``, 4).
        mid_feat: HFAB width (``mid_feats``, 16; the warm-up HFAB uses ``mid_feat - 4``).
        up_blocks: ERBs per HFAB, warm-up first, as the official option ``'2+1+1+1+1'``
            (``num_block + 1`` entries).
        upscale: 2, 3 or 4 (the released weights: 4).
        backbone_ratio: RRRB expansion in the trunk ERBs (``backbone_expand_ratio``, 2).
        attention_ratio: RRRB expansion in the HFAB ERBs (``attention_expand_ratio``, 2).
        attention_bn: BatchNorms in the HFABs' training form (official: True).
        deploy: build the reparameterized network directly.
    """

    paper = ('Du, Liu, Liu, Tang, Wu, Fu, Fast and Memory-Efficient Network Towards Efficient Image '
             'Super-Resolution, CVPRW 2022')
    code = 'NJU-Jet/FMEN@a1def16'
    license = 'Apache-2.0'
    value_range = (0.0, 255.0)
    # in [0, 255] the released weights' warm-up HFAB reaches ~2e7 (the ERBs of the attention path,
    # before the sigmoid saturates): float16 overflows (max 65504) on ordinary photographs
    fp16_safe = False
    trunk_names = ('head', 'lr_conv', 'tail')
    img_range = 255.0

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 50, num_block: Int(1) = 4,
                 mid_feat: Int(5) = 16, up_blocks: str = '2+1+1+1+1', upscale: OneOf(2, 3, 4) = 4,
                 backbone_ratio: Int(1) = 2, attention_ratio: Int(1) = 2, attention_bn: bool = True,
                 deploy: bool = False):
        super().__init__()
        ups = parse_up_blocks('FMEN', up_blocks, num_block + 1)
        self.upscale = upscale
        self.deploy = deploy
        hfab = dict(ratio=attention_ratio, use_bn=attention_bn, deploy=deploy)
        self.head = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.warmup = hfab_warmup(num_feat, mid_feat, ups[0], **hfab)
        self.ERBs = nn.ModuleList([ERB(num_feat, backbone_ratio, deploy=deploy) for _ in range(num_block)])
        self.HFABs = nn.ModuleList([HFAB(num_feat, mid_feat, ups[i + 1], **hfab) for i in range(num_block)])
        self.lr_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.tail = conv_pixel_shuffle(num_feat, num_out_ch, upscale)
        # head, warm-up conv, lr_conv and tail: 1 each; an ERB: 2; an HFAB: 2 + 2 * its ERBs
        self.receptive_radius = 4 + self.warmup[1].receptive_radius + \
            sum(2 + h.receptive_radius for h in self.HFABs)

    def body(self, fea):
        h = self.warmup(fea)
        for erb, hfab in zip(self.ERBs, self.HFABs):
            h = hfab(erb(h))
        return h


def _is_fmen(sd):
    return top_level_names(sd) == {'head', 'warmup', 'ERBs', 'HFABs', 'lr_conv', 'tail'} and \
        'warmup.1.squeeze.weight' in sd


@register_importer('FMEN', detect=_is_fmen)
def import_official_fmen(sd, overrides):
    """NJU-Jet/FMEN checkpoints: ``test_weights.pt`` (the ``TEST_FMEN`` deploy form, raw state dict)
    or a ``TRAIN_FMEN`` state dict (RRRB ``expand_conv``/``fea_conv``/``reduce_conv``, HFAB ``bn1..3``)."""
    num_block = count_indexed(sd, 'ERBs')
    hfabs = ['warmup.1', *(f'HFABs.{i}' for i in range(num_block))]
    mid_feat = sd['HFABs.0.squeeze.weight'].shape[0]
    deploy = not any('.expand_conv.' in k for k in sd)
    opt = trunk_options(sd, overrides, 'FMEN', 'head', 'tail.0', num_block, mid_feat=mid_feat,
                        up_blocks=format_up_blocks([count_indexed(sd, f'{h}.convs') for h in hfabs]))
    opt['deploy'] = deploy
    notes = ImportNotes(overrides)
    if deploy:
        notes.assumed += ['backbone_ratio', 'attention_ratio', 'attention_bn']
        notes.note('backbone_ratio, attention_ratio, attention_bn: training-form settings a deploy checkpoint '
                     'does not store; using the official 2, 2 and True (they do not change the deploy network)')
    else:
        opt['backbone_ratio'] = expansion_ratio(sd['ERBs.0.conv1.expand_conv.weight'].shape[0], opt['num_feat'])
        opt['attention_ratio'] = expansion_ratio(sd['HFABs.0.convs.0.conv1.expand_conv.weight'].shape[0], mid_feat)
        opt['attention_bn'] = 'warmup.1.bn1.weight' in sd
    return notes.result(sd, opt)
