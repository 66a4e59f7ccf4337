"""MFA: team NJUST_E (Zheng, Sun, Pan, Dong, Tang), "A Lightweight Multi-scale Feature Attention
for Image Super-Resolution", in Li et al., "NTIRE 2023 Challenge on Efficient Super-Resolution:
Methods and Results", CVPRW 2023, §4.5, Fig. 10 and Table 1 (row NJUST_E: 0.099 M parameters,
6.02 G FLOPs, 242.96 M activations, 66 convs; 2nd in the parameters/FLOPs sub-track). A SAFMN-style
network (Sun et al., ICCV 2023). Official code: Zheng-MJ/NTIRE2023-ESR-MFA@845b73a
(``models/team16_MFA.py``, ``model_zoo/team16_mfa.pth``; the 2025 C60 models
``models/mfa_arch.py``, ``checkpoints/MFA_X{2,3,4}.pth``), MIT."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from .contract import Float, Int, OneOf, SRArch
from .layers import (PARAMETER_FREE_ACTIVATIONS, LayerNorm2d, SAFMNSkeleton, adaptive_max_pool2d_by, check_ffn_scale,
                     ffn_scale_for, make_activation, resize_nearest)
from .official import ImportNotes, OfficialImportError, count_indexed, register_importer, top_level_names, trunk_options

__all__ = ['MFA', 'SAFM', 'CCM', 'SAFMB', 'SameConv2d', 'MFA_ACTIVATIONS', 'MFA_CCM_KERNELS']

# SAFM applies one activation module to maps of num_feat, num_feat // 2 and num_feat // 4 channels,
# so only parameter-free activations fit (no PReLU)
MFA_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS
# short side k of CCM's depthwise (k, 5) and (5, k) kernels: 2 in the NTIRE 2023 entry, 3 in the 2025 C60 models
MFA_CCM_KERNELS = (2, 3)
LONG_SIDE = 5


class SAFM(nn.Module):
    """Multi-scale feature attention (the official ``SAFM``): a depthwise 3x3 conv + act; the
    channels are chunked (the first chunk gets the odd channel: 17/16 for 33) into a full-resolution
    part and a part pooled to ``(H // 8, W // 8)`` -> depthwise 3x3 + act, chunked again into one
    half kept at 1/8 and one half pooled further to ``(H // 16, W // 16)`` -> depthwise 3x3 + act;
    both pooled parts are resized back to H x W (nearest); concat -> 1x1 ``ConvCat`` -> act,
    multiplied with the SAFM input."""

    def __init__(self, dim, act_type='gelu'):
        super().__init__()
        self.dwConv1 = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim))
        self.dwConv2 = nn.Sequential(nn.Conv2d(dim // 2, dim // 2, 3, 1, 1, groups=dim // 2))
        self.dwConv3 = nn.Sequential(nn.Conv2d(dim // 4, dim // 4, 3, 1, 1, groups=dim // 4))
        self.ConvCat = nn.Conv2d(dim, dim, 1)
        self.Act = make_activation(act_type, dim)

    def forward(self, x):
        h, w = x.shape[-2:]
        x1, x2 = self.Act(self.dwConv1(x)).chunk(2, dim=1)
        x2 = adaptive_max_pool2d_by(x2, 8)  # (H // 8, W // 8)
        x2, x3 = self.Act(self.dwConv2(x2)).chunk(2, dim=1)
        x3 = self.Act(self.dwConv3(adaptive_max_pool2d_by(x3, 2)))  # (H // 8) // 2 = H // 16
        out = torch.cat([x1, resize_nearest(x2, (h, w)), resize_nearest(x3, (h, w))], dim=1)
        return self.Act(self.ConvCat(out)) * x


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d(..., padding='same')`` (stride 1) computed as ATen does it, without its warning
    for even kernels: per axis the total padding ``k - 1`` is split ``(k - 1) // 2`` before and the
    rest after (k = 2: 0 before, 1 after; k = 5: 2 and 2); the difference is zero-padded
    explicitly (``F.pad``) and the symmetric part is the conv's own ``padding``, exactly ATen's
    ``conv_padding_same``. Exported graphs hold a ``Pad`` and a ``Conv`` with fixed pads, so any
    height and width work. A subclass of ``nn.Conv2d``: same keys, counted as a conv."""

    def __init__(self, in_channels, out_channels, kernel_size, groups=1, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, groups=groups, bias=bias)
        before = [(k - 1) // 2 for k in self.kernel_size]
        after = [k - 1 - b for k, b in zip(self.kernel_size, before)]
        self.padding = tuple(before)
        # F.pad order: last axis first, (left, right, top, bottom); only the asymmetric remainder
        self.extra_padding = (0, after[1] - before[1], 0, after[0] - before[0])

    def forward(self, x):
        if any(self.extra_padding):
            x = F.pad(x, self.extra_padding)
        return F.conv2d(x, self.weight, self.bias, 1, self.padding, 1, self.groups)


class CCM(nn.Module):
    """The official ``CCM`` (the report's S-GDFN): 1x1 ``Conv1`` (dim -> 2 * hidden) -> depthwise
    (k, 5) then (5, k) convs with ``padding='same'`` (``Conv2``; for the even k = 2 PyTorch pads 0
    before and 1 after: :class:`SameConv2d`) -> chunk -> x1 * x2 (no activation: the official
    module builds a GELU it never calls) -> 1x1 ``Conv3`` (hidden -> dim); hidden =
    ``int(dim * ffn_scale)``."""

    def __init__(self, dim, ffn_scale, kernel=2):
        super().__init__()
        hidden = int(dim * ffn_scale)
        self.Conv1 = nn.Conv2d(dim, 2 * hidden, 1, 1, 0)
        self.Conv2 = nn.Sequential(
            SameConv2d(2 * hidden, 2 * hidden, (kernel, LONG_SIDE), groups=2 * hidden),
            SameConv2d(2 * hidden, 2 * hidden, (LONG_SIDE, kernel), groups=2 * hidden))
        self.Conv3 = nn.Conv2d(hidden, dim, 1, 1, 0)

    def forward(self, x):
        x1, x2 = self.Conv2(self.Conv1(x)).chunk(2, dim=1)
        return self.Conv3(x1 * x2)


class SAFMB(nn.Module):
    """One block: x + SAFM(LN(x)), then x + CCM(LN(x)); LN = channels-first LayerNorm, eps 1e-6."""

    def __init__(self, dim, ffn_scale, kernel=2, act_type='gelu'):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.safm = SAFM(dim, act_type)
        self.ccm = CCM(dim, ffn_scale, kernel)

    def forward(self, x):
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


@ARCH_REGISTRY.register()
class MFA(SAFMNSkeleton, SRArch):
    """MFA (NTIRE 2023 ESR report §4.5, Fig. 10; official ``MFA(dim=33, n_blocks=8,
    ffn_scale=1.8, upscaling_factor=4)``): 3x3 ``to_feat`` -> ``num_block`` x SAFMB (LayerNorm ->
    multi-scale feature attention ``safm``, LayerNorm -> gated depthwise FFN ``ccm``, each with a
    residual) -> + ``to_feat`` output -> 3x3 conv -> PixelShuffle(upscale). Data range [0, 1], no
    clamp.

    The NTIRE 2023 entry (``team16_mfa.pth``) is C33, 8 blocks, FFN 1.8, CCM kernels (2, 5)/(5, 2),
    x4: 98,524 parameters (Table 1: 0.099 M); the report's text says 36 intermediate channels, the
    released code and weights have 33. ``preset='c60'`` is the 2025 update of the repository
    (C60, FFN 2.0, CCM kernels (3, 5)/(5, 3); ``checkpoints/MFA_X{2,3,4}.pth``). Nothing is
    reparameterizable: ``deploy`` is accepted and the network is its own deploy form.

    SAFM pools to ``(H // 8, W // 8)`` and ``(H // 16, W // 16)`` and resizes back, so every output
    pixel depends on the whole input size: ``tile_exact = False``, ``receptive_radius = None``,
    ``min_input_size = 16`` (at least one H // 16 bin). Pooling and nearest resizing are the
    PyTorch ops in eager mode and bit-identical traceable forms while a graph is captured
    (:func:`rtsr_arch.archs.layers.adaptive_max_pool2d_by`, :func:`rtsr_arch.archs.layers.resize_nearest`),
    so exported ONNX graphs are exact at every height and width (onnxruntime's own nearest
    ``Resize`` picks other source rows at some sizes, e.g. H = 114).

    Args:
        num_in_ch, num_out_ch: image channels (3 in the official code).
        num_feat: feature channels (official ``dim``; >= 4, SAFM quarters it; odd widths split as
            the official ``chunk``: 33 -> 17 + 16 -> 8 + 8).
        num_block: SAFMB blocks (official ``n_blocks``).
        ffn_scale: CCM expansion; the gate width is ``int(num_feat * ffn_scale)`` (59 for 33 x 1.8).
        ccm_kernel: short side k of CCM's depthwise (k, 5) / (5, k) kernels (2: NTIRE 2023; 3: C60).
        upscale: 2, 3 or 4 (the challenge: 4).
        act_type: SAFM's activation (GELU in the official code); parameter-free ones only, since
            one module serves maps of several widths.
        preset: ``'ntire23_esr'`` (the defaults) or ``'c60'`` (give ``upscale``).
        deploy: accepted for the contract; the network has a single form.
    """

    paper = ('Li et al., NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, '
             'Sec. 4.5 (team NJUST_E: MFA)')
    code = 'Zheng-MJ/NTIRE2023-ESR-MFA@845b73a'
    license = 'MIT'
    min_input_size = 16
    tile_exact = False
    preset_key = 'preset'
    presets = {
        'ntire23_esr': dict(num_feat=33, num_block=8, ffn_scale=1.8, ccm_kernel=2, upscale=4),
        'c60': dict(num_feat=60, num_block=8, ffn_scale=2.0, ccm_kernel=3),
    }

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(4) = 33, num_block: Int(1) = 8,
                 ffn_scale: Float(0) = 1.8, ccm_kernel: OneOf(*MFA_CCM_KERNELS) = 2, upscale: OneOf(2, 3, 4) = 4,
                 act_type: OneOf(*MFA_ACTIVATIONS) = 'gelu', preset: str = None, deploy: bool = False):
        super().__init__()
        check_ffn_scale('MFA', num_feat, ffn_scale)
        self.upscale = upscale
        self.receptive_radius = None  # global: the pooling grids and the resizes follow the input size
        self.deploy = deploy
        self.add_skeleton(num_in_ch, num_out_ch, num_feat, upscale,
                          [SAFMB(num_feat, ffn_scale, ccm_kernel, act_type) for _ in range(num_block)])


def _is_mfa(sd):
    return (top_level_names(sd) == {'to_feat', 'feats', 'to_img'} and 'feats.0.norm1.weight' in sd
            and 'feats.0.safm.dwConv3.0.weight' in sd and 'feats.0.ccm.Conv2.1.weight' in sd)


@register_importer('MFA', detect=_is_mfa, param_keys=('params', 'params_ema'))
def import_official_mfa(sd, overrides):
    """Zheng-MJ/NTIRE2023-ESR-MFA ``model_zoo/team16_mfa.pth`` (and the C60
    ``checkpoints/MFA_X{2,3,4}.pth``): BasicSR dicts ``{params, params_ema}`` whose two weight
    sets differ. The official ``test_demo.py`` loads ``params`` (``torch.load(path)['params']``,
    strict), which is preferred here; ``rtsr_arch.load_model(path, param_key='params_ema')`` takes
    the EMA weights. Keys without prefix. Width, blocks, CCM width and kernel and the scale come
    from the shapes (``num_out_ch`` is taken equal to ``num_in_ch``; ``ffn_scale`` is the shortest
    decimal giving the CCM width, 1.8 for 33 -> 59); the activation is assumed."""
    hidden = sd['feats.0.ccm.Conv3.weight'].shape[1]
    kernel = tuple(sd['feats.0.ccm.Conv2.0.weight'].shape[2:])
    if kernel not in {(k, LONG_SIDE) for k in MFA_CCM_KERNELS}:
        raise OfficialImportError(f"MFA: CCM kernel {kernel} is not one of "
                                  f"{', '.join(str((k, LONG_SIDE)) for k in MFA_CCM_KERNELS)}")
    opt = trunk_options(sd, overrides, 'MFA', 'to_feat', 'to_img.0', count_indexed(sd, 'feats'),
                        ffn_scale=ffn_scale_for(sd['to_feat.weight'].shape[0], hidden), ccm_kernel=kernel[0])
    opt.update(act_type='gelu', deploy=False)
    notes = ImportNotes(overrides, assumed=['deploy'])
    notes.single_form('MFA')
    notes.official(opt, 'act_type', 'gelu', 'MFA')
    notes.params_preferred('test_demo.py')
    return notes.result(sd, opt)
