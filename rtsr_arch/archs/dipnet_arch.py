"""DIPNet: Yu, Li, Li, Jiang, Wu, Fan, Liu, "DIPNet: Efficiency Distillation and Iterative Pruning
for Image Super-Resolution", CVPR Workshops 2023 (team MegSR, NTIRE 2023 Efficient SR challenge,
first by runtime; NTIRE 2023 ESR report §4.1, Fig. 1). Official code and weights:
xiumu00/DIPNet@69f43a7 ``models/DIPNet.py``, ``model_zoo/DIPNet.pth`` (MIT). The official
repository publishes only the deploy (pruned, reparameterized) network; the training form here is
built from the report's description (see :class:`DIPNet`)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import (ESA, ESA_MIN_INPUT_SIZE, PARAMETER_FREE_ACTIVATIONS, LocalFeatureBlock, ResidualTrunk,
                     conv_pixel_shuffle, make_activation)
from .official import (OFFICIAL_LEAKY_RELU, ImportNotes, count_numbered, numbered_layout, register_importer,
                       trunk_options)
from .rep import ReparamBlock, RRRBConv, reparameterize_children

__all__ = ['DIPNet', 'RRFB', 'DIPNET_ACTIVATIONS']

# one activation module serves mid and num_feat channels, as in the official block: no PReLU
DIPNET_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS
REP_CONVS = ('c1_r', 'c2_r', 'c3_r')


class RRFB(LocalFeatureBlock):
    """DIPNet's reparameterized residual feature block (report Fig. 1b; official ``RRFB``), RLFN's
    RLFB with bias-free convs: ``r = act(c3_r(act(c2_r(act(c1_r(x)))))) + x`` (3x3 convs
    C -> mid -> mid -> C), then ``esa(c5(r))`` (c5 1x1 C -> C without bias, the light ESA with
    biases). One activation module (``act``, LeakyReLU 0.05) serves the three calls, as the official
    block, so the NTIRE ESR counter counts each call.

    Training form: ``c1_r``, ``c2_r``, ``c3_r`` are :class:`~rtsr_arch.archs.rep.RRRBConv` blocks
    (FMEN's RRRB, generalised to C != mid; bias-free with ``bias=False``). :meth:`reparameterize`
    fuses each into its 3x3 conv and puts that conv back under the official name (``c1_r.weight``:
    the official keys have no ``rep_conv`` level). With ``deploy=True`` the convs are built plain.
    """

    def __init__(self, num_feat, mid_channels, esa_channels=16, act_type='lrelu', ratio=2, bias=False, deploy=False):
        super().__init__()
        self.deploy = deploy

        def conv(cin, cout):
            return nn.Conv2d(cin, cout, 3, padding=1, bias=bias) if deploy else RRRBConv(cin, cout, ratio=ratio,
                                                                                          bias=bias)

        self.add_convs(num_feat, mid_channels, conv)
        self.c5 = nn.Conv2d(num_feat, num_feat, 1, bias=False)
        self.esa = ESA(num_feat, esa_channels, variant='light')
        self.act = make_activation(act_type, num_feat)

    def reparameterize(self):
        """Fuse the three RRRBConvs (block library, float64) and store each fused conv under the
        block's official name; idempotent; returns the block."""
        reparameterize_children(self)
        for name in REP_CONVS:
            block = getattr(self, name)
            if isinstance(block, ReparamBlock):  # its act is 'linear' (Identity): the conv alone is exact
                setattr(self, name, getattr(block, block.deploy_key))
        self.deploy = True
        return self


@ARCH_REGISTRY.register()
class DIPNet(ResidualTrunk, SRArch):
    """DIPNet (NTIRE 2023 ESR report §4.1, Fig. 1; official ``models/DIPNet.py``): the RLFN_Prune
    topology with every trunk conv bias-free. ``conv_1`` (3x3, 3 -> C) -> ``block_1..block_N``
    :class:`RRFB` (C 44, mid 38, ESA 16) -> ``conv_2`` (3x3 C -> C) + conv_1's output ->
    ``upsampler`` (3x3 conv C -> 3·s², PixelShuffle(s)); no bias outside the ESAs. Computes on
    [0, 1] images (the official ``test_demo.py`` data range 1.0).

    The released network (243,252 parameters) is the end of MegSR's pipeline: a student
    distilled from a HAT teacher with "enhanced HR" targets, fine-tuned with L2 on growing patches,
    reparameterized, then pruned three times (L2 filter pruning, 5% each). The training-time RRFB is
    described ("the RLFB expanded to the RRFB structure ... restored to the RLFB structure by
    reparameterization") but not published; here each of the block's three 3x3 convs trains as an
    :class:`~rtsr_arch.archs.rep.RRRBConv` (1x1 expand by ``rep_ratio`` -> 3x3 with an inner
    identity -> 1x1 reduce, + identity when widths match; bias-free like the deploy convs), and
    :func:`rtsr_arch.reparameterize` fuses the network exactly into the official deploy layout
    (``block_i.c1_r.weight``, no ``rep_conv`` level). ``conv_1``, ``conv_2``, ``upsampler`` and
    ``c5`` are plain in both forms (the report expands only the blocks). Pruning is not part of
    this package: train at the deploy widths, or set wider ``num_feat`` / ``mid_channels``.

    Every block ends with the light ESA, whose coarse map is bilinearly resized to the image size:
    inputs must be at least 15x15, and tiled inference is not exact (``tile_exact = False``).

    Args:
        num_in_ch, num_out_ch: image channels.
        num_feat: feature channels C (44).
        num_block: RRFBs (4).
        upscale: 2, 3 or 4 (official weights: x4).
        act_type: activation inside the blocks (LeakyReLU, slope 0.05; no PReLU: one module serves
            mid and C channels).
        mid_channels: width of the blocks' inner convs (38).
        esa_channels: ESA width (16).
        rep_ratio: expansion of the training-form RRRBConvs (2, FMEN's RRRB; not stored in a
            deploy checkpoint).
        block_bias: biases on the blocks' three 3x3 convs, in both forms (False: the released
            DIPNet, bias-free everywhere outside the ESAs; True: RLFN's biased block convs).
        deploy: build the reparameterized network directly.
    """

    paper = ('Yu et al., DIPNet: Efficiency Distillation and Iterative Pruning for Image Super-Resolution, '
             'CVPR Workshops 2023 (NTIRE 2023 ESR report, Li et al., §4.1)')
    code = 'xiumu00/DIPNet@69f43a7'
    license = 'MIT'
    min_input_size = ESA_MIN_INPUT_SIZE
    fp16_safe = True
    tile_exact = False

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 44, num_block: Int(1) = 4,
                 upscale: OneOf(2, 3, 4) = 4, act_type: OneOf(*DIPNET_ACTIVATIONS) = 'lrelu',
                 mid_channels: Int(1) = 38, esa_channels: Int(1) = 16, rep_ratio: Int(1) = 2,
                 block_bias: bool = False, deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        self.conv_1 = nn.Conv2d(num_in_ch, num_feat, 3, padding=1, bias=False)
        self.add_blocks([RRFB(num_feat, mid_channels, esa_channels, act_type, rep_ratio, block_bias, deploy)
                         for _ in range(num_block)])
        self.conv_2 = nn.Conv2d(num_feat, num_feat, 3, padding=1, bias=False)
        self.upsampler = conv_pixel_shuffle(num_feat, num_out_ch, upscale, bias=False)


def _is_dipnet(sd):
    # RLFN's top-level names and light ESA, but a bias-free conv_1 (RLFN's has a bias), and block
    # convs either plain (deploy: ``c1_r.weight``) or RRRBConvs (training: ``c1_r.expand_conv``);
    # DLFAN's ``c1_r.dbb_reparam`` is neither
    return numbered_layout(sd, DIPNet.trunk_names, DIPNet.block_prefix) \
        and 'conv_1.weight' in sd and 'conv_1.bias' not in sd and 'upsampler.0.bias' not in sd \
        and 'block_1.esa.conv3.weight' in sd and 'block_1.esa.conv_max.weight' not in sd \
        and ('block_1.c1_r.weight' in sd or 'block_1.c1_r.expand_conv.weight' in sd)


@register_importer('DIPNet', detect=_is_dipnet)
def import_official_dipnet(sd, overrides):
    """xiumu00/DIPNet ``model_zoo/DIPNet.pth`` (raw state dict, deploy form; byte-identical to the
    NTIRE 2024 ESR ``team45_VRTDIP.pth``), and this package's training-form state dicts."""
    opt = trunk_options(sd, overrides, 'DIPNet', 'conv_1', 'upsampler.0',
                        count_numbered(sd, DIPNet.block_prefix, 'DIPNet'))
    num_feat, num_block = opt['num_feat'], opt['num_block']
    deploy = 'block_1.c1_r.expand_conv.weight' not in sd
    if deploy:
        mid = sd['block_1.c1_r.weight'].shape[0]
        block_bias = 'block_1.c1_r.bias' in sd
    else:
        mid = sd['block_1.c1_r.reduce_conv.weight'].shape[0]
        block_bias = 'block_1.c1_r.expand_conv.bias' in sd
    opt.update(mid_channels=mid, esa_channels=sd['block_1.esa.conv1.weight'].shape[0], block_bias=block_bias,
               deploy=deploy)
    notes = ImportNotes(overrides)
    notes.note(f'{"deploy" if deploy else "training"} form: C {num_feat}, mid {mid}, {num_block} blocks, '
               f"ESA {opt['esa_channels']}, x{opt['upscale']}{', biased block convs' if block_bias else ''}")
    notes.expansion(opt, 'rep_ratio', sd, 'block_1.c1_r.expand_conv.weight', num_feat,
                    'rep_ratio: the training-form expansion is not stored in a deploy checkpoint; using 2 (it does '
                    'not change the deploy network)')
    notes.unstored(opt, 'act_type', 'lrelu', OFFICIAL_LEAKY_RELU)
    return notes.result(sd, opt)
