"""RepConvFormer (CFSR), the NTIRE 2023 ESR entry of team AIIA-SR (NTIRE 2023 Efficient SR challenge
report §4.29, Figs. 46-47, Eq. 19). Official code and deploy weights: Aitical/NTIRE23_ESR_AIIASR@918244d
``models/team38_RepConvFormer.py``, ``model_zoo/team38_repconvformer.pth`` (MIT)."""
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import LayerNorm2d, conv_pixel_shuffle
from .official import OfficialImport, OfficialImportError, count_indexed, infer_upscale, register_importer, \
    top_level_names
from .rep import ReparamLargeKernelConv

__all__ = ['RepConvFormer', 'ConvMod', 'MixedFFN', 'ConvFormerBlock', 'ConvFormerLayer', 'DIV2K_RGB_MEAN']

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # the official ``rgb_mean`` (subtracted in, added back out)


class ConvMod(nn.Module):
    """The ConvFormer token mixer (report Fig. 46: ``Z = W3(A * V)``; official ``ConvMod``):
    ``n = LN(x)``; ``a = dw_kxk(GELU(a.0(n)))`` (``a.2``: a re-parameterized large-kernel depthwise
    conv, k x k + s x s in training, one k x k deployed); output ``proj(a * v(n))`` (1x1 convs)."""

    def __init__(self, dim, kernel_size, small_kernel, deploy):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.a = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(),
                               ReparamLargeKernelConv(dim, dim, kernel_size, small_kernel, deploy=deploy, groups=dim))
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        n = self.norm(x)
        return self.proj(self.a(n) * self.v(n))


class MixedFFN(nn.Module):
    """Mixed feed-forward network (report Eq. 19; official ``MLP``): ``t = GELU(fc1(LN(x)))`` (1x1, C
    -> rC); ``fc2(t + GELU(pos(t)))`` (``pos`` depthwise 3x3 with bias). One GELU module (``act``)."""

    def __init__(self, dim, mlp_ratio):
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x):
        t = self.act(self.fc1(self.norm(x)))
        return self.fc2(t + self.act(self.pos(t)))


class ConvFormerBlock(nn.Module):
    """ConvFormer layer (official ``Block``, a MetaFormer): ``x + γ1 ⊙ ConvMod(x)``, then
    ``x + γ2 ⊙ MixedFFN(x)``; γ per channel (``layer_scale_1/2``, initialized to 1e-6)."""

    def __init__(self, dim, kernel_size, small_kernel, mlp_ratio, deploy):
        super().__init__()
        self.attn = ConvMod(dim, kernel_size, small_kernel, deploy)
        self.mlp = MixedFFN(dim, mlp_ratio)
        self.layer_scale_1 = nn.Parameter(1e-6 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        x = x + self.layer_scale_1.view(1, -1, 1, 1) * self.attn(x)
        return x + self.layer_scale_2.view(1, -1, 1, 1) * self.mlp(x)


class ConvFormerLayer(nn.Module):
    """Residual ConvFormer block (RCFB; official ``Layer``): the blocks, then ``conv(y) + y`` (1x1)
    on their output y. (As the official code: the residual is around the 1x1 conv only, not
    from the layer's input.)"""

    def __init__(self, dim, depth, kernel_size, small_kernel, mlp_ratio, deploy):
        super().__init__()
        self.blocks = nn.ModuleList([ConvFormerBlock(dim, kernel_size, small_kernel, mlp_ratio, deploy)
                                     for _ in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.conv(x) + x


@ARCH_REGISTRY.register()
class RepConvFormer(SRArch):
    """RepConvFormer / CFSR (report §4.29, Fig. 47): ``x - mean`` -> ``conv_first`` (3x3) ->
    ``num_layer`` RCFBs of ``num_block`` ConvFormer layers -> LayerNorm (``norm``) ->
    ``conv_after_body`` (3x3) + the ``conv_first`` output -> ``upsample`` (3x3 conv to C_out·s²,
    PixelShuffle(s)) -> + mean. The mean is DIV2K's RGB mean (0.4488, 0.4371, 0.4040), a buffer
    outside the state dict as in the official code (zeros unless the images have 3 channels).

    Training form (official ``small_kernel_merged=False``): every large-kernel depthwise conv is
    a k x k (``lkb_origin``) + s x s (``small_conv``) pair; deploy form (``small_kernel_merged=True``,
    the released weights): one k x k conv ``lkb_reparam``.
    :func:`rtsr_arch.reparameterize` merges the pairs exactly (RepLKNet's merge, float64).

    Every operation is local: tiled inference is exact, with a receptive radius of k // 2 + 1 per
    ConvFormer layer (the large kernel and the 3x3 ``pos``) + 3.

    Args:
        num_in_ch, num_out_ch: image channels (equal: the official output has the input's channels).
        num_feat: embedding channels C (48).
        num_block: ConvFormer layers per RCFB (6).
        num_layer: RCFBs (2).
        upscale: 2, 3 or 4 (4: the released weights).
        kernel_size: the large depthwise kernel k (9, the official ``dw_size``).
        small_kernel: the small training kernel s (7); None: no small branch.
        mlp_ratio: hidden width of the FFN relative to C (2).
        deploy: build the reparameterized network directly.
    """

    paper = ('AIIA-SR, CFSR / RepConvFormer, in Li, Zhang, Timofte et al., NTIRE 2023 Challenge on Efficient '
             'Super-Resolution: Methods and Results, CVPRW 2023, §4.29')
    code = 'Aitical/NTIRE23_ESR_AIIASR@918244d'
    license = 'MIT'

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 48, num_block: Int(1) = 6,
                 num_layer: Int(1) = 2, upscale: OneOf(2, 3, 4) = 4, kernel_size: OneOf(3, 5, 7, 9, 11, 13) = 9,
                 small_kernel: OneOf(None, 1, 3, 5, 7, 9, 11) = 7, mlp_ratio: Int(1) = 2, deploy: bool = False):
        super().__init__()
        if num_in_ch != num_out_ch:
            raise ValueError(f'RepConvFormer: num_out_ch={num_out_ch}: expected num_in_ch={num_in_ch} (the mean is '
                             f'subtracted from the input and added to the output)')
        if small_kernel is not None and small_kernel > kernel_size:
            raise ValueError(f'RepConvFormer: small_kernel={small_kernel}: expected at most kernel_size={kernel_size}')
        self.upscale = upscale
        self.deploy = deploy
        self.receptive_radius = (kernel_size // 2 + 1) * num_block * num_layer + 3
        mean = DIV2K_RGB_MEAN if num_in_ch == 3 else (0.0,) * num_in_ch
        # float32 values, as the official ``torch.Tensor(rgb_mean)`` (then cast with the network's dtype)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.layers = nn.ModuleList([ConvFormerLayer(num_feat, num_block, kernel_size, small_kernel, mlp_ratio, deploy)
                                     for _ in range(num_layer)])
        self.norm = LayerNorm2d(num_feat, eps=1e-6)
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.upsample = conv_pixel_shuffle(num_feat, num_out_ch, upscale)

    def forward(self, x):
        fea = self.conv_first(x - self.mean)
        y = fea
        for layer in self.layers:
            y = layer(y)
        y = self.conv_after_body(self.norm(y)) + fea
        return self.upsample(y) + self.mean


def _is_repconvformer(sd):
    return top_level_names(sd) == {'conv_first', 'layers', 'norm', 'conv_after_body', 'upsample'} \
        and 'layers.0.blocks.0.attn.a.0.weight' in sd


@register_importer('RepConvFormer', detect=_is_repconvformer)
def import_official_repconvformer(sd, overrides):
    """Aitical/NTIRE23_ESR_AIIASR ``team38_repconvformer.pth`` (deploy form, raw state dict), and any
    state dict with the official keys (training form: ``a.2.lkb_origin`` + ``a.2.small_conv``)."""
    num_feat, num_in_ch = sd['conv_first.weight'].shape[:2]
    num_layer = count_indexed(sd, 'layers')
    depths = {count_indexed(sd, f'layers.{i}.blocks') for i in range(num_layer)}
    if len(depths) != 1:
        raise OfficialImportError(f'layers of different depths {sorted(depths)}: only equal depths are supported')
    lk = 'layers.0.blocks.0.attn.a.2.'
    deploy = f'{lk}lkb_reparam.weight' in sd
    kernel = sd[f'{lk}lkb_reparam.weight' if deploy else f'{lk}lkb_origin.weight'].shape[-1]
    hidden = sd['layers.0.blocks.0.mlp.fc1.weight'].shape[0]
    if hidden % num_feat:
        raise OfficialImportError(f'FFN width {hidden} is not a multiple of {num_feat}')
    notes, assumed = [], []
    if deploy:
        small = 7 if kernel >= 7 else None
        if 'small_kernel' not in overrides:
            assumed.append('small_kernel')
            notes.append(f'small_kernel: a deploy checkpoint holds the merged {kernel}x{kernel} kernels only; assuming '
                         f"{small} (the official 7 when it fits) for the training form's small branch")
    else:
        key = f'{lk}small_conv.weight'
        small = sd[key].shape[-1] if key in sd else None
    opt = dict(type='RepConvFormer', num_in_ch=num_in_ch, num_out_ch=num_in_ch, num_feat=num_feat,
               num_block=depths.pop(), num_layer=num_layer,
               upscale=infer_upscale(sd['upsample.0.weight'].shape[0], num_in_ch), kernel_size=kernel,
               small_kernel=small, mlp_ratio=hidden // num_feat, deploy=deploy)
    opt.update(overrides)
    return OfficialImport(sd, opt, notes, tuple(assumed))
