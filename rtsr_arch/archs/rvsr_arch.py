"""RVSR: Li, Wei, Ge (team XJTU-AIR), "RVSR: Real-Time Super-Resolution with Re-parameterization and
ViT architecture", §3.5 of Conde, Zamfir, Timofte et al., "Real-Time 4K Super-Resolution of
Compressed AVIF Images. AIS 2024 Challenge Survey", CVPRW 2024. Official code:
huai-chang/RVSR@61f0c0a (Apache-2.0)."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS, SqueezeExcite, make_activation
from .official import ImportNotes, OfficialImportError, count_indexed, infer_upscale, register_importer
from .rep import RVSRRepConv

__all__ = ['RVSR', 'RepViTBlock', 'RVSRFFN']


class RVSRFFN(nn.Module):
    """RepViT's channel mixer: ``x + ffn(x)``, ``ffn`` = 1x1 (C -> ratio·C) -> activation -> 1x1
    (ratio·C -> C) (official keys ``ffn.0``, ``ffn.2``)."""

    def __init__(self, num_feat, ratio, act_type):
        super().__init__()
        hidden = num_feat * ratio
        self.ffn = nn.Sequential(nn.Conv2d(num_feat, hidden, 1), make_activation(act_type, hidden),
                                 nn.Conv2d(hidden, num_feat, 1))

    def forward(self, x):
        return self.ffn(x) + x


class RepViTBlock(nn.Module):
    """RepViT block as used by RVSR (Fig. 9a; Wang et al., RepViT, CVPR 2024): token mixer
    (:class:`~rtsr_arch.archs.rep.RVSRRepConv`, no activation) -> squeeze-excite (timm
    ``SqueezeExcite(C, 0.25)``: 8 channels for C = 16) -> FFN with residual. No residual around the
    token mixer other than its own identity branch."""

    def __init__(self, num_feat, ffn_ratio, se_channels, act_type, deploy):
        super().__init__()
        # registration order = the official state-dict order
        self.token_mixer = RVSRRepConv(num_feat, ratio=2, deploy=deploy)
        self.channel_mixer = RVSRFFN(num_feat, ffn_ratio, act_type)
        self.attn = SqueezeExcite(num_feat, rd_channels=se_channels)

    def forward(self, x):
        return self.channel_mixer(self.attn(self.token_mixer(x)))


@ARCH_REGISTRY.register()
class RVSR(SRArch):
    """RVSR (AIS 2024 RTSR report §3.5, Fig. 9): ``h = head(x)`` (3x3 conv) -> ``num_block`` RepViT
    blocks, plus ``h`` -> tail = RepConv -> 1x1 conv to ``num_out_ch·16`` -> PixelShuffle(4), plus the
    bilinear x4 upsample of the input (``align_corners=False``).

    The network computes in [-1, 1], as it was trained (official ``tools/trainer.py``: input
    ``(x - 0.5) / 0.5``, output ``sr / 2 + 0.5``): inputs in [0, 1] are mapped to [-1, 1] inside,
    the bilinear base upsample is taken of the mapped input, and the output is mapped back to
    [0, 1] (unclamped). The official weights load unchanged.

    The squeeze-excite gate averages over the whole image, so tiled inference is not exact
    (``tile_exact = False``, no finite receptive radius).

    Every RepConv (one per block and the tail's) deploys to one 3x3 conv ``rep_conv``; the
    official deploy checkpoint (``RVSR_rep.pth``) has 32,960 parameters.

    Args:
        num_in_ch, num_out_ch: image channels (equal: the input's upsample is added to the output).
        num_feat: feature channels N (16).
        num_block: RepViT blocks (8).
        upscale: 4 only (the official tail hard-codes PixelShuffle(4)).
        act_type: activation inside the FFNs ('gelu').
        ffn_ratio: FFN expansion (2: 16 -> 32 -> 16).
        se_channels: squeeze-excite bottleneck (8, timm's rounding of 16 · 0.25 to a multiple of 8).
        deploy: build the reparameterized network directly.
    """

    paper = ('Li, Wei, Ge (XJTU-AIR), RVSR: Real-Time Super-Resolution with Re-parameterization and ViT '
             'architecture, in Conde, Zamfir, Timofte et al., Real-Time 4K Super-Resolution of Compressed AVIF '
             'Images. AIS 2024 Challenge Survey, CVPRW 2024, §3.5')
    code = 'huai-chang/RVSR@61f0c0a'
    license = 'Apache-2.0'
    value_range = (-1.0, 1.0)
    tile_exact = False

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 16, num_block: Int(0) = 8,
                 upscale: OneOf(4) = 4, act_type: OneOf(*ACTIVATIONS) = 'gelu', ffn_ratio: Int(1) = 2,
                 se_channels: Int(1) = 8, deploy: bool = False):
        super().__init__()
        if num_out_ch != num_in_ch:
            raise ValueError(f'RVSR: num_out_ch={num_out_ch!r} must equal num_in_ch={num_in_ch!r} (the bilinear '
                             f'upsample of the input is added to the output)')
        self.upscale = upscale
        self.receptive_radius = None
        self.deploy = deploy
        self.head = nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 3, padding=1))
        self.body = nn.Sequential(*[RepViTBlock(num_feat, ffn_ratio, se_channels, act_type, deploy)
                                    for _ in range(num_block)])
        self.tail = nn.Sequential(RVSRRepConv(num_feat, ratio=2, deploy=deploy),
                                  nn.Conv2d(num_feat, num_out_ch * upscale ** 2, 1), nn.PixelShuffle(upscale))

    def forward(self, x):
        x = (x - 0.5) / 0.5  # [0, 1] -> [-1, 1], as the official training and test code
        head = self.head(x)
        out = self.tail(self.body(head) + head)
        out = out + F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)
        return out / 2 + 0.5


# ----------------------------------------------------------------------------- official checkpoints

def _rvsr_options(sd):
    """The ``network_g`` keywords an RVSR state dict determines (no ``act_type``), without
    checking that every key is there."""
    num_feat, num_in_ch = (int(n) for n in sd['head.0.weight'].shape[:2])
    opt = dict(type='RVSR', num_in_ch=num_in_ch, num_out_ch=num_in_ch, num_feat=num_feat,
               num_block=count_indexed(sd, 'body'),
               upscale=infer_upscale(sd['tail.1.weight'].shape[0], num_in_ch),
               deploy='tail.0.rep_conv.weight' in sd)
    if opt['num_block']:
        hidden, se = sd['body.0.channel_mixer.ffn.0.weight'].shape[0], sd['body.0.attn.fc1.weight'].shape[0]
        if hidden % num_feat:
            raise OfficialImportError(f'FFN width {hidden} is not a multiple of num_feat={num_feat}')
        opt.update(ffn_ratio=hidden // num_feat, se_channels=int(se))
    return opt


def _rvsr_layout_matches(sd, opt):
    """Whether ``sd`` has exactly the keys and shapes of ``RVSR(**opt)`` (built on the meta device)."""
    kwargs = {k: v for k, v in opt.items() if k != 'type'}
    with torch.device('meta'):
        net = RVSR(**kwargs)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    return expected == {k: tuple(v.shape) for k, v in sd.items()}


def _is_rvsr(sd):
    if not ('head.0.weight' in sd and 'tail.1.weight' in sd and
            ('tail.0.rep_conv.weight' in sd or 'tail.0.res_conv3x3.weight' in sd)):
        return False
    opt = _rvsr_options(sd)
    if opt['upscale'] != 4:
        return False
    opt['act_type'] = 'prelu' if 'body.0.channel_mixer.ffn.1.weight' in sd else 'gelu'
    return _rvsr_layout_matches(sd, opt)


@register_importer('RVSR', detect=_is_rvsr)
def import_official_rvsr(sd, overrides):
    """huai-chang/RVSR checkpoints, detected by their exact key set and shapes:
    ``pretrianed/RVSR_rep.pth`` (raw deploy state dict, ``rep_conv`` layers, 32,960 parameters) and
    ``pretrianed/pretrained.ckpt`` (PyTorch-Lightning checkpoint: ``state_dict`` with keys prefixed
    ``network.``, training form; the loader reads it with the restricted unpickler of
    :func:`rtsr_arch.utils.checkpoint.load_checkpoint`). Widths, depth, FFN ratio, squeeze-excite
    width and form come from the shapes; the FFN activation is not stored (GELU as the official
    code, listed as assumed) except a PReLU's slopes."""
    opt = _rvsr_options(sd)
    notes = ImportNotes(overrides)
    notes.activation(opt, 'body.0.channel_mixer.ffn.1.weight' in sd, 'gelu', "the official 'gelu' in the FFNs")
    if not opt['num_block']:
        for key, default in (('ffn_ratio', 2), ('se_channels', 8)):
            notes.assume(opt, key, default, f'{key}: no RepViT block in the checkpoint; using {default}')
    return notes.result(dict(sd), opt)
