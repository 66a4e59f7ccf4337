"""SAFMN as entered in the NTIRE 2023 Efficient SR challenge: team NJUST_R (Sun, Yang, Pan, Dong,
Tang), "Spatially-Adaptive Feature Modulation for Efficient Image Super-Resolution", in Li et al.,
"NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results", CVPRW 2023, §4.17,
Fig. 27 and Table 1 (row NJUST_R: 0.237 M parameters, 15.40 G FLOPs, 86.11 M activations, 58
convs); the network of Sun, Dong, Tang, Pan, "Spatially-Adaptive Feature Modulation for Efficient
Image Super-Resolution", ICCV 2023, modified for speed (§4.17: no LayerNorm in the blocks, one
Global Response Normalization after the first conv, bias-free block convs, RepVGG-reparameterized
first and last convs, the skip connection moved from feature to image space).
Official code: sunny2109/SAFMN@68c2182, ``NTIRE2023_ESR/models/team15_SAFMN.py`` and
``model_zoo/team15_SAFMN.pth`` (the training-side copy ``basicsr/archs/safmn_ntire_arch.py``);
repository licence Apache-2.0, the ``NTIRE2023_ESR/`` folder carries the organizers' MIT licence."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from .contract import Float, Int, OneOf, SRArch
from .layers import (NTIRE23_SAFM_LEVELS, NTIRE23_SAFM_POOL_SHIFT, PARAMETER_FREE_ACTIVATIONS, SAFM, check_ffn_scale,
                     check_safm_width, conv_channel_mixer, ffn_scale_for, safm_min_input_size)
from .official import ImportNotes, OfficialImportError, count_indexed, infer_upscale, register_importer, top_level_names
from .rep import ReparamBlock, RepVGGBlock

__all__ = ['SAFMN', 'GRN', 'CCM', 'AttBlock', 'SAFMN_ACTIVATIONS']

# parameter-free activations (GELU in the official code); one keyword serves SAFM and CCM
SAFMN_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2, Woo et al., CVPR 2023, Eq. 1-3), as the official
    ``GRN``: ``G_c = ||x_c||_2`` over the whole (H, W) map, ``N_c = G_c / (mean_c G + 1e-6)``,
    ``y = gamma * (x * N) + beta + x``; ``gamma``, ``beta`` of shape (1, C, 1, 1), zero at
    initialization (the identity). The statistics are those of the whole image."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.eps = eps

    def forward(self, x):
        gx = torch.linalg.vector_norm(x, 2, dim=(2, 3), keepdim=True)
        nx = gx / (gx.mean(dim=1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class CCM(nn.Module):
    """Convolutional channel mixer (official ``CCM``): bias-free 3x3 conv (dim -> int(dim *
    ffn_scale)) -> activation -> bias-free 1x1 conv back; keys ``ccm.0`` / ``ccm.2``."""

    def __init__(self, dim, ffn_scale=2.0, act_type='gelu'):
        super().__init__()
        self.ccm = conv_channel_mixer(dim, ffn_scale, act_type)

    def forward(self, x):
        return self.ccm(x)


class AttBlock(nn.Module):
    """x = SAFM(x) + x; x = CCM(x) + x, without normalization; SAFM bias-free, pooling to 1/4,
    1/8, 1/16 (the official NTIRE 2023 ``AttBlock``)."""

    def __init__(self, dim, ffn_scale=2.0, act_type='gelu'):
        super().__init__()
        self.safm = SAFM(dim, NTIRE23_SAFM_LEVELS, pool_shift=NTIRE23_SAFM_POOL_SHIFT, bias=False, act_type=act_type)
        self.ccm = CCM(dim, ffn_scale, act_type)

    def forward(self, x):
        x = self.safm(x) + x
        return self.ccm(x) + x


@ARCH_REGISTRY.register()
class SAFMN(SRArch):
    """SAFMN, NTIRE 2023 ESR entry of team NJUST_R (report §4.17, Fig. 27; official
    ``SAFMN(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=4)``)::

        ident = bilinear x upscale of the input (align_corners=False)
        x = GRN(to_feat(x))                   3x3 conv 3 -> C with bias, Global Response Normalization
        x = num_block x AttBlock(x)           SAFM + residual, CCM + residual, all bias-free
        y = to_img(x) + ident                 3x3 conv C -> 3 * s**2 with bias, PixelShuffle(s)

    There is no feature-space global skip. The entry (``team15_SAFMN.pth``) is C36, 8 blocks, FFN
    2.0, x4: 237,000 parameters, 15.40 G FLOPs, 86.11 M activations, 58 convs at 256x256 (Table 1,
    all four equal).

    Reparameterization (§4.17: "We equip the first and last convolution with reparametrization
    technique [RepVGG]"; no further detail is published): the training form (``deploy=False``)
    builds ``to_feat`` and ``to_img.0`` as :class:`~rtsr_arch.archs.rep.RepVGGBlock` with a 3x3 and a
    1x1 branch (no identity branch: the widths differ), both plain biased convs
    (``use_bn=False``: no BatchNorm in an SR network, whose statistics BasicSR's parameter-only EMA
    would also leave stale), which :meth:`reparameterize` fuses and stores under the official
    plain-conv keys (``to_feat.weight``, ``to_img.0.weight``). ``deploy=True`` is the released
    network, which is also the plain network the official training copy
    (``basicsr/archs/safmn_ntire_arch.py``) trains.

    Global statistics: GRN normalizes by L2 norms over the whole image, and SAFM pools every map to
    ``(H // 4, W // 4)``, ``(H // 8, W // 8)`` and ``(H // 16, W // 16)`` and resizes it back, so
    every output pixel depends on the whole input: ``tile_exact = False``, ``receptive_radius =
    None``, ``min_input_size = 16`` (at least one H // 16 bin). Pooling and nearest resizing are
    exactly traceable (:class:`~rtsr_arch.archs.layers.SAFM`), so ONNX graphs are correct at every
    size, including sizes not divisible by 16.

    Args:
        num_in_ch, num_out_ch: image channels; equal (the output adds the bilinear upscaled input).
        num_feat: feature channels (official ``dim``), a multiple of 4 (SAFM's four levels).
        num_block: AttBlocks (official ``n_blocks``).
        ffn_scale: CCM expansion; hidden width ``int(num_feat * ffn_scale)``.
        upscale: 2, 3 or 4 (the challenge: 4).
        act_type: the activation of SAFM and CCM (GELU in the official code).
        preset: ``'ntire23_esr'``, the NTIRE 2023 entry (= the defaults).
        deploy: build the released plain head/tail convs instead of the RepVGG training form.
    """

    paper = ('Li et al., NTIRE 2023 Challenge on Efficient Super-Resolution: Methods and Results, CVPRW 2023, '
             'Sec. 4.17 (team NJUST_R: SAFMN, Sun et al., ICCV 2023)')
    code = 'sunny2109/SAFMN@68c2182'
    license = 'Apache-2.0 (NTIRE2023_ESR/ folder: MIT)'
    min_input_size = safm_min_input_size(NTIRE23_SAFM_LEVELS, NTIRE23_SAFM_POOL_SHIFT)  # 16
    tile_exact = False
    preset_key = 'preset'
    presets = {'ntire23_esr': dict(num_feat=36, num_block=8, ffn_scale=2.0, upscale=4)}

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(NTIRE23_SAFM_LEVELS) = 36,
                 num_block: Int(1) = 8, ffn_scale: Float(0) = 2.0, upscale: OneOf(2, 3, 4) = 4,
                 act_type: OneOf(*SAFMN_ACTIVATIONS) = 'gelu', preset: str = None, deploy: bool = False):
        super().__init__()
        check_safm_width('SAFMN', num_feat, NTIRE23_SAFM_LEVELS)
        check_ffn_scale('SAFMN', num_feat, ffn_scale)
        if num_out_ch != num_in_ch:
            raise ValueError(f'SAFMN: num_out_ch={num_out_ch!r}: must equal num_in_ch={num_in_ch!r} (the output '
                             f'adds the bilinearly upscaled input)')
        self.upscale = upscale
        self.receptive_radius = None  # global: GRN statistics, pooling grids and resizes follow the input size
        self.deploy = deploy
        out = num_out_ch * upscale ** 2
        self.norm = GRN(num_feat)
        self.to_feat = self._head_tail(num_in_ch, num_feat, deploy)
        self.feats = nn.Sequential(*[AttBlock(num_feat, ffn_scale, act_type) for _ in range(num_block)])
        self.to_img = nn.Sequential(self._head_tail(num_feat, out, deploy), nn.PixelShuffle(upscale))

    @staticmethod
    def _head_tail(cin, cout, deploy):
        if deploy:
            return nn.Conv2d(cin, cout, 3, 1, 1)
        # RepVGG's 3x3 and 1x1 branches as plain biased convs (no identity: cin != cout)
        return RepVGGBlock(cin, cout, act_type='linear', use_bn=False)

    def forward(self, x):
        ident = F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)
        x = self.norm(self.to_feat(x))
        return self.to_img(self.feats(x)) + ident

    def reparameterize(self):
        """Fuse the RepVGG head and tail (block library, float64) and store each fused conv under
        the official plain-conv key; idempotent; returns the network."""
        super().reparameterize()
        if isinstance(self.to_feat, ReparamBlock):  # act 'linear': the conv alone is exact
            self.to_feat = getattr(self.to_feat, self.to_feat.deploy_key)
        if isinstance(self.to_img[0], ReparamBlock):
            self.to_img[0] = getattr(self.to_img[0], self.to_img[0].deploy_key)
        return self


def _is_safmn(sd):
    return (top_level_names(sd) == {'norm', 'to_feat', 'feats', 'to_img'} and 'norm.gamma' in sd
            and 'feats.0.safm.mfr.0.weight' in sd and 'feats.0.ccm.ccm.0.weight' in sd)


def _head_tail_form(sd, name):
    """'deploy' for a plain conv (``name.weight``), 'train' for a RepVGG block."""
    if f'{name}.weight' in sd:
        return 'deploy'
    if f'{name}.rbr_dense.conv.weight' in sd:
        return 'train'
    raise OfficialImportError(f"SAFMN: '{name}' is neither a plain conv nor a RepVGG block")


@register_importer('SAFMN', detect=_is_safmn, param_keys=('params', 'params_ema'))
def import_official_safmn(sd, overrides):
    """sunny2109/SAFMN ``NTIRE2023_ESR/model_zoo/team15_SAFMN.pth``: BasicSR dict ``{params}``
    (the official test_demo.py loads ``params``, strict), keys without prefix: ``norm`` (GRN),
    plain ``to_feat`` / ``to_img.0`` convs with bias (the deploy form), bias-free blocks. This
    package's training form (RepVGG head and tail) is read too. Width, blocks, CCM width, scale and
    form come from the shapes (``num_out_ch`` equals ``num_in_ch``); the activation is assumed."""
    forms = {_head_tail_form(sd, 'to_feat'), _head_tail_form(sd, 'to_img.0')}
    if len(forms) != 1:
        raise OfficialImportError('SAFMN: to_feat and to_img.0 are not in the same form (one plain, one RepVGG)')
    deploy = forms == {'deploy'}
    head = sd['to_feat.weight'] if deploy else sd['to_feat.rbr_dense.conv.weight']
    tail = sd['to_img.0.weight'] if deploy else sd['to_img.0.rbr_dense.conv.weight']
    num_feat, num_in_ch = head.shape[:2]
    hidden = sd['feats.0.ccm.ccm.0.weight'].shape[0]
    opt = dict(type='SAFMN', num_in_ch=num_in_ch, num_out_ch=num_in_ch, num_feat=num_feat,
               num_block=count_indexed(sd, 'feats'), ffn_scale=ffn_scale_for(num_feat, hidden),
               upscale=infer_upscale(tail.shape[0], num_in_ch), act_type='gelu', deploy=deploy)
    notes = ImportNotes(overrides)
    notes.official(opt, 'act_type', 'gelu', 'SAFMN')
    if deploy:
        notes.note('form: plain to_feat / to_img convs, the released deploy form (deploy=True)')
    notes.note("weights: the official test_demo.py loads 'params'; a {params, params_ema} checkpoint's "
               "EMA weights are selected with param_key='params_ema'")
    return notes.result(sd, opt)
