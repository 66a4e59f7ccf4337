"""FMEN: Du, Liu, Liu, Tang, Wu, Fu, "Fast and Memory-Efficient Network Towards Efficient Image
Super-Resolution", CVPRW 2022 (NTIRE 2022 ESR: lowest memory, second-shortest runtime).
Official code: NJU-Jet/FMEN@a1def16 (``train_fmen.py``, ``test_fmen.py``, ``reparameterize.py``;
Apache-2.0)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import conv_pixel_shuffle
from .official import OfficialImport, OfficialImportError, count_indexed, infer_upscale, register_importer, \
    top_level_names
from .rep import ERB, HFAB

__all__ = ['FMEN', 'parse_up_blocks']


def parse_up_blocks(cls_name, value, count):
    """``'2+1+1+1+1'`` -> ``(2, 1, 1, 1, 1)``: the ERBs of each HFAB, written as FMEN's training
    option ``--up_blocks`` (ints >= 1 joined by '+'); ``count`` entries are required. A malformed
    value is a one-line ValueError naming ``cls_name`` and the keyword."""
    parts = value.split('+')
    if not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"{cls_name}: up_blocks={value!r}: expected ints >= 1 joined by '+', e.g. '2+1+1+1+1'")
    if len(parts) != count:
        raise ValueError(f'{cls_name}: up_blocks={value!r}: expected {count} entries (the warm-up HFAB and one '
                         f'per block, num_block={count - 1}), got {len(parts)}')
    return tuple(int(p) for p in parts)


def format_up_blocks(blocks):
    return '+'.join(str(b) for b in blocks)


@ARCH_REGISTRY.register()
class FMEN(SRArch):
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
        self.warmup = nn.Sequential(nn.Conv2d(num_feat, num_feat, 3, padding=1),
                                    HFAB(num_feat, mid_feat - 4, ups[0], **hfab))
        self.ERBs = nn.ModuleList([ERB(num_feat, backbone_ratio, deploy=deploy) for _ in range(num_block)])
        self.HFABs = nn.ModuleList([HFAB(num_feat, mid_feat, ups[i + 1], **hfab) for i in range(num_block)])
        self.lr_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.tail = conv_pixel_shuffle(num_feat, num_out_ch, upscale)
        # head, warm-up conv, lr_conv and tail: 1 each; an ERB: 2; an HFAB: 2 + 2 * its ERBs
        self.receptive_radius = 4 + self.warmup[1].receptive_radius + \
            sum(2 + h.receptive_radius for h in self.HFABs)

    def forward(self, x):
        x = self.head(x * 255.0)
        h = self.warmup(x)
        for erb, hfab in zip(self.ERBs, self.HFABs):
            h = hfab(erb(h))
        return self.tail(self.lr_conv(h) + x) / 255.0


def _is_fmen(sd):
    return top_level_names(sd) == {'head', 'warmup', 'ERBs', 'HFABs', 'lr_conv', 'tail'} and \
        'warmup.1.squeeze.weight' in sd


def _ratio(sd, key, channels, name):
    mid = sd[key].shape[0]
    if mid % channels:
        raise OfficialImportError(f'{key}: {mid} expanded features are not an integer {name} of {channels}')
    return mid // channels


@register_importer('FMEN', detect=_is_fmen)
def import_official_fmen(sd, overrides):
    """NJU-Jet/FMEN checkpoints: ``test_weights.pt`` (the ``TEST_FMEN`` deploy form, raw state dict)
    or a ``TRAIN_FMEN`` state dict (RRRB ``expand_conv``/``fea_conv``/``reduce_conv``, HFAB ``bn1..3``)."""
    num_feat, num_in_ch = sd['head.weight'].shape[:2]
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    num_block = count_indexed(sd, 'ERBs')
    up_blocks = [count_indexed(sd, 'warmup.1.convs')] + [count_indexed(sd, f'HFABs.{i}.convs')
                                                        for i in range(num_block)]
    mid_feat = sd['HFABs.0.squeeze.weight'].shape[0]
    deploy = not any('.expand_conv.' in k for k in sd)
    opt = dict(type='FMEN', num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=num_block,
               mid_feat=mid_feat, up_blocks=format_up_blocks(up_blocks),
               upscale=infer_upscale(sd['tail.0.weight'].shape[0], num_out_ch), deploy=deploy)
    notes, assumed = [], []
    if deploy:
        assumed += ['backbone_ratio', 'attention_ratio', 'attention_bn']
        notes.append('backbone_ratio, attention_ratio, attention_bn: training-form settings a deploy checkpoint '
                     'does not store; using the official 2, 2 and True (they do not change the deploy network)')
    else:
        opt['backbone_ratio'] = _ratio(sd, 'ERBs.0.conv1.expand_conv.weight', num_feat, 'backbone_ratio')
        opt['attention_ratio'] = _ratio(sd, 'HFABs.0.convs.0.conv1.expand_conv.weight', mid_feat, 'attention_ratio')
        opt['attention_bn'] = 'warmup.1.bn1.weight' in sd
    opt.update(overrides)
    return OfficialImport(sd, opt, notes, tuple(assumed))
