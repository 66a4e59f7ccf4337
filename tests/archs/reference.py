"""Independent reference pieces: functional forwards of official networks and of the parts several
of them share, written directly on the official raw state-dict keys with ``torch`` and
``torch.nn.functional`` only (no ``rtsr_arch`` import, here or anywhere this module imports), as
the ground truth of the checkpoint-import tests (``tests/archs/test_<name>.py``,
``tests/test_official_import.py``). Each piece is defined once; the forwards of a single network
live in its test file, built from these pieces.

Conventions: ``sd`` is a state dict with the official keys, ``name`` / ``p`` a key prefix; a conv
uses ``sd[name.bias]`` when the file stores one. Nothing here runs under ``no_grad`` unless it says
so (the gradient checks of DLFAN and PFDN differentiate through the pieces).

- generic: :func:`conv`, :func:`conv_same`, :func:`pad_with`, :func:`batch_norm`,
  :func:`bn_pad_value`, :func:`layer_norm_2d`, :func:`upsample`, :func:`count_blocks`,
  :func:`strip_module`, :func:`tf32_round`;
- blocks: :func:`rrrb` (FMEN's RRRB: FMEN, LMRLFN, PFDN, DIPNet, RT4KSR), :func:`erb` and
  :func:`hfab` (FMEN, LMRLFN), :func:`esa_light` (RLFN's: RLFN, DIPNet, PFDN, RepRFN, DLFAN),
  :func:`esa_rfdn` and :func:`rfdb` (RFDN, PRFDN), :func:`rlfb` (RLFN, DIPNet, LMRLFN), :func:`safm`
  (SAFMN, GFMN), the Fried Rice Lab pieces (:func:`mean_shift`, :func:`shift_conv1x1`,
  :func:`swish`, :func:`frl_skeleton`: LGTT, GateFormer, EXnet, HCAN);
- whole networks used by several test files: :func:`rfdn_forward` (RFDN; PRFDN's ``RFDNEXP``
  computes the same forward), :func:`rlfn_forward` (RLFN, DIPNet), :func:`rt4ksr_forward` and
  :func:`lrsrn_deploy_forward` (``tests/test_official_import.py``).
"""
import math

import torch
from torch.nn import functional as F

ACTIVATIONS = {'relu': F.relu, 'gelu': F.gelu, 'linear': lambda x: x}


# ======================================================================= generic pieces

def conv(x, sd, name, padding=0, stride=1, groups=1, dilation=1, bias=True):
    """``F.conv2d`` with ``sd[name.weight]`` and, when stored (and ``bias``), ``sd[name.bias]``."""
    return F.conv2d(x, sd[f'{name}.weight'], sd.get(f'{name}.bias') if bias else None, stride=stride,
                    padding=padding, groups=groups, dilation=dilation)


def conv_same(x, sd, name, **kwargs):
    """:func:`conv` with 'same' zero padding for odd kernels (``k // 2`` on each axis)."""
    kh, kw = sd[f'{name}.weight'].shape[-2:]
    return conv(x, sd, name, padding=(kh // 2, kw // 2), **kwargs)


def pad_with(t, value):
    """``t`` padded by one pixel whose value is the per-channel ``value`` (the four borders assigned
    explicitly, as the official ``pad_tensor`` of FMEN, RT4KSR, RVSR, ECBSR and DBB's
    ``BNAndPadLayer`` write them): how a 1x1 conv's bias, or a BatchNorm's response to zero, borders
    an expanded map."""
    out = F.pad(t, (1, 1, 1, 1))
    v = value.view(1, -1, 1, 1).to(out.dtype)
    out[:, :, :1, :] = v
    out[:, :, -1:, :] = v
    out[:, :, :, :1] = v
    out[:, :, :, -1:] = v
    return out


def batch_norm(x, sd, name, training=False, update=True, eps=1e-5, momentum=0.1):
    """``nn.BatchNorm2d`` on ``name.{weight, bias, running_mean, running_var}``: the running statistics,
    or (``training``) the batch's mean and biased variance, with the running statistics of ``sd``
    updated in place as ``nn.BatchNorm2d`` does (``update=False``: left alone)."""
    stats = (sd[f'{name}.running_mean'], sd[f'{name}.running_var']) if update or not training else (None, None)
    return F.batch_norm(x, *stats, sd[f'{name}.weight'], sd[f'{name}.bias'], training=training, momentum=momentum,
                        eps=eps)


def bn_pad_value(sd, name, eps=1e-5, detach=False):
    """A BatchNorm's output for a zero input from its running statistics, ``bias - running_mean *
    weight / sqrt(running_var + eps)`` (FMEN's ``get_bn_bias``, DBB's ``BNAndPadLayer``, which
    ``detach``-es the affine parameters)."""
    weight, bias = sd[f'{name}.weight'], sd[f'{name}.bias']
    if detach:
        weight, bias = weight.detach(), bias.detach()
    return bias - sd[f'{name}.running_mean'] * weight / torch.sqrt(sd[f'{name}.running_var'] + eps)


def layer_norm_2d(x, sd, name, eps=1e-6):
    """Channels-first LayerNorm (NAFNet's ``LayerNorm2d``, ConvNeXt's ``channels_first``, the FRL
    ``LayerNorm4D`` with eps 1e-5): per pixel over the channels, biased variance, eps inside the
    square root, affine ``name.{weight, bias}``."""
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps)
    return sd[f'{name}.weight'].view(1, -1, 1, 1) * y + sd[f'{name}.bias'].view(1, -1, 1, 1)


def upsample(x, sd, name, channels, padding=1):
    """The pixel-shuffle tail: conv ``name`` (3x3, padding 1) then PixelShuffle(s), s from the conv's
    ``channels * s^2`` outputs."""
    y = conv(x, sd, name, padding=padding)
    return F.pixel_shuffle(y, math.isqrt(y.shape[1] // channels))


def count_blocks(sd, prefix):
    """How many distinct indices follow ``prefix`` in the keys (``'block_'``: block_1 ... block_n)."""
    return len({k[len(prefix):].split('.')[0] for k in sd if k.startswith(prefix)})


def strip_module(state_dict):
    """The state dict with DataParallel's ``module.`` prefix removed."""
    return {k[7:] if k.startswith('module.') else k: v for k, v in state_dict.items()}


def tf32_round(t):
    """float32 -> TensorFloat-32 (10 explicit mantissa bits), rounding to nearest with ties away from
    zero (the PTX ``cvt.rna.tf32.f32`` conversion with which Ampere tensor cores read the operands
    of convolutions and matmuls under ``allow_tf32``), returned as float32."""
    bits = t.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


# ======================================================================= reparameterizable blocks

def rrrb(x, sd, name):
    """FMEN's RRRB (NJU-Jet/FMEN ``train_fmen.py``; also RT4KSR's ``ResBlock``, PFDN's blocks and
    DIPNet's RRRBConv): deploy ``name.rep_conv`` (3x3, padding 1); training: 1x1 ``expand_conv``, its
    output padded by one pixel of the expand bias (zeros when bias-free), 3x3 ``fea_conv`` valid + the
    unpadded expanded map, 1x1 ``reduce_conv``, + ``x`` when the widths match."""
    if f'{name}.rep_conv.weight' in sd:
        return conv(x, sd, f'{name}.rep_conv', padding=1)
    e = conv(x, sd, f'{name}.expand_conv')
    b0 = sd.get(f'{name}.expand_conv.bias')
    padded = F.pad(e, (1, 1, 1, 1)) if b0 is None else pad_with(e, b0)
    y = conv(conv(padded, sd, f'{name}.fea_conv') + e, sd, f'{name}.reduce_conv')
    return y + x if y.shape == x.shape else y


def erb(x, sd, name, slope=0.1):
    """FMEN's ERB: RRRB ``conv1`` -> LeakyReLU(slope) -> RRRB ``conv2``."""
    return rrrb(F.leaky_relu(rrrb(x, sd, f'{name}.conv1'), slope), sd, f'{name}.conv2')


def hfab(x, sd, name, batch_stats=False, slope=0.1):
    """FMEN's HFAB (also LMRLFN's): squeeze -> LeakyReLU -> ERBs ``convs.j`` -> LeakyReLU -> excitate
    -> sigmoid, times ``x``. Training form (``bn1`` stored): ``bn1`` before the squeeze and ``bn2``
    before the excitate, each output padded by one pixel of the BatchNorm's running-statistics
    response to zero (``get_bn_bias``, also in train mode), both convs then valid; ``bn3`` after the
    excitate. ``batch_stats``: train-mode BatchNorms (batch statistics; running ones untouched)."""
    bn = f'{name}.bn1.weight' in sd

    def norm(t, b):
        return batch_norm(t, sd, f'{name}.{b}', training=batch_stats, update=False)

    a = pad_with(norm(x, 'bn1'), bn_pad_value(sd, f'{name}.bn1')) if bn else x
    a = F.leaky_relu(conv(a, sd, f'{name}.squeeze', padding=0 if bn else 1), slope)
    for j in range(count_blocks(sd, f'{name}.convs.')):
        a = erb(a, sd, f'{name}.convs.{j}', slope)
    a = F.leaky_relu(a, slope)
    if bn:
        a = pad_with(norm(a, 'bn2'), bn_pad_value(sd, f'{name}.bn2'))
        a = norm(conv(a, sd, f'{name}.excitate'), 'bn3')
    else:
        a = conv(a, sd, f'{name}.excitate', padding=1)
    return torch.sigmoid(a) * x


# ======================================================================= attention and blocks

def esa_light_gate(x, sd, name):
    """The gate of RLFN's light ESA (bytedance/RLFN ``block.py``; DIPNet, PFDN, RepRFN and DLFAN copy
    it): conv1 (1x1) -> conv2 (3x3, stride 2, no padding) -> max pool 7 / 3 -> conv3 (3x3) ->
    bilinear to x's size -> + conv_f(conv1 output) -> conv4 (1x1) -> sigmoid. No ReLU."""
    c1_ = conv(x, sd, f'{name}.conv1')
    v = F.max_pool2d(conv(c1_, sd, f'{name}.conv2', stride=2), kernel_size=7, stride=3)
    c3 = F.interpolate(conv(v, sd, f'{name}.conv3', padding=1), size=(x.shape[2], x.shape[3]), mode='bilinear',
                       align_corners=False)
    return torch.sigmoid(conv(c3 + conv(c1_, sd, f'{name}.conv_f'), sd, f'{name}.conv4'))


def esa_light(x, sd, name):
    """RLFN's light ESA: ``x`` times :func:`esa_light_gate`."""
    return x * esa_light_gate(x, sd, name)


def esa_rfdn(x, sd, name):
    """RFDN's original ESA (ofsoundof/NTIRE2023_ESR ``team00_RFDN.py``, PRFDN's ``ESA_EXP``): conv1 ->
    conv2 (s2, p0) -> max pool 7 / 3 -> relu(conv_max) -> relu(conv3) -> conv3_ -> bilinear to x's
    size -> + conv_f(conv1 output) -> conv4 -> sigmoid -> x * m."""
    c1_ = conv(x, sd, f'{name}.conv1')
    v = F.max_pool2d(conv(c1_, sd, f'{name}.conv2', stride=2), kernel_size=7, stride=3)
    v = F.relu(conv(v, sd, f'{name}.conv_max', padding=1))
    v = F.relu(conv(v, sd, f'{name}.conv3', padding=1))
    v = conv(v, sd, f'{name}.conv3_', padding=1)
    v = F.interpolate(v, size=(x.shape[2], x.shape[3]), mode='bilinear', align_corners=False)
    return x * torch.sigmoid(conv(v + conv(c1_, sd, f'{name}.conv_f'), sd, f'{name}.conv4'))


def rfdb(x, sd, p, slope=0.05):
    """RFDN's residual feature distillation block: three steps (1x1 ``c{i}_d`` distilled; 3x3
    ``c{i}_r`` + input refined; LeakyReLU), 3x3 ``c4``, concatenation, 1x1 ``c5``, :func:`esa_rfdn`."""
    distilled, r = [], x
    for i in (1, 2, 3):
        distilled.append(F.leaky_relu(conv(r, sd, f'{p}.c{i}_d'), slope))
        r = F.leaky_relu(conv(r, sd, f'{p}.c{i}_r', padding=1) + r, slope)
    distilled.append(F.leaky_relu(conv(r, sd, f'{p}.c4', padding=1), slope))
    return esa_rfdn(conv(torch.cat(distilled, 1), sd, f'{p}.c5'), sd, f'{p}.esa')


def rfdn_forward(sd, x255, slope=0.05):
    """The official RFDN forward (NTIRE 2023 ESR baseline ``team00_RFDN.py``; PRFDN's ``RFDNEXP``
    computes the same) on an image in [0, 255], returning [0, 255]: fea_conv -> RFDBs B1..Bn, all
    outputs concatenated -> 1x1 ``c.0`` -> LeakyReLU -> ``LR_conv`` + fea_conv output -> upsampler."""
    fea = conv(x255, sd, 'fea_conv', padding=1)
    outs, out = [], fea
    for i in range(1, count_blocks(sd, 'B') + 1):
        out = rfdb(out, sd, f'B{i}', slope)
        outs.append(out)
    out = conv(F.leaky_relu(conv(torch.cat(outs, 1), sd, 'c.0'), slope), sd, 'LR_conv', padding=1) + fea
    return upsample(out, sd, 'upsampler.0', x255.shape[1])


def rlfb(x, sd, p, block_conv=None, slope=0.05, attention=None):
    """RLFN's residual local feature block: three 3x3 convs ``c1_r``, ``c2_r``, ``c3_r`` (``block_conv(t,
    name)``; default a plain conv, padding 1), each followed by LeakyReLU(slope); + x; 1x1 ``c5``;
    ``attention(t)`` (default :func:`esa_light` ``esa``; LMRLFN's blocks end in an HFAB instead)."""
    block_conv = block_conv or (lambda t, name: conv(t, sd, name, padding=1))
    attention = attention or (lambda t: esa_light(t, sd, f'{p}.esa'))
    r = x
    for c in (1, 2, 3):
        r = F.leaky_relu(block_conv(r, f'{p}.c{c}_r'), slope)
    return attention(conv(r + x, sd, f'{p}.c5'))


def rlfn_forward(sd, x, block_conv=None, slope=0.05):
    """bytedance/RLFN's RLFN / RLFN_S / RLFN_Prune forward (and DIPNet's, whose block convs are
    ``block_conv``): conv_1 -> RLFBs block_1..n -> conv_2 + conv_1 output -> upsampler.0 ->
    PixelShuffle. Range-agnostic: RLFN's weights expect [0, 255], DIPNet's [0, 1]."""
    fea = conv(x, sd, 'conv_1', padding=1)
    out = fea
    for i in range(1, count_blocks(sd, 'block_') + 1):
        out = rlfb(out, sd, f'block_{i}', block_conv, slope)
    return upsample(conv(out, sd, 'conv_2', padding=1) + fea, sd, 'upsampler.0', x.shape[1])


def safm(y, sd, p, pool_shift=1, levels=4):
    """The official multi-level ``SAFM`` (sunny2109/SAFMN; NTIRE 2023 SAFMN and GFMN) on keys
    ``p + 'mfr.{i}'`` / ``p + 'aggr'`` (biases when stored): ``levels`` channel chunks; chunk 0 a
    depthwise 3x3 at full size, chunk i adaptive-max-pooled to (H // 2^(i + pool_shift), W // ...),
    depthwise 3x3, nearest back; concatenation -> 1x1 ``aggr`` -> GELU -> times ``y``."""
    h, w = y.shape[-2:]
    out = []
    for i, c in enumerate(y.chunk(levels, dim=1)):
        name = f'{p}mfr.{i}'
        groups = sd[f'{name}.weight'].shape[0]
        if i == 0:
            out.append(conv(c, sd, name, padding=1, groups=groups))
            continue
        f = 2 ** (i + pool_shift)
        s = conv(F.adaptive_max_pool2d(c, (h // f, w // f)), sd, name, padding=1, groups=groups)
        out.append(F.interpolate(s, size=(h, w), mode='nearest'))
    return F.gelu(conv(torch.cat(out, dim=1), sd, p + 'aggr')) * y


# ======================================================================= Fried Rice Lab pieces
# The FRL entries of the NTIRE 2023 Efficient SR challenge (LGTT, GateFormer, EXnet, HCAN; Li et al.,
# CVPRW 2023, §4.27-4.30; the teams' common helper code), written from the published description.
# Every FRL function takes and returns images in [0, 255], as the teams' ``test_demo.py``.

DF2K_MEAN = (0.4690, 0.4490, 0.4036)


def mean_shift(x, sign):
    """The FRL MeanShift: a 1x1 conv with an identity kernel and bias sign * 255 * DF2K mean; the
    bias is computed in float32 and then cast to the input's type, as the official code does (so a
    float64 forward shifts by the float32-rounded mean)."""
    weight = torch.eye(3, dtype=x.dtype).view(3, 3, 1, 1)
    return F.conv2d(x, weight, (sign * 255 * torch.tensor(DF2K_MEAN, dtype=torch.float32)).to(x.dtype))


def shift_conv1x1(x, sd, name):
    """The FRL ShiftConv2d1x1 ('+' mode): a fixed depthwise 3x3 one-hot kernel (zero padding 1)
    moving channel groups of C // 5 (right, left, below, above neighbour; the rest unchanged),
    then the 1x1 conv ``name``."""
    c = x.shape[1]
    g = c // 5
    mask = torch.zeros(c, 1, 3, 3, dtype=x.dtype)
    mask[:g, 0, 1, 2] = 1
    mask[g:2 * g, 0, 1, 0] = 1
    mask[2 * g:3 * g, 0, 2, 1] = 1
    mask[3 * g:4 * g, 0, 0, 1] = 1
    mask[4 * g:, 0, 1, 1] = 1
    return conv_same(F.conv2d(x, mask, padding=1, groups=c), sd, name)


def swish(x):
    return x * torch.sigmoid(x)


def frl_skeleton(sd, x255, body, head='head', stored_mean=False):
    """sub_mean -> head -> body -> + head output -> tail.0 -> PixelShuffle -> add_mean.
    ``stored_mean``: the mean shifts are the checkpoint's 1x1 convs ``sub_mean`` / ``add_mean``."""
    x = conv(x255, sd, 'sub_mean') if stored_mean else mean_shift(x255, -1)
    h = conv_same(x, sd, head)
    y = upsample(body(h) + h, sd, 'tail.0', 3)
    return conv(y, sd, 'add_mean') if stored_mean else mean_shift(y, 1)


# ======================================================================= RT4KSR and LRSRN (test_official_import.py)

@torch.no_grad()
def rt4ksr_forward(state_dict, x):
    """eduardzamfir/RT4KSR ``RT4KSR_Rep`` in training form (``is_train=True``, ``forget=False``,
    GELU, LayerNorm, no ECA, no residual), ``code/model/{arch,modules}.py``, for input ``x``
    (N,3,H,W) with even H, W. The high-frequency branch (hf, hfb, gamma) does not reach the output
    with ``forget=False`` and is not computed."""
    sd = strip_module(state_dict)
    feats = conv(F.pixel_unshuffle(x, 2), sd, 'head.0', padding=1)
    for i in range(count_blocks(sd, 'body.')):
        feats = F.gelu(rrrb(layer_norm_2d(feats, sd, f'body.{i}.norm'), sd, f'body.{i}.conv1'))
    feats = rrrb(layer_norm_2d(feats, sd, 'tail.0'), sd, 'tail.1')
    return upsample(feats, sd, 'upsample.0', x.shape[1])


@torch.no_grad()
def lrsrn_deploy_forward(state_dict, x, act_type='relu'):
    """Ganzooo/LRSRN ``PlainRepConv(_BlockV2)_deploy`` (``source/models/plainRepConv.py``), every layer
    a ``conv3x3``: y0 = act(head(x)); y = act(backbone_i(...)) for each block; out =
    PixelShuffle(s)(transition(y + y0)), s from the transition's output channels."""
    sd = strip_module(state_dict)
    act = ACTIVATIONS[act_type]
    y0 = act(conv(x, sd, 'head.conv3x3', padding=1))
    y = y0
    for i in range(count_blocks(sd, 'backbone.')):
        y = act(conv(y, sd, f'backbone.{i}.conv3x3', padding=1))
    return upsample(y + y0, sd, 'transition.0.conv3x3', x.shape[1])
