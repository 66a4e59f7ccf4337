"""PFDN: Partial Feature Distillation Network for Efficient Super-Resolution (Wang, Pan, Cai, Dai;
team KaiBai Group, NTIRE 2023 Efficient SR challenge, fourth by runtime and first overall; NTIRE
2023 ESR report §4.7, Figs. 12-13; factsheet ``2023_PFDN_NTIRE/factsheet/08-PFDN-Factsheet.pdf``).
Official code and weights: icandle/PlainUSR@d7ff11a ``2023_PFDN_NTIRE/models/team08_PFDN.py``,
``2023_PFDN_NTIRE/model_zoo/team08_PFDN.pth`` (MIT). The released file is the deploy form; the
RRRB training form follows the factsheet ("we combine the existing RRRB")."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import (ESA, ESA_MIN_INPUT_SIZE, PARAMETER_FREE_ACTIVATIONS, ResidualTrunk, conv_pixel_shuffle,
                     make_activation)
from .official import (OFFICIAL_LEAKY_RELU, ImportNotes, count_numbered, numbered_layout, register_importer,
                       trunk_options)
from .rep import RRRB

__all__ = ['PFDN', 'PFDB', 'PFDN_ACTIVATIONS']

# one activation module serves the 48- and the 32-channel maps, as in the official block: no PReLU
PFDN_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS


class PFDB(nn.Module):
    """Partial feature distillation block (report Fig. 13; official ``Block``), attention first:

    ``x = attn(x)`` (light ESA, 16 channels); ``res = x``; ``x = act(conv1(x))`` (3x3 C -> C);
    the first ``partial_channels`` channels become ``act(conv3(x[:, :p]))`` (3x3 p -> p), the
    others pass unchanged; ``x = act(conv2(x))`` (3x3 C -> C); output ``x + res``.

    The official code writes the partial result back in place (``x[:, :32] = ...``); here the two
    channel groups are concatenated, which is the same tensor without an in-place write (autograd
    and ONNX export see a plain graph). One activation module (``act``, LeakyReLU 0.05) serves the
    three calls, as the official ``relu``, so the NTIRE ESR counter counts each call (48, 32 and
    48 channels). ``conv1``, ``conv2``, ``conv3`` are RRRBs (FMEN) whose deploy conv is the
    official ``convN.rep_conv``.
    """

    def __init__(self, num_feat, partial_channels=32, esa_channels=16, act_type='lrelu', ratio=2, deploy=False):
        super().__init__()
        self.partial_channels = partial_channels
        self.attn = ESA(num_feat, esa_channels, variant='light')
        self.conv1 = RRRB(num_feat, ratio=ratio, deploy=deploy)
        self.conv2 = RRRB(num_feat, ratio=ratio, deploy=deploy)
        self.conv3 = RRRB(partial_channels, ratio=ratio, deploy=deploy)
        self.act = make_activation(act_type, num_feat)

    def forward(self, x):
        x = self.attn(x)
        res = x
        x = self.act(self.conv1(x))
        p = self.partial_channels
        x = torch.cat([self.act(self.conv3(x[:, :p])), x[:, p:]], dim=1)
        x = self.act(self.conv2(x))
        return x + res


@ARCH_REGISTRY.register()
class PFDN(ResidualTrunk, SRArch):
    """PFDN (NTIRE 2023 ESR report §4.7, Fig. 12; official ``Net``): ``conv_first`` (3x3, 3 -> C)
    -> ``block1..blockN`` :class:`PFDB` -> ``conv_last`` (3x3 C -> C) + conv_first's output ->
    ``tail`` (3x3 conv C -> 3·s², PixelShuffle(s)). A plain design (EFDN without its skip
    connections); computes on [0, 1] images (the official ``test_demo.py`` data range 1.0).

    Training form: every block conv is an RRRB (FMEN's residual-in-residual rep block: 1x1 expand
    by ``rep_ratio``, bias-padded 3x3 + identity, 1x1 reduce + identity), fused by
    :func:`rtsr_arch.reparameterize` exactly into the official ``blockI.convN.rep_conv``. The
    factsheet reparameterizes before the 180x180 patch stage, so the last two stages train the
    deploy form (``deploy=True``; ``rtsr-reparam`` converts a training checkpoint between stages).
    The factsheet also mentions a layer-wise loss based on normalized cross-correlation; it is not
    specified and not part of this package.

    Every block starts with the light ESA, whose coarse map is bilinearly resized to the image
    size: inputs must be at least 15x15, and tiled inference is not exact (``tile_exact = False``).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (48).
        num_block: blocks (4).
        upscale: 2, 3 or 4 (official weights: x4).
        act_type: activation inside the blocks (LeakyReLU, slope 0.05; no PReLU: one module serves
            C and ``partial_channels`` channels).
        partial_channels: channels refined by the partial conv (32 of 48; at most ``num_feat``).
        esa_channels: ESA width (16).
        rep_ratio: expansion of the training-form RRRBs (2, FMEN's; not stored in a deploy checkpoint).
        deploy: build the reparameterized network directly.
    """

    paper = ('Wang, Pan, Cai, Dai, Partial Feature Distillation Network for Efficient Super-Resolution, '
             'NTIRE 2023 ESR challenge (report: Li et al., CVPR Workshops 2023, §4.7)')
    code = 'icandle/PlainUSR@d7ff11a'
    license = 'MIT'
    min_input_size = ESA_MIN_INPUT_SIZE
    fp16_safe = True
    tile_exact = False
    trunk_names = ('conv_first', 'conv_last', 'tail')
    block_prefix = 'block'

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 48, num_block: Int(1) = 4,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*PFDN_ACTIVATIONS) = 'lrelu',
                 partial_channels: Int(1) = 32, esa_channels: Int(1) = 16, rep_ratio: Int(1) = 2,
                 deploy: bool = False):
        super().__init__()
        if partial_channels > num_feat:
            raise ValueError(f'PFDN: partial_channels={partial_channels!r}: expected at most num_feat={num_feat}')
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.add_blocks([PFDB(num_feat, partial_channels, esa_channels, act_type, rep_ratio, deploy)
                         for _ in range(num_block)])
        self.conv_last = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.tail = conv_pixel_shuffle(num_feat, num_out_ch, upscale)


def _is_pfdn(sd):
    return numbered_layout(sd, PFDN.trunk_names, PFDN.block_prefix) and 'block1.attn.conv3.weight' in sd \
        and ('block1.conv3.rep_conv.weight' in sd or 'block1.conv3.expand_conv.weight' in sd)


@register_importer('PFDN', detect=_is_pfdn)
def import_official_pfdn(sd, overrides):
    """icandle/PlainUSR ``2023_PFDN_NTIRE/model_zoo/team08_PFDN.pth`` (raw state dict, deploy
    form: ``convN.rep_conv``), and this package's training-form state dicts (RRRB
    ``expand_conv``/``fea_conv``/``reduce_conv``)."""
    opt = trunk_options(sd, overrides, 'PFDN', 'conv_first', 'tail.0', count_numbered(sd, PFDN.block_prefix, 'PFDN'))
    num_feat, num_block = opt['num_feat'], opt['num_block']
    deploy = 'block1.conv3.expand_conv.weight' not in sd
    partial = sd['block1.conv3.rep_conv.weight' if deploy else 'block1.conv3.expand_conv.weight'].shape[1]
    opt.update(partial_channels=partial, esa_channels=sd['block1.attn.conv1.weight'].shape[0], deploy=deploy)
    notes = ImportNotes(overrides)
    notes.note(f"{'deploy' if deploy else 'training'} form: C {num_feat}, partial {partial}, {num_block} blocks, "
               f"ESA {opt['esa_channels']}, x{opt['upscale']}")
    notes.expansion(opt, 'rep_ratio', sd, 'block1.conv1.expand_conv.weight', num_feat,
                    "rep_ratio: the training-form RRRB expansion is not stored in a deploy checkpoint; using 2 "
                    "(FMEN's; it does not change the deploy network)")
    notes.unstored(opt, 'act_type', 'lrelu', OFFICIAL_LEAKY_RELU)
    return notes.result(sd, opt)
