"""The reparameterizable block library: training form == fused form on every pixel, borders included.

Every block is checked on random weights (biases, BN statistics, PReLU slopes included) and random
inputs of odd and degenerate sizes (1x1, 2x2, 1xN: every pixel is a border pixel) in float64
(max |diff| <= 1e-10) and float32 (max |diff| <= 1e-5 of the output scale), bias-free, grouped,
depthwise, strided (output ceil(h / s)) and non-square variants included. The merge math of
fusion.py is checked against running the convs it replaces. Negative controls show that the
comparison catches a zero-padded (instead of bias-padded) RRRB, a wrong merge, a misaligned 1xk
kernel and a wrong group index in a grouped identity kernel. Arguments a block cannot honour raise
a one-line ValueError naming the argument.
"""
import copy
import math
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import photo, randomize
from rtsr_arch.archs.layers import ACTIVATIONS
from rtsr_arch.archs.rep import (ECB, RRRB, ACBlock, CollapsibleBlock, RepVGGBlock, ReparamBlock, reparameterize,
                                 reparameterize_children)
from rtsr_arch.archs.rep.nrb import NRB
from rtsr_arch.archs.rep.rvsr_repconv import RVSRRepConv
from rtsr_arch.archs.rep.conv3xc import Conv3XC
from rtsr_arch.archs.rep.bsconv import BSConvU, BSConvURep, RepUpsampler
from rtsr_arch.archs.rep.large_kernel import ReparamLargeKernelConv
from rtsr_arch.archs.rep.dbb import LEDBB, BNAndPadLayer, DiverseBranchBlock, IdentityBasedConv1x1
from rtsr_arch.archs.rep.reprfn_block import RepRFNBlock
from rtsr_arch.archs.rep.fusion import avg_pool_kernel
from rtsr_arch.archs.rep.fusion import (dense_depthwise, dense_grouped, fuse_1x1_kxk, fuse_bn, fuse_kxk_1x1,
                                        identity_kernel, merge_parallel, pad_kernel)


pytestmark = pytest.mark.usefixtures('torch_single_thread')

TOL64 = 1e-10  # absolute, float64
TOL32 = 1e-5  # relative to the output scale, float32
SIZES = [(7, 9), (3, 5), (1, 1), (2, 2), (1, 7), (6, 1), (2, 3)]  # the last five: every pixel is border

# name -> (input channels, factory(act_type, **kwargs) of a small block); kwargs: deploy=True
CASES = {
    'collapsible_idt': (5, lambda act, **kw: CollapsibleBlock(5, 5, 12, act, **kw)),
    'collapsible_res': (5, lambda act, **kw: CollapsibleBlock(5, 7, 12, act, res_conv=True, **kw)),
    'collapsible_nores': (5, lambda act, **kw: CollapsibleBlock(5, 3, 12, act, res_conv=False, **kw)),
    'collapsible_noidt_res': (5, lambda act, **kw: CollapsibleBlock(5, 5, 12, act, with_idt=False, res_conv=True,
                                                                    **kw)),
    'collapsible_noidt_nores': (5, lambda act, **kw: CollapsibleBlock(5, 5, 12, act, with_idt=False, res_conv=False,
                                                                      **kw)),
    'collapsible_res_nobias': (5, lambda act, **kw: CollapsibleBlock(5, 7, 12, act, bias=False, **kw)),
    'collapsible_k5_idt_nobias': (5, lambda act, **kw: CollapsibleBlock(5, 5, 12, act, bias=False, kernel_size=5,
                                                                        **kw)),
    'collapsible_b2_idt': (5, lambda act, **kw: CollapsibleBlock(5, 5, 12, act, feature_size_b2=6, **kw)),
    'collapsible_b2_res': (5, lambda act, **kw: CollapsibleBlock(5, 7, 12, act, feature_size_b2=6, **kw)),
    'collapsible_b2_res_nobias': (5, lambda act, **kw: CollapsibleBlock(5, 7, 12, act, feature_size_b2=4, bias=False,
                                                                        **kw)),
    'collapsible_b2_k5_nores': (5, lambda act, **kw: CollapsibleBlock(5, 3, 12, act, res_conv=False, kernel_size=5,
                                                                      feature_size_b2=6, **kw)),
    'rrrb_2': (6, lambda act, **kw: RRRB(6, ratio=2, act_type=act, **kw)),
    'rrrb_1.5': (6, lambda act, **kw: RRRB(6, ratio=1.5, act_type=act, **kw)),
    'rrrb_nobias': (6, lambda act, **kw: RRRB(6, ratio=2, act_type=act, bias=False, **kw)),
    'repvgg_same': (5, lambda act, **kw: RepVGGBlock(5, 5, act, **kw)),
    'repvgg_diff': (5, lambda act, **kw: RepVGGBlock(5, 8, act, **kw)),
    'repvgg_nobn': (5, lambda act, **kw: RepVGGBlock(5, 5, act, use_bn=False, **kw)),
    'repvgg_nobn_nobias': (5, lambda act, **kw: RepVGGBlock(5, 5, act, use_bn=False, bias=False, **kw)),
    'repvgg_s2': (4, lambda act, **kw: RepVGGBlock(4, 4, act, stride=2, **kw)),  # identity impossible: none
    'repvgg_g2': (6, lambda act, **kw: RepVGGBlock(6, 6, act, groups=2, **kw)),  # grouped identity
    'repvgg_g2_diff': (4, lambda act, **kw: RepVGGBlock(4, 6, act, groups=2, **kw)),
    'repvgg_dw': (5, lambda act, **kw: RepVGGBlock(5, 5, act, groups=5, **kw)),
    'repvgg_dw_s2_k5_nobn': (4, lambda act, **kw: RepVGGBlock(4, 4, act, groups=4, stride=2, kernel_size=5,
                                                              use_bn=False, **kw)),
    'ecb_idt_dm1': (6, lambda act, **kw: ECB(6, 6, 1.0, act, with_idt=True, **kw)),
    'ecb_idt_dm2': (6, lambda act, **kw: ECB(6, 6, 2.0, act, with_idt=True, **kw)),
    'ecb_noidt_dm2': (6, lambda act, **kw: ECB(6, 6, 2.0, act, with_idt=False, **kw)),
    'ecb_diff_dm2': (4, lambda act, **kw: ECB(4, 7, 2.0, act, **kw)),
    'ecb_idt_nobias': (6, lambda act, **kw: ECB(6, 6, 2.0, act, with_idt=True, bias=False, **kw)),
    'acb_k3': (5, lambda act, **kw: ACBlock(5, 7, 3, act, **kw)),
    'acb_k5': (5, lambda act, **kw: ACBlock(5, 5, 5, act, **kw)),
    'acb_k3_nobn': (5, lambda act, **kw: ACBlock(5, 7, 3, act, use_bn=False, **kw)),
    'acb_k3_idt': (5, lambda act, **kw: ACBlock(5, 5, 3, act, with_idt=True, **kw)),
    'acb_k3_idt_nobn_nobias': (5, lambda act, **kw: ACBlock(5, 5, 3, act, with_idt=True, use_bn=False, bias=False,
                                                            **kw)),
    'acb_k3_s2': (4, lambda act, **kw: ACBlock(4, 6, 3, act, stride=2, **kw)),
    'acb_k3_dw_idt': (6, lambda act, **kw: ACBlock(6, 6, 3, act, groups=6, with_idt=True, **kw)),
    'acb_k5_g2_s2': (4, lambda act, **kw: ACBlock(4, 4, 5, act, groups=2, stride=2, **kw)),
    # ANUNet's nested block (AIS 2024 RTSR report §3.6): 1x1 -> ECB + identity -> 1x1, + x
    'nrb_2': (6, lambda act, **kw: NRB(6, ratio=2, act_type=act, **kw)),
    'nrb_1.5_dm1': (4, lambda act, **kw: NRB(4, ratio=1.5, depth_multiplier=1.0, act_type=act, **kw)),
    'nrb_nobias': (5, lambda act, **kw: NRB(5, ratio=2, act_type=act, bias=False, **kw)),
    # RVSR's RepConv (AIS 2024 RTSR report §3.5): two bias-padded 1-3-1 branches + 3x3 + 1x1 + identity
    'rvsr_repconv_2': (6, lambda act, **kw: RVSRRepConv(6, ratio=2, act_type=act, **kw)),
    'rvsr_repconv_1.5': (4, lambda act, **kw: RVSRRepConv(4, ratio=1.5, act_type=act, **kw)),
    'rvsr_repconv_nobias': (5, lambda act, **kw: RVSRRepConv(5, ratio=2, act_type=act, bias=False, **kw)),
    # SPAN's Conv3XC (Wan et al., CVPRW 2024): 1x1 -> kxk -> 1x1 on the zero-padded input, + a 1x1 skip
    'conv3xc_same': (6, lambda act, **kw: Conv3XC(6, 6, 2, act, **kw)),
    'conv3xc_diff': (4, lambda act, **kw: Conv3XC(4, 7, 2, act, **kw)),
    'conv3xc_gain1_k5_nobias': (5, lambda act, **kw: Conv3XC(5, 5, 1, act, bias=False, kernel_size=5, **kw)),
    'conv3xc_g2_s2': (4, lambda act, **kw: Conv3XC(4, 6, 2, act, stride=2, groups=2, **kw)),
    'conv3xc_k1x3_gain3': (3, lambda act, **kw: Conv3XC(3, 4, 3, act, kernel_size=(1, 3), **kw)),
    # RepLKNet's large kernel + small kernel (RepConvFormer, NTIRE 2023 ESR report §4.29): no BN, with bias
    'replk_dw_k5_s3': (6, lambda act, **kw: ReparamLargeKernelConv(6, 6, 5, 3, act, groups=6, **kw)),
    'replk_k3_s1_diff': (4, lambda act, **kw: ReparamLargeKernelConv(4, 6, 3, 1, act, **kw)),
    'replk_dw_k5_s3_s2_nobias': (4, lambda act, **kw: ReparamLargeKernelConv(4, 4, 5, 3, act, groups=4, stride=2,
                                                                             bias=False, **kw)),
    # DBB (Ding et al., CVPR 2021): kxk+BN, 1x1+BN, 1x1 -> BN-value pad -> kxk -> BN, 1x1 -> BN-value pad -> avg -> BN
    'dbb_same': (5, lambda act, **kw: DiverseBranchBlock(5, 5, 3, act, **kw)),
    'dbb_diff_internal': (4, lambda act, **kw: DiverseBranchBlock(4, 6, 3, act, internal_channels=7, **kw)),
    'dbb_g2_s2': (4, lambda act, **kw: DiverseBranchBlock(4, 6, 3, act, groups=2, stride=2, **kw)),
    'dbb_dw': (6, lambda act, **kw: DiverseBranchBlock(6, 6, 3, act, groups=6, **kw)),  # pooling only, 2x inner
    'dbb_dw_k5_s2': (4, lambda act, **kw: DiverseBranchBlock(4, 4, 5, act, groups=4, stride=2, **kw)),
    'dbb_k3x5': (4, lambda act, **kw: DiverseBranchBlock(4, 5, (3, 5), act, **kw)),
    # DLFAN's LEDBB (NTIRE 2023 ESR report §4.18): DBB without the pooling branch
    'ledbb_same': (6, lambda act, **kw: LEDBB(6, 6, 3, act, **kw)),
    'ledbb_diff_s2': (4, lambda act, **kw: LEDBB(4, 7, 3, act, stride=2, **kw)),
    # RepRFN's RepBlock (NTIRE 2023 ESR report §4.16): 3x3 + 3x1 + 1x3 + 1x1 + 1x1->3x3 + identity + ECB edges
    'reprfn_same': (6, lambda act, **kw: RepRFNBlock(6, 6, act, **kw)),
    'reprfn_diff_k5': (4, lambda act, **kw: RepRFNBlock(4, 6, act, kernel_size=5, expand=1.5, **kw)),
    'reprfn_nobias_noidt': (5, lambda act, **kw: RepRFNBlock(5, 5, act, bias=False, with_idt=False, **kw)),
}
DEPLOY_KEYS = {CollapsibleBlock: 'conv3x3', RRRB: 'rep_conv', RepVGGBlock: 'rbr_reparam', ECB: 'rbr_reparam',
               ACBlock: 'fused_conv', NRB: 'rep_conv', RVSRRepConv: 'rep_conv'}
DEPLOY_KEYS[Conv3XC] = 'eval_conv'
DEPLOY_KEYS[ReparamLargeKernelConv] = 'lkb_reparam'
DEPLOY_KEYS.update({DiverseBranchBlock: 'dbb_reparam', LEDBB: 'dbb_reparam', RepRFNBlock: 'rbr_reparam'})


def out_size(block, h, w):
    """ceil(h / stride) x ceil(w / stride): every branch pads by half its (odd) kernel."""
    sh, sw = block.stride
    return math.ceil(h / sh), math.ceil(w / sw)


def linear_part(block, x):
    """The block output before its activation, in whichever form the block currently is."""
    return getattr(block, block.deploy_key)(x) if block.deploy else block.forward_train(x)


def assert_fused_close(y, y_fused, scale=None):
    """float64: max |diff| <= 1e-10; float32: max |diff| <= 1e-5 * scale (default max |y|)."""
    assert y.shape == y_fused.shape and y.dtype == y_fused.dtype
    err = (y - y_fused).abs().max().item()
    if y.dtype == torch.float64:
        assert err <= TOL64, f'float64 fused vs training: max |diff| {err:.3g} > {TOL64}'
    else:
        scale = y.abs().max().item() if scale is None else scale
        assert err <= TOL32 * scale, f'float32 fused vs training: max |diff| {err:.3g} > {TOL32} * {scale:.3g}'


def fused_copy(block):
    fused = reparameterize(copy.deepcopy(block))
    assert fused.deploy and isinstance(getattr(fused, fused.deploy_key), nn.Conv2d)
    return fused


def check_fused_equals_training(block, x, fused=None):
    """Compare a training-form block (eval mode) with its fused copy on ``x``, all pixels."""
    block.eval()
    fused = fused_copy(block).eval() if fused is None else fused
    with torch.no_grad():
        lin, lin_fused = linear_part(block, x), linear_part(fused, x)
        y, y_fused = block(x), fused(x)
    assert_fused_close(lin, lin_fused)
    # after the activation, relative to the block's output scale (before or after it)
    scale = max(y.abs().max().item(), lin.abs().max().item())
    assert_fused_close(y, y_fused, scale)
    return y


def random_input(batch, channels, h, w, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, h, w, generator=gen, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------- fused == training, every block

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
@pytest.mark.parametrize('act', list(ACTIVATIONS))
@pytest.mark.parametrize('case', list(CASES))
def test_fused_equals_training(case, act, dtype):
    in_ch, factory = CASES[case]
    block = randomize(factory(act), seed=zlib.crc32(f'{case}/{act}'.encode())).to(dtype).eval()
    fused = fused_copy(block).eval()
    for i, (h, w) in enumerate(SIZES):
        x = random_input(2, in_ch, h, w, dtype, seed=i)
        y = check_fused_equals_training(block, x, fused)
        assert y.shape == (2, block.out_channels, *out_size(block, h, w))
    assert not block.deploy  # the original was not touched by fusing its copy


@pytest.mark.parametrize('case', list(CASES))
def test_fused_equals_training_on_photo(case):
    in_ch, factory = CASES[case]
    img = photo('coffee', 11, 13, dtype=torch.float64, batch=2)
    x = img.repeat(1, (in_ch + 2) // 3, 1, 1)[:, :in_ch]
    block = randomize(factory('prelu'), seed=7).double()
    check_fused_equals_training(block, x)
    check_fused_equals_training(block.float(), x.float())


def test_fusion_is_not_trivially_equal():
    """The branches are really different convs: dropping any one changes the output."""
    block = randomize(ECB(4, 4, 2.0, 'linear', with_idt=True), seed=3).double().eval()
    x = random_input(1, 4, 7, 9, torch.float64, seed=0)
    y = block.forward_train(x)
    for name in ('conv3x3', 'conv1x1_3x3', 'conv1x1_sbx', 'conv1x1_sby', 'conv1x1_lpl'):
        ablated = copy.deepcopy(block)
        for p in getattr(ablated, name).parameters():
            p.data.zero_()
        assert (ablated.forward_train(x) - y).abs().max() > 1e-3, name


# ---------------------------------------------------------------- training forms == the papers' formulas

def pad_with(t, value):
    """Pad by one pixel with the per-channel ``value`` (FMEN's ``pad_tensor`` / ECB's b0 padding)."""
    v = value.view(1, -1, 1, 1)
    return F.pad(t - v, [1, 1, 1, 1]) + v


def test_rrrb_training_form_matches_fmen_formula():
    """FMEN (Du et al., CVPRW 2022; NJU-Jet/FMEN): t = W0 x + b0; u = K1 * pad_b0(t) + b1 + t; y = W2 u + b2 + x."""
    block = randomize(RRRB(4, ratio=2), seed=11).double()
    x = random_input(2, 4, 5, 6, torch.float64, seed=1)
    e, f, r = block.expand_conv, block.fea_conv, block.reduce_conv
    t = F.conv2d(x, e.weight, e.bias)
    u = F.conv2d(pad_with(t, e.bias), f.weight, f.bias) + t
    ref = F.conv2d(u, r.weight, r.bias) + x
    assert (block.forward_train(x) - ref).abs().max() <= TOL64
    assert e.weight.shape == (8, 4, 1, 1) and f.weight.shape == (8, 8, 3, 3) and r.weight.shape == (4, 8, 1, 1)


def test_ecb_training_form_matches_ecbsr_formula():
    """ECBSR (Zhang et al., ACM MM 2021; xindongzhang/ECBSR): 3x3 + (1x1 -> b0-pad -> 3x3) + 3 x (1x1 -> b0-pad -> scale*mask) [+ x]."""
    masks = {'sbx': [[1, 0, -1], [2, 0, -2], [1, 0, -1]], 'sby': [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
             'lpl': [[0, 1, 0], [1, -4, 1], [0, 1, 0]]}
    block = randomize(ECB(3, 3, 2.0, 'linear', with_idt=True), seed=12).double()
    x = random_input(1, 3, 6, 5, torch.float64, seed=2)
    ref = block.conv3x3(x) + x
    seq = block.conv1x1_3x3
    assert seq.k1.shape == (3, 6, 3, 3)
    ref = ref + F.conv2d(pad_with(F.conv2d(x, seq.k0, seq.b0), seq.b0), seq.k1, seq.b1)
    for name, mask in masks.items():
        br = getattr(block, f'conv1x1_{name}')
        mask = torch.tensor(mask, dtype=torch.float64).expand(3, 1, 3, 3)
        assert torch.equal(br.mask, mask), name
        t = pad_with(F.conv2d(x, br.k0, br.b0), br.b0)
        ref = ref + F.conv2d(t, br.scale * mask, br.bias, groups=3)
    assert (block.forward_train(x) - ref).abs().max() <= TOL64


def test_collapsible_training_form_matches_lrsrn_formula():
    """LRSRN RepBlock (Ganzooo/LRSRN RepConv_block.py): conv1(conv0(x)) with no activation between, + x or + conv1_res(x)."""
    x = random_input(1, 4, 5, 5, torch.float64, seed=3)
    idt = randomize(CollapsibleBlock(4, 4, 9), seed=13).double()
    assert (idt.forward_train(x) - (idt.conv1(idt.conv0(x)) + x)).abs().max() <= TOL64
    assert idt.conv0.weight.shape == (9, 4, 3, 3) and not hasattr(idt, 'conv1_res')
    res = randomize(CollapsibleBlock(4, 6, 9), seed=14).double()
    assert (res.forward_train(x) - (res.conv1(res.conv0(x)) + res.conv1_res(x))).abs().max() <= TOL64
    nores = randomize(CollapsibleBlock(4, 6, 9, res_conv=False), seed=15).double()
    assert (nores.forward_train(x) - nores.conv1(nores.conv0(x))).abs().max() <= TOL64
    assert not hasattr(nores, 'conv1_res')


def test_repvgg_training_form_matches_eval_bn_formula():
    """RepVGG (Ding et al., CVPR 2021; DingXiaoH/RepVGG): BN(conv3x3 x) + BN(conv1x1 x) + BN(x), BN with running statistics."""
    block = randomize(RepVGGBlock(4, 4, 'linear'), seed=16).double().eval()
    x = random_input(2, 4, 5, 4, torch.float64, seed=4)

    def bn(t, m):
        return (t - m.running_mean.view(1, -1, 1, 1)) / (m.running_var.view(1, -1, 1, 1) + m.eps).sqrt() \
            * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)

    ref = bn(F.conv2d(x, block.rbr_dense.conv.weight, padding=1), block.rbr_dense.bn) \
        + bn(F.conv2d(x, block.rbr_1x1.conv.weight), block.rbr_1x1.bn) + bn(x, block.rbr_identity)
    assert (block.forward_train(x) - ref).abs().max() <= TOL64
    assert RepVGGBlock(4, 6).rbr_identity is None


def bn_eval(t, m):
    """An inference-mode BatchNorm written out (running statistics)."""
    return (t - m.running_mean.view(1, -1, 1, 1)) / (m.running_var.view(1, -1, 1, 1) + m.eps).sqrt() \
        * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize('stride,groups,cin,cout,k', [(2, 1, 4, 6, 3), (1, 2, 6, 6, 3), (2, 4, 4, 4, 5)])
def test_repvgg_strided_grouped_training_form_matches_official(stride, groups, cin, cout, k):
    """Official RepVGG: every branch has the stride and groups; the 1x1 pads 0 (its centre = the kxk's);
    the identity BN only when in == out and stride 1."""
    block = randomize(RepVGGBlock(cin, cout, 'linear', stride=stride, groups=groups, kernel_size=k), seed=17)
    block = block.double().eval()
    x = random_input(2, cin, 7, 6, torch.float64, seed=5)
    d, o = block.rbr_dense, block.rbr_1x1
    assert d.conv.weight.shape == (cout, cin // groups, k, k) and o.conv.weight.shape == (cout, cin // groups, 1, 1)
    ref = bn_eval(F.conv2d(x, d.conv.weight, stride=stride, padding=k // 2, groups=groups), d.bn) \
        + bn_eval(F.conv2d(x, o.conv.weight, stride=stride, groups=groups), o.bn)
    if cin == cout and stride == 1:
        ref = ref + bn_eval(x, block.rbr_identity)
    else:
        assert block.rbr_identity is None
    assert ref.shape[-2:] == (math.ceil(7 / stride), math.ceil(6 / stride))
    assert (block.forward_train(x) - ref).abs().max() <= TOL64


@pytest.mark.parametrize('use_bn', [True, False], ids=['bn', 'plain'])
@pytest.mark.parametrize('k,stride,groups,with_idt', [(3, 1, 1, True), (5, 2, 2, False), (3, 1, 4, True)])
def test_acb_training_form_matches_acnet_formula(k, stride, groups, with_idt, use_bn):
    """ACNet §3: BN(kxk * x) + BN(kx1 * x) + BN(1xk * x), each padded by half its kernel
    [+ BN(x)]; with use_bn=False plain convs with bias [+ x]."""
    block = randomize(ACBlock(4, 4, k, 'linear', stride=stride, groups=groups, use_bn=use_bn, with_idt=with_idt),
                      seed=18).double().eval()
    x = random_input(2, 4, 6, 7, torch.float64, seed=6)
    shapes = {'square': ((k, k), (k // 2, k // 2)), 'ver': ((k, 1), (k // 2, 0)), 'hor': ((1, k), (0, k // 2))}
    ref = 0
    for name, (size, padding) in shapes.items():
        conv = getattr(block, f'{name}_conv')
        assert conv.weight.shape == (4, 4 // groups, *size)
        t = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding, groups=groups)
        ref = ref + (bn_eval(t, getattr(block, f'{name}_bn')) if use_bn else t)
        assert (conv.bias is None) == use_bn
    if with_idt:
        ref = ref + (bn_eval(x, block.idt_bn) if use_bn else x)
    assert ref.shape[-2:] == (math.ceil(6 / stride), math.ceil(7 / stride))
    assert (block.forward_train(x) - ref).abs().max() <= TOL64


def test_bias_free_training_forms_have_no_bias_anywhere():
    """bias=False: no conv, seq-conv or edge branch carries a bias; the fused conv has none either."""
    for block in (RRRB(4, bias=False), ECB(4, 4, 2.0, bias=False, with_idt=True), CollapsibleBlock(4, 6, 8, bias=False),
                  RepVGGBlock(4, 4, use_bn=False, bias=False), ACBlock(4, 4, use_bn=False, bias=False, with_idt=True)):
        names = [n for n, _ in block.named_parameters()]
        assert not any(n.split('.')[-1] in ('bias', 'b0', 'b1') for n in names), (type(block).__name__, names)
        fused = fused_copy(randomize(block, seed=1))
        assert getattr(fused, fused.deploy_key).bias is None


# ---------------------------------------------------------------- fusion.py against the convs it replaces

def _rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize('groups,cin,mid,cout,kernel,stride', [
    (1, 3, 5, 4, (3, 3), 1), (2, 4, 6, 8, (3, 3), 1), (3, 6, 9, 3, (3, 5), 2), (4, 4, 4, 4, (5, 3), 2),
    (2, 2, 4, 6, (1, 3), 1)])
def test_fuse_1x1_kxk_grouped_equals_running_both_convs(groups, cin, mid, cout, kernel, stride):
    """Grouped 1x1 (input zero-padded: bias padding) -> grouped (strided) kxk == one grouped kxk."""
    kh, kw = kernel
    w1, b1 = _rand(mid, cin // groups, 1, 1, seed=1), _rand(mid, seed=2)
    wk, bk = _rand(cout, mid // groups, kh, kw, seed=3), _rand(cout, seed=4)
    x = _rand(2, cin, 6, 7, seed=5)
    t = F.conv2d(F.pad(x, [kw // 2, kw // 2, kh // 2, kh // 2]), w1, b1, groups=groups)
    ref = F.conv2d(t, wk, bk, stride=stride, groups=groups)
    w, b = fuse_1x1_kxk(w1, b1, wk, bk, groups=groups)
    assert w.shape == (cout, cin // groups, kh, kw)
    out = F.conv2d(x, w, b, stride=stride, padding=(kh // 2, kw // 2), groups=groups)
    assert ref.shape == out.shape and (ref - out).abs().max() <= TOL64
    # the grouped result is the block-diagonal part of the dense composition
    wd, bd = fuse_1x1_kxk(dense_grouped(w1, groups), b1, dense_grouped(wk, groups), bk)
    assert (dense_grouped(w, groups) - wd).abs().max() <= TOL64 and (b - bd).abs().max() <= TOL64


@pytest.mark.parametrize('groups,cin,mid,cout,kernel,stride', [
    (1, 3, 5, 4, (3, 3), 1), (2, 4, 6, 8, (3, 1), 2), (3, 6, 9, 3, (5, 3), 1), (4, 4, 8, 4, (3, 3), 2)])
def test_fuse_kxk_1x1_grouped_equals_running_both_convs(groups, cin, mid, cout, kernel, stride):
    kh, kw = kernel
    wk, bk = _rand(mid, cin // groups, kh, kw, seed=6), _rand(mid, seed=7)
    w1, b1 = _rand(cout, mid // groups, 1, 1, seed=8), _rand(cout, seed=9)
    x = _rand(2, cin, 5, 8, seed=10)
    pad = (kh // 2, kw // 2)
    ref = F.conv2d(F.conv2d(x, wk, bk, stride=stride, padding=pad, groups=groups), w1, b1, groups=groups)
    w, b = fuse_kxk_1x1(wk, bk, w1, b1, groups=groups)
    out = F.conv2d(x, w, b, stride=stride, padding=pad, groups=groups)
    assert ref.shape == out.shape and (ref - out).abs().max() <= TOL64


def test_fuse_sequential_refuses_mismatched_groups():
    with pytest.raises(ValueError, match='groups'):
        fuse_1x1_kxk(_rand(6, 2, 1, 1, seed=0), None, _rand(4, 3, 3, 3, seed=1), None, groups=3)
    with pytest.raises(ValueError, match='groups'):
        fuse_kxk_1x1(_rand(6, 2, 3, 3, seed=0), None, _rand(4, 3, 1, 1, seed=1), None, groups=4)


@pytest.mark.parametrize('small,big', [((1, 3), (3, 3)), ((3, 1), (3, 3)), ((1, 1), (3, 3)), ((1, 5), (5, 5)),
                                       ((3, 5), (5, 7)), ((1, 1), (5, 3)), ((3, 3), (3, 3))])
@pytest.mark.parametrize('stride', [1, 2])
def test_pad_kernel_non_square_equals_the_small_conv(small, big, stride):
    """A (kh', kw') conv padded by half its kernel == the centred zero-padded (kh, kw) conv, strided too."""
    w = _rand(3, 2, *small, seed=11)
    x = _rand(1, 2, 6, 5, seed=12)
    ref = F.conv2d(x, w, stride=stride, padding=(small[0] // 2, small[1] // 2))
    wp = pad_kernel(w, big)
    assert wp.shape == (3, 2, *big)
    out = F.conv2d(x, wp, stride=stride, padding=(big[0] // 2, big[1] // 2))
    assert ref.shape == out.shape and (ref - out).abs().max() <= TOL64
    if big[0] == big[1]:  # an int size is the square pair
        assert torch.equal(pad_kernel(w, big[0]), wp)


@pytest.mark.parametrize('small,big', [((2, 2), (3, 3)), ((5, 5), (3, 3)), ((1, 2), (3, 3)), ((3, 1), (4, 3))])
def test_pad_kernel_refuses_kernels_whose_centres_cannot_align(small, big):
    with pytest.raises(ValueError, match='cannot centre'):
        pad_kernel(_rand(1, 1, *small, seed=0), big)


def test_merge_parallel_of_strided_branches_equals_their_sum():
    """3x3 (pad 1) + 1x3 (pad (0, 1)) + 3x1 (pad (1, 0)) + 1x1 (pad 0), all stride 2 == one 3x3."""
    x = _rand(2, 3, 7, 6, seed=13)
    branches = [(_rand(4, 3, *size, seed=i), _rand(4, seed=10 + i)) for i, size in
                enumerate([(3, 3), (1, 3), (3, 1), (1, 1)])]
    ref = sum(F.conv2d(x, w, b, stride=2, padding=(w.shape[2] // 2, w.shape[3] // 2)) for w, b in branches)
    w, b = merge_parallel(branches, 3)
    out = F.conv2d(x, w, b, stride=2, padding=1)
    assert out.shape[-2:] == (4, 3) and (ref - out).abs().max() <= TOL64
    assert merge_parallel([(branches[0][0], None)], 3)[1] is None


@pytest.mark.parametrize('channels,groups,kernel', [(6, 1, (3, 3)), (6, 2, (3, 3)), (6, 3, (5, 3)), (6, 6, (1, 5)),
                                                    (4, 4, (3, 3)), (1, 1, (1, 1))])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
def test_identity_kernel_is_the_identity_map(channels, groups, kernel, dtype):
    x = _rand(2, channels, 5, 4, seed=14).to(dtype)
    w = identity_kernel(channels, kernel, x, groups=groups)
    assert w.shape == (channels, channels // groups, *kernel) and w.dtype == dtype
    assert w.sum() == channels  # one tap per output channel
    y = F.conv2d(x, w, padding=(kernel[0] // 2, kernel[1] // 2), groups=groups)
    assert torch.equal(y, x)  # exactly: one 1 per output, everything else 0


def test_identity_kernel_refuses_even_kernels_and_bad_groups():
    like = torch.zeros(1)
    with pytest.raises(ValueError, match='centre'):
        identity_kernel(4, 2, like)
    with pytest.raises(ValueError, match='centre'):
        identity_kernel(4, (3, 4), like)
    with pytest.raises(ValueError, match='groups'):
        identity_kernel(6, 3, like, groups=4)


@pytest.mark.parametrize('cin,cout,groups', [(4, 6, 2), (6, 6, 3), (5, 5, 5), (3, 6, 3), (4, 4, 1)])
def test_dense_grouped_equals_the_grouped_conv(cin, cout, groups):
    w = _rand(cout, cin // groups, 3, 1, seed=15)
    x = _rand(1, cin, 4, 5, seed=16)
    ref = F.conv2d(x, w, padding=(1, 0), groups=groups)
    assert (F.conv2d(x, dense_grouped(w, groups), padding=(1, 0)) - ref).abs().max() <= TOL64
    if cin == cout == groups:
        assert torch.equal(dense_depthwise(w), dense_grouped(w, groups))


def test_fuse_bn_equals_the_eval_batchnorm():
    bn = randomize(nn.BatchNorm2d(4), seed=19).double().eval()
    w, b = _rand(4, 2, 1, 3, seed=20), _rand(4, seed=21)
    x = _rand(2, 4, 5, 5, seed=22)
    ref = bn(F.conv2d(x, w, b, padding=(0, 1), groups=2))
    wf, bf = fuse_bn(w, b, bn)
    assert (F.conv2d(x, wf, bf, padding=(0, 1), groups=2) - ref).abs().max() <= TOL64


# ---------------------------------------------------------------- negative controls

class ZeroPaddedRRRB(RRRB):
    """A deliberately wrong RRRB: the expanded map is zero-padded instead of bias-padded."""

    def forward_train(self, x):
        t = F.conv2d(x, self.expand_conv.weight, self.expand_conv.bias)
        u = self.fea_conv(F.pad(t, [1, 1, 1, 1])) + t
        return self.reduce_conv(u) + x


def test_negative_control_zero_padding_breaks_the_border():
    block = randomize(ZeroPaddedRRRB(6, ratio=2), seed=21).double().eval()
    x = random_input(2, 6, 7, 9, torch.float64, seed=5)
    fused = fused_copy(block)
    with torch.no_grad():
        diff = (block(x) - fused(x)).abs()
    # the interior agrees (same merge math) ...
    assert diff[..., 1:-1, 1:-1].max() <= TOL64
    # ... the 1-pixel border does not, by orders of magnitude more than the tolerance
    assert diff.max() > 1e6 * TOL64
    assert diff.max() > 1e-2 * block(x).abs().max()
    with pytest.raises(AssertionError):
        check_fused_equals_training(block, x)
    with pytest.raises(AssertionError):
        check_fused_equals_training(block.float(), x.float())


class NoInnerIdentityRRRB(RRRB):
    """A deliberately wrong merge: forgets RRRB's inner identity."""

    def fuse(self):
        w, b = fuse_1x1_kxk(self.expand_conv.weight, self.expand_conv.bias, self.fea_conv.weight, self.fea_conv.bias)
        w, b = fuse_kxk_1x1(w, b, self.reduce_conv.weight, self.reduce_conv.bias)
        w = w.clone()
        w[range(self.out_channels), range(self.out_channels), 1, 1] += 1
        return w, b


def test_negative_control_wrong_merge_is_caught():
    block = randomize(NoInnerIdentityRRRB(4), seed=22).double()
    with pytest.raises(AssertionError):
        check_fused_equals_training(block, random_input(1, 4, 5, 5, torch.float64, seed=6))


class MisalignedACBlock(ACBlock):
    """A deliberately wrong merge: the 1xk kernel is padded into the top row instead of the centre."""

    def fuse(self):
        w, b = super().fuse()
        k = self.kernel_size[0]
        hor_w, hor_b = fuse_bn(self.hor_conv.weight, None, self.hor_bn)
        wrong = F.pad(hor_w, [0, 0, 0, k - 1])  # rows: 0 above, k - 1 below
        return w - pad_kernel(hor_w, k) + wrong, b


@pytest.mark.parametrize('stride', [1, 2])
def test_negative_control_misaligned_1xk_is_caught(stride):
    block = randomize(MisalignedACBlock(4, 4, 3, 'linear', stride=stride), seed=23).double().eval()
    x = random_input(2, 4, 7, 9, torch.float64, seed=7)
    fused = fused_copy(block)
    with torch.no_grad():
        diff = (block(x) - fused(x)).abs()
    assert diff.max() > 1e-2 * block(x).abs().max()  # off by a whole kernel row, not by rounding
    with pytest.raises(AssertionError):
        check_fused_equals_training(block, x)
    with pytest.raises(AssertionError):
        check_fused_equals_training(block.float(), x.float())


def wrong_group_identity(channels, kernel_size, like, groups):
    """A deliberately wrong grouped identity: the 1 sits at the group index, not at i mod (C / groups)."""
    per_group = channels // groups
    w = like.new_zeros(channels, per_group, kernel_size, kernel_size)
    idx = torch.arange(channels)
    w[idx, (idx // per_group) % per_group, kernel_size // 2, kernel_size // 2] = 1
    return w


class WrongGroupIdentityRepVGG(RepVGGBlock):
    def fuse(self):
        w, b = super().fuse()
        right = fuse_bn(identity_kernel(self.in_channels, 3, w, self.groups), None, self.rbr_identity)
        wrong = fuse_bn(wrong_group_identity(self.in_channels, 3, w, self.groups), None, self.rbr_identity)
        return w - right[0] + wrong[0], b


def test_negative_control_wrong_group_index_in_identity_is_caught():
    x = random_input(2, 6, 5, 6, torch.float64, seed=8)
    assert not torch.equal(F.conv2d(x, wrong_group_identity(6, 3, x, 2), padding=1, groups=2), x)
    block = randomize(WrongGroupIdentityRepVGG(6, 6, 'linear', groups=2), seed=24).double().eval()
    with pytest.raises(AssertionError):
        check_fused_equals_training(block, x)
    with pytest.raises(AssertionError):
        check_fused_equals_training(block.float(), x.float())
    # the same block with the right identity passes
    check_fused_equals_training(randomize(RepVGGBlock(6, 6, 'linear', groups=2), seed=24).double(), x)


def test_negative_control_strided_output_size_is_checked():
    """A 1x1 branch padded like the 3x3 (a common porting slip) breaks the strided alignment."""
    w3, w1 = _rand(4, 4, 3, 3, seed=25), _rand(4, 4, 1, 1, seed=26)
    x = _rand(1, 4, 7, 7, seed=27)
    good = F.conv2d(x, w3, stride=2, padding=1) + F.conv2d(x, w1, stride=2)
    slipped = F.conv2d(x, w1, stride=2, padding=1)  # centred on input 2i - 1, output one larger
    assert slipped.shape[-2:] != good.shape[-2:]
    merged = F.conv2d(x, merge_parallel([(w3, None), (w1, None)], 3)[0], stride=2, padding=1)
    assert (merged - good).abs().max() <= TOL64


def test_bias_free_block_fusing_to_a_bias_raises():
    class Leaky(RepVGGBlock):
        def fuse(self):
            w, b = super().fuse()
            return w, torch.ones(self.out_channels, dtype=w.dtype)

    block = randomize(Leaky(4, 4, use_bn=False, bias=False), seed=0)
    with pytest.raises(RuntimeError, match='bias=False'):
        reparameterize(block)
    assert not block.deploy


def test_fuse_returning_a_wrong_shape_raises():
    class Wrong(RepVGGBlock):
        def fuse(self):
            w, b = super().fuse()
            return w[:, :1], b  # would broadcast silently into the deploy weight

    with pytest.raises(RuntimeError, match='kernel'):
        reparameterize(randomize(Wrong(4, 4), seed=0))


# ---------------------------------------------------------------- arguments a block cannot honour

REFUSALS = {
    'collapsible_idt_in_ne_out': (lambda: CollapsibleBlock(3, 8, with_idt=True), 'with_idt'),
    'collapsible_idt_deploy': (lambda: CollapsibleBlock(3, 8, 16, with_idt=True, deploy=True), 'with_idt'),
    'collapsible_idt_not_bool': (lambda: CollapsibleBlock(4, 4, 16, with_idt='yes'), 'with_idt'),
    'collapsible_in0': (lambda: CollapsibleBlock(0, 4), 'in_channels'),
    'collapsible_out_neg': (lambda: CollapsibleBlock(4, -1), 'out_channels'),
    'collapsible_feat0': (lambda: CollapsibleBlock(4, 4, 0), 'feature_size'),
    'collapsible_feat_float': (lambda: CollapsibleBlock(4, 4, 2.5), 'feature_size'),
    'collapsible_k2': (lambda: CollapsibleBlock(4, 4, 8, kernel_size=2), 'kernel_size'),
    'collapsible_act': (lambda: CollapsibleBlock(4, 4, 8, 'swish'), 'act_type'),
    'rrrb_ch0': (lambda: RRRB(0), 'channels'),
    'rrrb_ratio0': (lambda: RRRB(4, ratio=0), 'ratio'),
    'rrrb_ratio_neg': (lambda: RRRB(4, ratio=-2), 'ratio'),
    'rrrb_ratio_tiny': (lambda: RRRB(4, ratio=0.1), 'ratio'),
    'ecb_idt_in_ne_out': (lambda: ECB(4, 7, with_idt=True), 'with_idt'),
    'ecb_dm0': (lambda: ECB(4, 4, 0), 'depth_multiplier'),
    'ecb_dm_tiny': (lambda: ECB(4, 4, 0.1), 'depth_multiplier'),
    'repvgg_idt_in_ne_out': (lambda: RepVGGBlock(4, 6, with_idt=True), 'with_idt'),
    'repvgg_idt_stride': (lambda: RepVGGBlock(4, 4, stride=2, with_idt=True), 'with_idt'),
    'repvgg_nobias_bn': (lambda: RepVGGBlock(4, 4, bias=False), 'bias'),
    'repvgg_groups_divide': (lambda: RepVGGBlock(4, 6, groups=4), 'groups'),
    'repvgg_groups0': (lambda: RepVGGBlock(4, 4, groups=0), 'groups'),
    'repvgg_stride0': (lambda: RepVGGBlock(4, 4, stride=0), 'stride'),
    'repvgg_stride_gt_kernel': (lambda: RepVGGBlock(4, 4, stride=4), 'stride'),
    'repvgg_stride_float': (lambda: RepVGGBlock(4, 4, stride=1.5), 'stride'),
    'repvgg_k4': (lambda: RepVGGBlock(4, 4, kernel_size=4), 'kernel_size'),
    'repvgg_use_bn_str': (lambda: RepVGGBlock(4, 4, use_bn='no'), 'use_bn'),
    'acb_idt_in_ne_out': (lambda: ACBlock(4, 6, with_idt=True), 'with_idt'),
    'acb_idt_stride': (lambda: ACBlock(4, 4, stride=2, with_idt=True), 'with_idt'),
    'acb_nobias_bn': (lambda: ACBlock(4, 4, bias=False), 'bias'),
    'acb_k1': (lambda: ACBlock(4, 4, 1), 'kernel_size'),
    'acb_k2': (lambda: ACBlock(4, 4, 2), 'kernel_size'),
    'acb_k_nonsquare': (lambda: ACBlock(4, 4, (3, 5)), 'kernel_size'),
    'acb_k_triple': (lambda: ACBlock(4, 4, (3, 3, 3)), 'kernel_size'),
    'acb_groups': (lambda: ACBlock(6, 4, groups=3), 'groups'),
    'acb_stride_gt_kernel': (lambda: ACBlock(4, 4, 3, stride=5), 'stride'),
}


@pytest.mark.parametrize('case', list(REFUSALS))
def test_impossible_arguments_are_refused_in_one_line(case):
    make, arg = REFUSALS[case]
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert '\n' not in message and arg in message, message
    if arg != 'act_type':  # make_activation's message names the argument, not the block
        assert message.split(':')[0] in ('CollapsibleBlock', 'RRRB', 'ECB', 'RepVGGBlock', 'ACBlock'), message
    if case.endswith('nobias_bn'):
        assert 'use_bn=False' in message


def test_with_idt_defaults():
    """None: the identity exactly when possible (LRSRN, RepVGG official); ECB and ACBlock default to none."""
    assert CollapsibleBlock(4, 4, 8).with_idt and not CollapsibleBlock(4, 6, 8).with_idt
    assert not CollapsibleBlock(4, 4, 8, with_idt=False).with_idt
    assert RepVGGBlock(4, 4).rbr_identity is not None and RepVGGBlock(4, 4, stride=2).rbr_identity is None
    assert RepVGGBlock(4, 4, with_idt=False).rbr_identity is None
    assert not ECB(4, 4).with_idt and not ACBlock(4, 4).with_idt and ACBlock(4, 4, with_idt=None).with_idt
    assert not ACBlock(4, 4, stride=2, with_idt=None).with_idt


# ---------------------------------------------------------------- the deploy switch

@pytest.mark.parametrize('case', list(CASES))
def test_reparameterize_is_idempotent(case):
    in_ch, factory = CASES[case]
    model = nn.Sequential(randomize(factory('prelu'), seed=1), nn.Identity()).double().eval()
    assert rtsr_arch.reparameterize(model) is model
    block = model[0]
    assert block.deploy
    params = {k: v for k, v in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = random_input(1, in_ch, 5, 7, torch.float64, seed=0)
    y = model(x)
    assert rtsr_arch.reparameterize(model) is model
    assert rtsr_arch.reparameterize(block) is block
    assert {k: v for k, v in model.named_parameters()}.keys() == params.keys()
    for k, p in model.named_parameters():
        assert p is params[k], k  # the same Parameter objects: nothing rebuilt
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert torch.equal(model(x), y)


class AuxHeadNet(nn.Module):
    """A network with its own transform: drops a training-only auxiliary head, then lets the
    default walk fuse its blocks."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(RepVGGBlock(4, 4, 'relu'), nn.Sequential(ACBlock(4, 4, 3, 'prelu')), RRRB(4))
        self.aux_head = nn.Conv2d(4, 3, 1)  # training-only (e.g. a distillation head)
        self.calls = 0

    def forward(self, x):
        return self.body(x)

    def reparameterize(self):
        self.calls += 1
        if hasattr(self, 'aux_head'):
            del self.aux_head
        reparameterize_children(self)
        return self


class OpaqueNet(nn.Module):
    """Defines reparameterize() but leaves its children alone: the walk must not descend into it."""

    def __init__(self):
        super().__init__()
        self.block = RepVGGBlock(4, 4)
        self.done = False

    def forward(self, x):
        return self.block(x)

    def reparameterize(self):
        self.done = True


def test_reparameterize_honours_a_module_own_method():
    model = nn.Sequential(randomize(AuxHeadNet(), seed=5), OpaqueNet(), ECB(4, 4)).double().eval()
    randomize(model[2], seed=6)
    x = random_input(2, 4, 5, 6, torch.float64, seed=3)
    with torch.no_grad():
        before = model(x)
    assert rtsr_arch.reparameterize(model) is model
    net = model[0]
    assert net.calls == 1 and not hasattr(net, 'aux_head')
    assert all(isinstance(m, ReparamBlock) and m.deploy for m in (net.body[0], net.body[1][0], net.body[2]))
    assert model[1].done and not model[1].block.deploy  # not descended into
    assert model[2].deploy  # plain children are descended into
    assert not any(k.startswith('0.aux_head') for k in model.state_dict())
    with torch.no_grad():
        after = model(x)
    assert_fused_close(before, after)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert rtsr_arch.reparameterize(model) is model  # idempotent
    assert net.calls == 2 and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # the root itself is honoured too
    root = AuxHeadNet()
    assert reparameterize(root) is root and root.calls == 1 and root.body[0].deploy


def test_reparameterize_children_skips_the_module_itself():
    block = RepVGGBlock(4, 4)
    holder = nn.Sequential(block)
    assert reparameterize_children(block) is block and not block.deploy  # only its children (branches)
    assert reparameterize_children(holder) is holder and block.deploy
    assert rtsr_arch.reparameterize is reparameterize


@pytest.mark.parametrize('act', ['linear', 'prelu'])
@pytest.mark.parametrize('case', list(CASES))
def test_deploy_construction_matches_reparameterized_layout(case, act):
    in_ch, factory = CASES[case]
    train = randomize(factory(act), seed=2).double().eval()
    fused = fused_copy(train)
    built = factory(act, deploy=True).double().eval()
    cls = type(train)
    sd_fused, sd_built = fused.state_dict(), built.state_dict()
    assert list(sd_fused) == list(sd_built)
    assert all(sd_fused[k].shape == sd_built[k].shape for k in sd_fused)
    # the official deploy layout: one conv under the paper's key (+ the PReLU slopes)
    key = DEPLOY_KEYS[cls]
    expected = {f'{key}.weight'} | ({f'{key}.bias'} if train.use_bias else set()) \
        | ({'act.weight'} if act == 'prelu' else set())
    assert set(sd_built) == expected
    conv = getattr(built, key)
    assert sd_built[f'{key}.weight'].shape == (train.out_channels, train.in_channels // train.groups,
                                               *train.kernel_size)
    kh, kw = train.kernel_size
    assert (conv.stride, conv.padding, conv.groups) == (train.stride, (kh // 2, kw // 2), train.groups)
    built.load_state_dict(sd_fused, strict=True)
    x = random_input(2, in_ch, 4, 5, torch.float64, seed=1)
    with torch.no_grad():
        assert torch.equal(built(x), fused(x))
        assert_fused_close(train(x), built(x))
    assert rtsr_arch.reparameterize(built) is built and set(built.state_dict()) == expected


def test_deploy_keys_are_the_official_ones():
    assert CollapsibleBlock.deploy_key == 'conv3x3'
    assert RRRB.deploy_key == 'rep_conv'
    assert RepVGGBlock.deploy_key == 'rbr_reparam'
    assert ECB.deploy_key == 'rbr_reparam'
    assert ACBlock.deploy_key == 'fused_conv'
    for cls in DEPLOY_KEYS:
        assert issubclass(cls, ReparamBlock)


def test_training_layout_uses_official_names():
    assert {k.split('.')[0] for k in RRRB(4).state_dict()} == {'expand_conv', 'fea_conv', 'reduce_conv'}
    assert {k.split('.')[0] for k in ECB(4, 4, 2.0).state_dict()} == {
        'conv3x3', 'conv1x1_3x3', 'conv1x1_sbx', 'conv1x1_sby', 'conv1x1_lpl', 'act'}
    assert {k.split('.')[0] for k in RepVGGBlock(4, 4).state_dict()} == {'rbr_dense', 'rbr_1x1', 'rbr_identity'}
    assert set(RepVGGBlock(4, 4, use_bn=False, bias=False).state_dict()) == {'rbr_dense.conv.weight',
                                                                             'rbr_1x1.conv.weight'}
    assert {k.split('.')[0] for k in ACBlock(4, 4).state_dict()} == {
        'square_conv', 'square_bn', 'ver_conv', 'ver_bn', 'hor_conv', 'hor_bn'}
    acb = ACBlock(4, 6, 5)
    assert acb.square_conv.weight.shape == (6, 4, 5, 5) and acb.square_conv.bias is None
    assert acb.ver_conv.weight.shape == (6, 4, 5, 1) and acb.hor_conv.weight.shape == (6, 4, 1, 5)
    assert {k.split('.')[0] for k in ACBlock(4, 4, with_idt=True).state_dict()} >= {'idt_bn'}
    assert set(ACBlock(4, 4, use_bn=False, bias=False).state_dict()) == {
        'square_conv.weight', 'ver_conv.weight', 'hor_conv.weight'}
    assert set(ECB(4, 4, 2.0, 'linear', bias=False).state_dict()) == {
        'conv3x3.weight', 'conv1x1_3x3.k0', 'conv1x1_3x3.k1'} | {
        f'conv1x1_{e}.{k}' for e in ('sbx', 'sby', 'lpl') for k in ('k0', 'scale', 'mask')}
    assert set(RRRB(4, bias=False).state_dict()) == {'expand_conv.weight', 'fea_conv.weight', 'reduce_conv.weight'}
    assert set(CollapsibleBlock(3, 8, 16).state_dict()) == {
        'conv0.weight', 'conv0.bias', 'conv1.weight', 'conv1.bias', 'conv1_res.weight', 'conv1_res.bias'}


@pytest.mark.parametrize('case', list(CASES))
def test_gradients_flow_through_training_form(case):
    in_ch, factory = CASES[case]
    block = randomize(factory('prelu'), seed=3).double().train()
    x = random_input(2, in_ch, 5, 6, torch.float64, seed=2).requires_grad_(True)
    weight = random_input(*block(x).shape, torch.float64, seed=9)
    (block(x) * weight).sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0
    named = list(block.named_parameters())
    assert len(named) >= (4 if block.use_bias else 3)
    for name, p in named:
        assert p.grad is not None, f'{name} gets no gradient'
        assert torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, f'{name} has a zero gradient'


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=['f32', 'f64', 'f16', 'bf16'])
@pytest.mark.parametrize('case', ['collapsible_res', 'rrrb_2', 'repvgg_same', 'ecb_idt_dm2', 'acb_k5_g2_s2',
                                  'ecb_idt_nobias'])
def test_fused_block_keeps_dtype_and_device(case, dtype):
    in_ch, factory = CASES[case]
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        block = randomize(factory('prelu'), seed=4).to(device=device, dtype=dtype).eval()
        reference = copy.deepcopy(block).double()
        rtsr_arch.reparameterize(block)
        conv = getattr(block, block.deploy_key)
        tensors = list(block.parameters()) + list(block.buffers())
        assert len(tensors) == (3 if block.use_bias else 2)  # weight, bias, PReLU slopes
        for t in tensors:
            assert t.dtype == dtype and t.device.type == device
        assert conv.weight.requires_grad and block.training is False
        # the merge runs in float64 and is rounded once to the block's dtype
        fused64 = getattr(fused_copy(reference), block.deploy_key)
        assert torch.equal(conv.weight, fused64.weight.to(dtype))
        assert conv.bias is None if not block.use_bias else torch.equal(conv.bias, fused64.bias.to(dtype))
        if dtype in (torch.float32, torch.float64):
            x = random_input(1, in_ch, 4, 5, dtype, seed=3).to(device)
            # no TF32 on GPUs: it rounds float32 convs to 10-bit mantissas
            with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                assert_fused_close(reference(x.double()).to(dtype), block(x))


# ---------------------------------------------------------------- property tests

DTYPES = st.sampled_from([torch.float64, torch.float32])
HW = st.tuples(st.integers(1, 12), st.integers(1, 12))
PROPERTY = settings(max_examples=25, deadline=None, database=None, derandomize=True)


def run_property(block, batch, in_ch, hw, dtype, seed):
    block = randomize(block, seed=seed).to(dtype)
    x = random_input(batch, in_ch, *hw, dtype, seed=seed + 1)
    check_fused_equals_training(block, x)


@PROPERTY
@given(cin=st.integers(1, 12), cout=st.integers(1, 12), feat=st.integers(1, 24), hw=HW, batch=st.integers(1, 2),
       with_idt=st.sampled_from([None, True, False]), res_conv=st.booleans(), kernel=st.sampled_from([1, 3, 5]),
       act=st.sampled_from(['linear', 'prelu', 'gelu']), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_collapsible(cin, cout, feat, hw, batch, with_idt, res_conv, kernel, act, dtype, seed):
    def make():
        return CollapsibleBlock(cin, cout, feat, act, with_idt, res_conv, kernel_size=kernel)

    if with_idt and cin != cout:  # refused, not silently dropped
        with pytest.raises(ValueError, match='with_idt'):
            make()
        return
    block = make()
    assert block.with_idt == (cin == cout if with_idt is None else with_idt)
    run_property(block, batch, cin, hw, dtype, seed)


@PROPERTY
@given(ch=st.integers(1, 12), ratio=st.sampled_from([1, 1.5, 2, 3]), hw=HW, batch=st.integers(1, 2),
       act=st.sampled_from(['linear', 'lrelu', 'silu']), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_rrrb(ch, ratio, hw, batch, act, dtype, seed):
    run_property(RRRB(ch, ratio, act), batch, ch, hw, dtype, seed)


@PROPERTY
@given(cin=st.integers(1, 12), same=st.booleans(), cout=st.integers(1, 12), hw=HW, batch=st.integers(1, 2),
       act=st.sampled_from(['linear', 'relu', 'softplus']), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_repvgg(cin, same, cout, hw, batch, act, dtype, seed):
    run_property(RepVGGBlock(cin, cin if same else cout, act), batch, cin, hw, dtype, seed)


@PROPERTY
@given(cin=st.integers(1, 12), same=st.booleans(), cout=st.integers(1, 12), dm=st.sampled_from([1.0, 2.0, 3.0]),
       with_idt=st.booleans(), hw=HW, batch=st.integers(1, 2), act=st.sampled_from(['prelu', 'linear', 'rrelu']),
       dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_ecb(cin, same, cout, dm, with_idt, hw, batch, act, dtype, seed):
    cout = cin if same else cout
    if with_idt and cin != cout:
        with pytest.raises(ValueError, match='with_idt'):
            ECB(cin, cout, dm, act, with_idt)
        return
    run_property(ECB(cin, cout, dm, act, with_idt), batch, cin, hw, dtype, seed)


PROPERTY_NEW = settings(max_examples=15, deadline=None, database=None, derandomize=True)


@PROPERTY_NEW
@given(groups=st.integers(1, 3), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), k=st.sampled_from([3, 5]),
       stride=st.sampled_from([1, 2]), use_bn=st.booleans(), bias=st.booleans(),
       with_idt=st.sampled_from([None, False, True]), hw=HW, batch=st.integers(1, 2),
       act=st.sampled_from(['linear', 'prelu']), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_acb(groups, cin_g, cout_g, k, stride, use_bn, bias, with_idt, hw, batch, act, dtype, seed):
    cin, cout = groups * cin_g, groups * cout_g
    kwargs = dict(stride=stride, groups=groups, use_bn=use_bn, bias=bias, with_idt=with_idt)
    if (use_bn and not bias) or (with_idt and (cin != cout or stride != 1)):
        with pytest.raises(ValueError):
            ACBlock(cin, cout, k, act, **kwargs)
        return
    block = ACBlock(cin, cout, k, act, **kwargs)
    run_property(block, batch, cin, hw, dtype, seed)
    assert block(random_input(batch, cin, *hw, dtype, seed)).shape[-2:] == out_size(block, *hw)


@PROPERTY_NEW
@given(groups=st.integers(1, 3), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), k=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]), use_bn=st.booleans(), hw=HW, batch=st.integers(1, 2),
       act=st.sampled_from(['relu', 'linear']), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_repvgg_grouped_strided(groups, cin_g, cout_g, k, stride, use_bn, hw, batch, act, dtype, seed):
    cin, cout = groups * cin_g, groups * cout_g
    if stride > k:
        with pytest.raises(ValueError, match='stride'):
            RepVGGBlock(cin, cout, act, kernel_size=k, stride=stride, groups=groups)
        return
    block = RepVGGBlock(cin, cout, act, kernel_size=k, stride=stride, groups=groups, use_bn=use_bn, bias=use_bn or
                        bool(seed % 2))
    assert (block.rbr_identity is not None) == (cin == cout and stride == 1)
    run_property(block, batch, cin, hw, dtype, seed)


@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(groups=st.integers(1, 3), cin_g=st.integers(1, 3), mid_g=st.integers(1, 3), cout_g=st.integers(1, 3),
       kh=st.sampled_from([1, 3, 5]), kw=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]),
       first=st.sampled_from(['1x1', 'kxk']), hw=HW, seed=st.integers(0, 2**16))
def test_property_fusion_grouped_sequential(groups, cin_g, mid_g, cout_g, kh, kw, stride, first, hw, seed):
    """fuse_1x1_kxk / fuse_kxk_1x1 with groups, non-square kernels and stride == running both convs."""
    cin, mid, cout = groups * cin_g, groups * mid_g, groups * cout_g
    x = _rand(1, cin, *hw, seed=seed)
    pad = (kh // 2, kw // 2)
    if first == '1x1':
        w1, b1 = _rand(mid, cin_g, 1, 1, seed=seed + 1), _rand(mid, seed=seed + 2)
        wk, bk = _rand(cout, mid_g, kh, kw, seed=seed + 3), _rand(cout, seed=seed + 4)
        t = F.conv2d(F.pad(x, [pad[1], pad[1], pad[0], pad[0]]), w1, b1, groups=groups)
        ref = F.conv2d(t, wk, bk, stride=stride, groups=groups)
        w, b = fuse_1x1_kxk(w1, b1, wk, bk, groups=groups)
    else:
        wk, bk = _rand(mid, cin_g, kh, kw, seed=seed + 1), _rand(mid, seed=seed + 2)
        w1, b1 = _rand(cout, mid_g, 1, 1, seed=seed + 3), _rand(cout, seed=seed + 4)
        ref = F.conv2d(F.conv2d(x, wk, bk, stride=stride, padding=pad, groups=groups), w1, b1, groups=groups)
        w, b = fuse_kxk_1x1(wk, bk, w1, b1, groups=groups)
    out = F.conv2d(x, w, b, stride=stride, padding=pad, groups=groups)
    assert out.shape == ref.shape == (1, cout, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))
    assert (out - ref).abs().max() <= TOL64 * max(1.0, ref.abs().max().item())


# ---------------------------------------------------------------- the shared helpers themselves

def test_randomize_leaves_no_default_initialization():
    from rtsr_arch.archs.layers import LayerNorm2d

    model = nn.Sequential(RepVGGBlock(4, 4, 'prelu'), LayerNorm2d(4), ECB(4, 4, 2.0, 'prelu'))
    fresh = copy.deepcopy(model)
    randomize(model, seed=0)
    for (name, p), p0 in zip(model.named_parameters(), fresh.parameters()):
        assert not torch.isclose(p, p0).any(), f'{name} kept (part of) its initial value'
    for m, m0 in zip(model.modules(), fresh.modules()):
        if isinstance(m, nn.BatchNorm2d):
            assert (m.running_var > 0).all() and not torch.isclose(m.running_var, m0.running_var).any()
            assert not torch.isclose(m.running_mean, m0.running_mean).any()
    assert torch.equal(model[2].conv1x1_sbx.mask, fresh[2].conv1x1_sbx.mask)  # structure is kept
    again = randomize(copy.deepcopy(fresh), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    other = randomize(copy.deepcopy(fresh), seed=1)
    assert not torch.equal(other[0].rbr_dense.conv.weight, model[0].rbr_dense.conv.weight)


def test_photo_helper():
    x = photo('astronaut', 7, 9, batch=2)
    assert x.shape == (2, 3, 7, 9) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.01 and not torch.equal(x[0], x[1])
    gray = photo('camera', 5, 6, dtype=torch.float64)
    assert gray.dtype == torch.float64 and torch.equal(gray[:, 0], gray[:, 2])
    with pytest.raises(ValueError):
        photo('astronaut', 1000, 10)


# ---------------------------------------------------------------- RVSR RepConv specifics

def test_rvsr_repconv_training_form_matches_official_formula():
    """huai-chang/RVSR models/train_arch.py RepConv: per branch t = W0 x + b0, reduce(K1 * pad_b0(t) + b1)
    (no inner identity, unlike RRRB); plus res_conv3x3(x) (pad 1) + res_conv1x1(x) + x."""
    block = randomize(RVSRRepConv(4, ratio=2), seed=21).double()
    x = random_input(2, 4, 5, 6, torch.float64, seed=7)
    ref = F.conv2d(x, block.res_conv3x3.weight, block.res_conv3x3.bias, padding=1) \
        + F.conv2d(x, block.res_conv1x1.weight, block.res_conv1x1.bias) + x
    for suffix in ('', '1'):
        e, f, r = (getattr(block, f'{name}{suffix}_conv') for name in ('expand', 'fea', 'reduce'))
        assert e.weight.shape == (8, 4, 1, 1) and f.weight.shape == (8, 8, 3, 3) and r.weight.shape == (4, 8, 1, 1)
        t = F.conv2d(x, e.weight, e.bias)
        ref = ref + F.conv2d(F.conv2d(pad_with(t, e.bias), f.weight, f.bias), r.weight, r.bias)
    assert (block.forward_train(x) - ref).abs().max() <= TOL64
    assert {k.split('.')[0] for k in block.state_dict()} == {
        'expand_conv', 'fea_conv', 'reduce_conv', 'expand1_conv', 'fea1_conv', 'reduce1_conv', 'res_conv3x3',
        'res_conv1x1'}
    assert RVSRRepConv.deploy_key == 'rep_conv'


def test_rvsr_repconv_every_branch_matters_and_zero_padding_is_caught():
    """Dropping any branch changes the output; padding the expand output with zeros instead of its
    bias breaks the fusion on the border only."""
    block = randomize(RVSRRepConv(4, ratio=2), seed=22).double().eval()
    x = random_input(1, 4, 6, 7, torch.float64, seed=8)
    y = block.forward_train(x)
    for name in ('expand_conv', 'fea1_conv', 'res_conv3x3', 'res_conv1x1'):
        ablated = copy.deepcopy(block)
        for p in getattr(ablated, name).parameters():
            p.data.zero_()
        assert (ablated.forward_train(x) - y).abs().max() > 1e-3, name
    fused = fused_copy(block)
    zero_padded = copy.deepcopy(block)
    for e in (zero_padded.expand_conv, zero_padded.expand1_conv):
        e.padding = (0, 0)
    for f in (zero_padded.fea_conv, zero_padded.fea1_conv):
        f.padding = (1, 1)
    diff = (zero_padded.forward_train(x) - linear_part(fused, x)).abs()
    assert diff[..., 1:-1, 1:-1].max() <= TOL64 and diff.max() > 1e-3


@pytest.mark.parametrize('make, arg', [(lambda: RVSRRepConv(0), 'channels'), (lambda: RVSRRepConv(4, ratio=0), 'ratio'),
                                       (lambda: RVSRRepConv(4, ratio=0.1), 'ratio'),
                                       (lambda: RVSRRepConv(4, act_type='swish'), 'act_type')])
def test_rvsr_repconv_refuses_impossible_arguments(make, arg):
    with pytest.raises(ValueError) as info:
        make()
    assert '\n' not in str(info.value) and arg in str(info.value)


# ---------------------------------------------------------------- BatchNorm feeding a conv; FMEN's ERB

@pytest.mark.parametrize('groups,cin,cout,kernel,stride', [(1, 4, 6, (3, 3), 1), (2, 4, 6, (3, 3), 1),
                                                           (4, 4, 4, (3, 3), 2), (1, 3, 5, (1, 3), 1),
                                                           (1, 3, 2, (5, 5), 1), (3, 6, 3, (3, 1), 2)])
def test_fuse_bn_before_conv_equals_the_bn_value_padded_conv(groups, cin, cout, kernel, stride):
    """FMEN's merge_bn(before_conv=True) (Du et al., CVPRW 2022; NJU-Jet/FMEN reparameterize.py):
    conv(bn(x)) with the BN output padded by bn(0) (= the BN applied to the zero-padded input)
    equals the fused conv on zero-padded x on every pixel, grouped, strided and non-square kernels
    included; padding bn(x) with zeros instead differs on the border only."""
    from rtsr_arch.archs.rep.fusion import fuse_bn_before_conv

    bn = randomize(nn.BatchNorm2d(cin), seed=31).double().eval()
    kh, kw = kernel
    w, b = _rand(cout, cin // groups, kh, kw, seed=32), _rand(cout, seed=33)
    x = _rand(2, cin, 7, 6, seed=34)
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)
    ref = F.conv2d(bn(F.pad(x, pad)), w, b, stride=stride, groups=groups)
    for bias in (b, None):
        wf, bf = fuse_bn_before_conv(w, bias, bn, groups)
        expected = ref if bias is not None else ref - b.view(1, -1, 1, 1)
        fused = F.conv2d(x, wf, bf, stride=stride, padding=(kh // 2, kw // 2), groups=groups)
        assert fused.shape == ref.shape and (fused - expected).abs().max() <= TOL64
    naive = F.conv2d(F.pad(bn(x), pad), w, b, stride=stride, groups=groups)
    diff = (naive - ref).abs()
    assert diff.max() > 1e-3
    if stride == 1:  # pixels at least half a kernel from the border see no padding
        rh, rw = kh // 2, kw // 2
        assert diff[..., rh:diff.shape[-2] - rh, rw:diff.shape[-1] - rw].max() <= TOL64


def test_bn_scale_shift_is_the_eval_batchnorm_and_its_value_at_zero():
    from rtsr_arch.archs.rep.fusion import bn_scale_shift

    bn = randomize(nn.BatchNorm2d(5), seed=35).double().eval()
    x = _rand(2, 5, 3, 4, seed=36)
    scale, shift = bn_scale_shift(bn)
    assert (scale.view(1, -1, 1, 1) * x + shift.view(1, -1, 1, 1) - bn_eval(x, bn)).abs().max() <= TOL64
    assert (bn(torch.zeros(1, 5, 1, 1, dtype=torch.float64)).view(-1) - shift).abs().max() <= TOL64


def test_fuse_bn_before_conv_refuses_a_channel_mismatch():
    from rtsr_arch.archs.rep.fusion import fuse_bn_before_conv

    with pytest.raises(ValueError, match='BatchNorm normalizes 5'):
        fuse_bn_before_conv(_rand(4, 3, 3, 3, seed=1), None, nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match='groups=2'):
        fuse_bn_before_conv(_rand(4, 3, 3, 3, seed=1), None, nn.BatchNorm2d(5), groups=2)


@pytest.mark.parametrize('ratio', [2, 1, 1.5])
def test_erb_is_two_rrrbs_around_a_functional_leaky_relu(ratio):
    """FMEN's ERB (train_fmen.py): conv1 (RRRB) -> LeakyReLU(0.1) -> conv2 (RRRB); deploys to two 3x3
    convs under the official keys conv1.rep_conv / conv2.rep_conv (test_fmen.py, LMRLFN's
    BasicBlock). The LeakyReLU is functional (the official module-level ``act``): no registered
    activation module, so the NTIRE ESR hook counter does not see it."""
    from rtsr_arch.archs.rep import ERB

    block = randomize(ERB(5, ratio), seed=37).double().eval()
    assert not any(isinstance(m, (nn.LeakyReLU, nn.ReLU)) for m in block.modules())
    assert {k.rsplit('.', 2)[0] for k in block.state_dict()} == {'conv1', 'conv2'}
    fused = reparameterize(copy.deepcopy(block))
    assert fused.deploy and not block.deploy
    expected = {f'conv{i}.rep_conv.{p}' for i in (1, 2) for p in ('weight', 'bias')}
    assert set(fused.state_dict()) == expected == set(ERB(5, ratio, deploy=True).state_dict())
    for h, w in SIZES:
        x = random_input(2, 5, h, w, torch.float64, seed=h * 10 + w)
        with torch.no_grad():
            y = block(x)
            ref = block.conv2(F.leaky_relu(block.conv1(x), 0.1))
            assert torch.equal(y, ref)
            assert (fused(x) - y).abs().max() <= TOL64
    built = ERB(5, ratio, deploy=True).double()
    built.load_state_dict(fused.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(built(x), fused(x))
    assert ERB(5, slope=0.2).slope == 0.2
    with pytest.raises(ValueError, match='slope'):
        ERB(5, slope='x')


# ---------------------------------------------------------------- SPAN's Conv3XC specifics

def test_conv3xc_training_form_matches_span_formula():
    """hongyuanyu/SPAN Conv3XC (Wan et al., CVPRW 2024), training mode: conv.2(conv.1(conv.0(pad(x, 1))))
    + sk(x), the 1x1s and the 3x3 unpadded, widths in -> gain*in -> gain*out -> out; no identity."""
    block = randomize(Conv3XC(4, 6, gain=2), seed=41).double()
    x = random_input(2, 4, 5, 6, torch.float64, seed=9)
    c0, c1, c2 = block.conv
    t = F.conv2d(F.pad(x, [1, 1, 1, 1]), c0.weight, c0.bias)
    ref = F.conv2d(F.conv2d(t, c1.weight, c1.bias), c2.weight, c2.bias) + F.conv2d(x, block.sk.weight, block.sk.bias)
    assert (block.forward_train(x) - ref).abs().max() <= TOL64
    assert c0.weight.shape == (8, 4, 1, 1) and c1.weight.shape == (12, 8, 3, 3) and c2.weight.shape == (6, 12, 1, 1)
    assert block.sk.weight.shape == (6, 4, 1, 1) and Conv3XC.deploy_key == 'eval_conv'


def test_conv3xc_keeps_eval_conv_as_buffers_under_the_official_keys():
    """The official training module registers eval_conv too: here it is a pair of buffers (not
    parameters) refreshed to the float64 fusion whenever a state dict is taken, so the training
    layout is the official one and its eval_conv alone is a valid deploy conv."""
    block = randomize(Conv3XC(4, 6, act_type='prelu'), seed=42).double().eval()
    sd = block.state_dict()
    assert set(sd) == {f'{m}.{t}' for m in ('sk', 'conv.0', 'conv.1', 'conv.2', 'eval_conv')
                       for t in ('weight', 'bias')} | {'act.weight'}
    assert not any('eval_conv' in n for n, _ in block.named_parameters())
    assert {n for n, _ in block.named_buffers()} == {'eval_conv.weight', 'eval_conv.bias'}
    fused = fused_copy(block)
    assert torch.equal(sd['eval_conv.weight'], fused.eval_conv.weight)
    assert torch.equal(sd['eval_conv.bias'], fused.eval_conv.bias)
    built = Conv3XC(4, 6, act_type='prelu', deploy=True).double().eval()
    built.load_state_dict({k: v for k, v in sd.items() if k.startswith(('eval_conv.', 'act.'))}, strict=True)
    x = random_input(1, 4, 5, 7, torch.float64, seed=10)
    with torch.no_grad():
        assert_fused_close(block(x), built(x))
    assert set(Conv3XC(4, 4, bias=False).state_dict()) == {'sk.weight', 'conv.0.weight', 'conv.1.weight',
                                                           'conv.2.weight', 'eval_conv.weight'}


def test_conv3xc_zero_padding_the_expanded_map_breaks_the_border():
    """Negative control: padding conv.0's output with zeros (instead of its input, i.e. with its
    bias) keeps the interior and breaks the border."""
    block = randomize(Conv3XC(4, 5), seed=43).double().eval()
    x = random_input(2, 4, 6, 7, torch.float64, seed=11)
    c0, c1, c2 = block.conv
    wrong = c2(F.conv2d(F.pad(F.conv2d(x, c0.weight, c0.bias), [1, 1, 1, 1]), c1.weight, c1.bias)) + block.sk(x)
    diff = (wrong - linear_part(fused_copy(block), x)).abs()
    assert diff[..., 1:-1, 1:-1].max() <= TOL64 and diff.max() > 1e-3


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32], ids=['f16', 'bf16', 'f32'])
def test_conv3xc_fuses_in_float64_and_keeps_dtype(dtype):
    block = randomize(Conv3XC(4, 6, act_type='prelu', stride=2, groups=2), seed=44).to(dtype).eval()
    reference = copy.deepcopy(block).double()
    assert block.state_dict()['eval_conv.weight'].dtype == dtype
    rtsr_arch.reparameterize(block)
    assert {t.dtype for t in list(block.parameters()) + list(block.buffers())} == {dtype}
    assert torch.equal(block.eval_conv.weight, fused_copy(reference).eval_conv.weight.to(dtype))


@pytest.mark.parametrize('make, arg', [(lambda: Conv3XC(4, 4, gain=0), 'gain'),
                                       (lambda: Conv3XC(4, 4, gain=1.5), 'gain'),
                                       (lambda: Conv3XC(4, 6, groups=4), 'groups'),
                                       (lambda: Conv3XC(4, 4, kernel_size=2), 'kernel_size'),
                                       (lambda: Conv3XC(4, 4, stride=4), 'stride'),
                                       (lambda: Conv3XC(0, 4), 'in_channels')])
def test_conv3xc_refuses_impossible_arguments(make, arg):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert '\n' not in message and arg in message and message.startswith('Conv3XC:'), message


# ---------------------------------------------------------------- RepLKNet's large-kernel conv specifics

def test_replk_training_form_matches_the_official_formula():
    """Aitical/NTIRE23_ESR_AIIASR ``ReparamLargeKernelConv`` (RepLKNet, Ding et al., CVPR 2022, §3.3):
    ``lkb_origin(x) + small_conv(x)``, each padded by half its kernel; merged: the small kernel
    zero-padded into the large one's centre, biases summed (``lkb_reparam``)."""
    block = randomize(ReparamLargeKernelConv(6, 6, 9, 7, groups=6), seed=51).double()
    x = random_input(2, 6, 11, 12, torch.float64, seed=12)
    lk, sk = block.lkb_origin, block.small_conv
    ref = F.conv2d(x, lk.weight, lk.bias, padding=4, groups=6) + F.conv2d(x, sk.weight, sk.bias, padding=3, groups=6)
    assert (block.forward_train(x) - ref).abs().max() <= TOL64
    fused = fused_copy(block)
    assert torch.equal(fused.lkb_reparam.weight, lk.weight + F.pad(sk.weight, [1, 1, 1, 1]))
    assert torch.equal(fused.lkb_reparam.bias, lk.bias + sk.bias)
    assert set(fused.state_dict()) == {'lkb_reparam.weight', 'lkb_reparam.bias'}


def test_replk_without_small_kernel_is_a_plain_conv():
    block = randomize(ReparamLargeKernelConv(4, 4, 5, None), seed=52).double().eval()
    assert set(block.state_dict()) == {'lkb_origin.weight', 'lkb_origin.bias'}
    check_fused_equals_training(block, random_input(2, 4, 6, 7, torch.float64, seed=13))


@pytest.mark.parametrize('make, arg', [(lambda: ReparamLargeKernelConv(4, 4, 5, 7), 'small_kernel'),
                                       (lambda: ReparamLargeKernelConv(4, 4, 5, 2), 'small_kernel'),
                                       (lambda: ReparamLargeKernelConv(4, 4, (5, 3), 3), 'kernel_size'),
                                       (lambda: ReparamLargeKernelConv(4, 4, 4, 3), 'kernel_size'),
                                       (lambda: ReparamLargeKernelConv(4, 6, 5, 3, groups=4), 'groups')])
def test_replk_refuses_impossible_arguments(make, arg):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert '\n' not in message and arg in message and message.startswith('ReparamLargeKernelConv:'), message


# ---------------------------------------------------------------- LKDN's RBSB and re-parameterized upsampler

def _bsconv_rep_reference(x, sd):
    """stella-von/LKDN ``BSConvU_rep`` (Xie et al., CVPRW 2023, Fig. 2d): y = pw(x) + x;
    dw(y) + y + rep1x1(y), dw depthwise 3x3 padding 1, rep1x1 depthwise 1x1."""
    c = sd['pw.weight'].shape[0]
    y = F.conv2d(x, sd['pw.weight']) + x
    return F.conv2d(y, sd['dw.weight'], sd['dw.bias'], padding=1, groups=c) + y + \
        F.conv2d(y, sd['rep1x1.weight'], sd['rep1x1.bias'], groups=c)


def _upsampler_rep_reference(x, sd, scale):
    """stella-von/LKDN ``Upsampler_rep`` (Fig. 2e): conv1 (1x1) + conv3 (3x3 p1) + conv3x3 (valid) on
    conv1x1(x) padded by one pixel whose value is conv1x1's bias (written explicitly), then
    PixelShuffle."""
    v = F.conv2d(x, sd['conv1x1.weight'], sd['conv1x1.bias'])
    b = sd['conv1x1.bias'].view(1, -1, 1, 1)
    v = F.pad(v - b, [1, 1, 1, 1]) + b
    out = F.conv2d(x, sd['conv1.weight'], sd['conv1.bias']) + F.conv2d(x, sd['conv3.weight'], sd['conv3.bias'],
                                                                       padding=1) + \
        F.conv2d(v, sd['conv3x3.weight'], sd['conv3x3.bias'])
    return F.pixel_shuffle(out, scale)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
def test_bsconv_rep_training_form_matches_lkdn_and_fuses_to_a_bsconv(dtype):
    """The RBSB equals the official formula; its fusion is a BSConv-U (pw: ``pw + I``, dw: ``dw +
    I + rep1x1`` at the centre tap, bias ``dw.b + rep1x1.b``) under the same keys, equal on every
    pixel (1xN and 2x2 inputs included), and what BSConvURep(deploy=True) / BSConvU load."""
    block = randomize(BSConvURep(5, 5), seed=53).to(dtype).eval()
    assert set(block.state_dict()) == {'pw.weight', 'dw.weight', 'dw.bias', 'rep1x1.weight', 'rep1x1.bias'}
    assert block.pw.bias is None and block.rep1x1.weight.shape == (5, 1, 1, 1)
    fused = rtsr_arch.reparameterize(copy.deepcopy(block))
    assert fused.deploy and set(fused.state_dict()) == {'pw.weight', 'dw.weight', 'dw.bias'}
    assert set(BSConvURep(5, 5, deploy=True).state_dict()) == set(BSConvU(5, 5).state_dict()) == set(fused.state_dict())
    plain = BSConvU(5, 5).to(dtype)
    plain.load_state_dict(fused.state_dict(), strict=True)
    for i, (h, w) in enumerate(SIZES):
        x = random_input(2, 5, h, w, dtype, seed=20 + i)
        with torch.no_grad():
            y = block(x)
            assert (y - _bsconv_rep_reference(x, block.state_dict())).abs().max() <= 1e-12 * max(1, y.abs().max())
            assert torch.equal(fused(x), plain(x))
            assert_fused_close(y, fused(x))
    assert rtsr_arch.reparameterize(fused) is fused  # idempotent


def test_bsconv_rep_negative_control_dropping_a_branch_is_caught():
    """Each folded term matters: fusing without the depthwise identity or without rep1x1 changes the output."""
    block = randomize(BSConvURep(4, 4), seed=54).double().eval()
    x = random_input(1, 4, 6, 7, torch.float64, seed=30)
    (pw, _), (dw, b) = block.fuse()
    for wrong_dw, wrong_b in ((dw - identity_kernel(4, 3, dw, groups=4), b),
                              (dw - pad_kernel(block.rep1x1.weight, 3), b - block.rep1x1.bias)):
        y = F.conv2d(F.conv2d(x, pw), wrong_dw, wrong_b, padding=1, groups=4)
        assert (y - block(x)).abs().max() > 1e-3


def test_bsconv_rep_refuses_different_widths_and_keeps_dtype():
    with pytest.raises(ValueError, match=r'^BSConvURep: in_channels=4 != out_channels=6'):
        BSConvURep(4, 6)
    with pytest.raises(ValueError, match=r'^BSConvU: kernel_size=2'):
        BSConvU(4, 4, 2)
    block = randomize(BSConvURep(4, 4), seed=55).half()
    reference = copy.deepcopy(block).double()
    rtsr_arch.reparameterize(block)
    assert {p.dtype for p in block.parameters()} == {torch.float16}
    (pw, _), (dw, b) = reference.fuse()  # fused in float64, cast once
    assert torch.equal(block.pw.weight, pw.half()) and torch.equal(block.dw.weight, dw.half())


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
def test_rep_upsampler_training_form_matches_lkdn_and_fuses_exactly(scale, dtype):
    """The re-parameterized upsampler equals the official formula (explicit bias padding of the
    expansion) and fuses into one 3x3 conv under the official key ``0`` (``upsampler.0``),
    equal on every pixel; PixelShuffle has no parameters."""
    block = randomize(RepUpsampler(6, 3, scale), seed=56).to(dtype).eval()
    assert {k.split('.')[0] for k in block.state_dict()} == {'conv1', 'conv3', 'conv1x1', 'conv3x3'}
    assert block.conv1x1.weight.shape == (12, 6, 1, 1) and block.conv3x3.weight.shape == (3 * scale ** 2, 12, 3, 3)
    fused = fused_copy(block)
    assert set(fused.state_dict()) == {'0.weight', '0.bias'} == set(RepUpsampler(6, 3, scale, deploy=True).state_dict())
    for i, (h, w) in enumerate(SIZES):
        x = random_input(2, 6, h, w, dtype, seed=40 + i)
        with torch.no_grad():
            y = block(x)
            assert y.shape == (2, 3, scale * h, scale * w)
            assert (y - _upsampler_rep_reference(x, block.state_dict(), scale)).abs().max() <= 1e-12 * max(
                1, y.abs().max()) * (1 if dtype == torch.float64 else 1e7)
            assert_fused_close(linear_part(block, x), linear_part(fused, x))
            assert torch.equal(F.pixel_shuffle(linear_part(fused, x), scale), fused(x))


def test_rep_upsampler_negative_control_zero_padded_expansion_breaks_the_border():
    """Padding the 1x1 expansion with zeros (instead of its bias) keeps the interior, breaks the border."""
    block = randomize(RepUpsampler(4, 3, 2), seed=57).double().eval()
    x = random_input(1, 4, 6, 7, torch.float64, seed=50)
    wrong = block.conv1(x) + block.conv3(x) + block.conv3x3(F.pad(F.conv2d(x, block.conv1x1.weight,
                                                                           block.conv1x1.bias), [1, 1, 1, 1]))
    diff = (wrong - linear_part(fused_copy(block), x)).abs()
    assert diff[..., 1:-1, 1:-1].max() <= TOL64 and diff.max() > 1e-3


# ---------------------------------------------------------------- DBB / LEDBB / RepRFN's RepBlock specifics

@pytest.mark.parametrize('channels,groups,kernel,stride', [(4, 1, 3, 1), (6, 2, 3, 2), (6, 3, (3, 5), 1),
                                                           (5, 5, 5, 2), (4, 4, (1, 3), 1)])
def test_avg_pool_kernel_equals_the_pooling(channels, groups, kernel, stride):
    """DBB transV: the kernel of ``avg_pool_kernel`` in a conv with ``groups`` equals AvgPool2d
    (zero padding counted, PyTorch's default) with the same stride, on every pixel; and on a map
    already padded (the pooling then unpadded, as after a BNAndPadLayer)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = random_input(2, channels, 7, 6, torch.float64, seed=61)
    w = avg_pool_kernel(channels, kernel, x, groups)
    assert w.shape == (channels, channels // groups, kh, kw)
    pooled = F.avg_pool2d(x, (kh, kw), stride, padding=(kh // 2, kw // 2), count_include_pad=True)
    conv = F.conv2d(x, w, stride=stride, padding=(kh // 2, kw // 2), groups=groups)
    assert (conv - pooled).abs().max() <= 1e-15
    padded = F.pad(x, [kw // 2, kw // 2, kh // 2, kh // 2], value=0.7)
    assert (F.conv2d(padded, w, stride=stride, groups=groups) - F.avg_pool2d(padded, (kh, kw), stride)).abs().max() \
        <= 1e-15


def test_avg_pool_kernel_refuses_even_kernels_and_bad_groups():
    like = torch.zeros(1)
    with pytest.raises(ValueError, match='centre'):
        avg_pool_kernel(4, 2, like)
    with pytest.raises(ValueError, match='groups'):
        avg_pool_kernel(6, 3, like, groups=4)


def _bn_eval(t, sd, name):
    return F.batch_norm(t, sd[f'{name}.running_mean'], sd[f'{name}.running_var'], sd[f'{name}.weight'],
                        sd[f'{name}.bias'], training=False, eps=1e-5)


def _pad_bn_value(t, sd, name, ph, pw):
    """Pad with ``bias - running_mean * weight / sqrt(running_var + eps)`` (official BNAndPadLayer)."""
    v = (sd[f'{name}.bias'] - sd[f'{name}.running_mean'] * sd[f'{name}.weight'] /
         torch.sqrt(sd[f'{name}.running_var'] + 1e-5)).view(1, -1, 1, 1)
    out = v.expand(t.shape[0], -1, t.shape[2] + 2 * ph, t.shape[3] + 2 * pw).clone()
    out[:, :, ph:ph + t.shape[2], pw:pw + t.shape[3]] = t
    return out


def dbb_reference(x, sd, k, stride, groups, seq='dbb_1x1_kxk'):
    """The official DiverseBranchBlock / LearnableEnhanced_DiverseBranchBlock forward (eval BNs),
    written from DingXiaoH/DiverseBranchBlock ``diversebranchblock.py`` on the official keys."""
    p = k // 2
    y = _bn_eval(F.conv2d(x, sd['dbb_origin.conv.weight'], stride=stride, padding=p, groups=groups), sd,
                 'dbb_origin.bn')
    if 'dbb_1x1.conv.weight' in sd:
        y = y + _bn_eval(F.conv2d(x, sd['dbb_1x1.conv.weight'], stride=stride, groups=groups), sd, 'dbb_1x1.bn')
    if f'{seq}.idconv1.weight' in sd:
        w = sd[f'{seq}.idconv1.weight']
        ident = torch.zeros_like(w)
        per = w.shape[1]
        ident[torch.arange(w.shape[0]), torch.arange(w.shape[0]) % per] = 1
        first = w + ident
    else:
        first = sd[f'{seq}.conv1.weight']
    u = _pad_bn_value(_bn_eval(F.conv2d(x, first, groups=groups), sd, f'{seq}.bn1.bn'), sd, f'{seq}.bn1.bn', p, p)
    y = y + _bn_eval(F.conv2d(u, sd[f'{seq}.conv2.weight'], stride=stride, groups=groups), sd, f'{seq}.bn2')
    if 'dbb_avg.avgbn.weight' in sd:
        if 'dbb_avg.conv.weight' in sd:
            a = _pad_bn_value(_bn_eval(F.conv2d(x, sd['dbb_avg.conv.weight'], groups=groups), sd, 'dbb_avg.bn.bn'),
                              sd, 'dbb_avg.bn.bn', p, p)
            a = F.avg_pool2d(a, k, stride)
        else:
            a = F.avg_pool2d(x, k, stride, padding=p)
        y = y + _bn_eval(a, sd, 'dbb_avg.avgbn')
    return y


@pytest.mark.parametrize('make,k,stride,groups,seq', [
    (lambda: DiverseBranchBlock(5, 5, 3), 3, 1, 1, 'dbb_1x1_kxk'),
    (lambda: DiverseBranchBlock(4, 6, 3, groups=2, stride=2), 3, 2, 2, 'dbb_1x1_kxk'),
    (lambda: DiverseBranchBlock(6, 6, 3, groups=6), 3, 1, 6, 'dbb_1x1_kxk'),
    (lambda: DiverseBranchBlock(4, 4, 5, internal_channels=6, stride=2), 5, 2, 1, 'dbb_1x1_kxk'),
    (lambda: LEDBB(6, 6), 3, 1, 1, 'dbb_1x1_kxk_1'),
    (lambda: LEDBB(4, 7, stride=2), 3, 2, 1, 'dbb_1x1_kxk_1')])
def test_dbb_training_form_matches_the_official_formula(make, k, stride, groups, seq):
    """Our DBB / LEDBB training form (eval BatchNorms) equals the official forward written on its
    keys, and the fused conv equals both, on every pixel of odd and degenerate sizes."""
    block = randomize(make(), seed=62).double().eval()
    fused = fused_copy(block)
    sd = block.state_dict()
    for i, (h, w) in enumerate(SIZES):
        x = random_input(2, block.in_channels, h, w, torch.float64, seed=70 + i)
        with torch.no_grad():
            ref = dbb_reference(x, sd, k, stride, groups, seq)
            assert (block.forward_train(x) - ref).abs().max() <= 1e-12 * max(1, ref.abs().max())
            assert_fused_close(ref, linear_part(fused, x))


def test_ledbb_is_the_official_layout():
    """LEDBB = DBB without ``dbb_avg``; the sequential branch is ``dbb_1x1_kxk_1`` with an
    identity-based 1x1 (zero-initialized delta; the identity not in the state dict, but a buffer that
    follows ``.to()``); BNAndPadLayer holds its BatchNorm as ``bn``; deploy key ``dbb_reparam``."""
    block = LEDBB(4, 4)
    names = {k.rsplit('.', 1)[0] for k in block.state_dict()}
    assert names == {'dbb_origin.conv', 'dbb_origin.bn', 'dbb_1x1.conv', 'dbb_1x1.bn', 'dbb_1x1_kxk_1.idconv1',
                     'dbb_1x1_kxk_1.bn1.bn', 'dbb_1x1_kxk_1.conv2', 'dbb_1x1_kxk_1.bn2'}
    idconv = block.dbb_1x1_kxk_1.idconv1
    assert isinstance(idconv, IdentityBasedConv1x1) and isinstance(idconv, nn.Conv2d)
    assert torch.equal(idconv.weight, torch.zeros(4, 4, 1, 1))
    assert torch.equal(idconv.get_actual_kernel()[:, :, 0, 0], torch.eye(4))
    assert 'dbb_1x1_kxk_1.idconv1.id_tensor' not in block.state_dict() and idconv.double().id_tensor.dtype == \
        torch.float64
    assert isinstance(block.dbb_1x1_kxk_1.bn1, BNAndPadLayer) and block.dbb_1x1_kxk_1.conv2.padding == (0, 0)
    assert {k.split('.')[0] for k in DiverseBranchBlock(4, 4).state_dict()} == {
        'dbb_origin', 'dbb_1x1', 'dbb_1x1_kxk', 'dbb_avg'}
    assert {k.split('.')[0] for k in DiverseBranchBlock(4, 4, groups=4).state_dict()} == {
        'dbb_origin', 'dbb_1x1_kxk', 'dbb_avg'}  # depthwise: no 1x1 branch, 2x inner width, pooling only
    assert DiverseBranchBlock(4, 4, groups=4).dbb_1x1_kxk.conv1.weight.shape == (8, 1, 1, 1)
    assert set(LEDBB(4, 4, deploy=True).state_dict()) == {'dbb_reparam.weight', 'dbb_reparam.bias'}


def test_dbb_negative_control_zero_padding_breaks_the_border():
    """Padding the BatchNorm output of the 1x1 -> kxk branch with zeros (instead of its value at
    zero input) keeps the interior and breaks the border: the BN-value padding is what makes the
    fusion exact there."""
    block = randomize(LEDBB(4, 4), seed=63).double().eval()
    seq = block.dbb_1x1_kxk_1
    x = random_input(1, 4, 6, 7, torch.float64, seed=64)
    with torch.no_grad():
        wrong = block.dbb_origin(x) + block.dbb_1x1(x) + seq.bn2(seq.conv2(F.pad(seq.bn1.bn(seq.idconv1(x)),
                                                                                 [1, 1, 1, 1])))
        diff = (wrong - linear_part(fused_copy(block), x)).abs()
    assert diff[..., 1:-1, 1:-1].max() <= TOL64 and diff.max() > 1e-3


# ECB's fixed edge filters as written in the official RepRFN ``SeqConv3x3`` (mask[i, 0, row, col])
REPRFN_EDGES = {'sbx': [[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]],
                'sby': [[1., 2., 1.], [0., 0., 0.], [-1., -2., -1.]],
                'lpl': [[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]]}


def reprfn_block_reference(x, sd, k=3):
    """RepRFN's RepBlock (laonafahaodange/NTIRE2023-ESR-RepRFN ``RepBlock.forward``) on its keys,
    before the activation: the seven convs' sum + x, each edge branch padded with its b0."""
    p = k // 2
    y = F.conv2d(x, sd['rbr_3x3_branch.weight'], sd.get('rbr_3x3_branch.bias'), padding=p)
    y = y + F.conv2d(x, sd['rbr_3x1_branch.weight'], sd.get('rbr_3x1_branch.bias'), padding=(p, 0))
    y = y + F.conv2d(x, sd['rbr_1x3_branch.weight'], sd.get('rbr_1x3_branch.bias'), padding=(0, p))
    y = y + F.conv2d(x, sd['rbr_1x1_branch.weight'], sd.get('rbr_1x1_branch.bias'))
    y = y + F.conv2d(F.conv2d(x, sd['rbr_1x1_3x3_branch_1x1.weight']), sd['rbr_1x1_3x3_branch_3x3.weight'], padding=p)
    for edge, mask in REPRFN_EDGES.items():
        q = f'rbr_conv1x1_{edge}_branch'
        b0 = sd.get(f'{q}.b0')
        t = F.conv2d(x, sd[f'{q}.k0'], b0)
        t = F.pad(t, [1, 1, 1, 1]) if b0 is None else pad_with(t, b0)
        c = t.shape[1]
        kernel = sd[f'{q}.scale'] * torch.tensor(mask, dtype=x.dtype).expand(c, 1, 3, 3)
        y = y + F.conv2d(t, kernel, sd.get(f'{q}.bias'), groups=c)
    return y


@pytest.mark.parametrize('make,k,idt', [(lambda: RepRFNBlock(6, 6, 'linear'), 3, True),
                                        (lambda: RepRFNBlock(4, 6, 'linear', kernel_size=5, expand=1.5), 5, False),
                                        (lambda: RepRFNBlock(5, 5, 'linear', bias=False), 3, True)])
def test_reprfn_block_training_form_matches_the_official_formula(make, k, idt):
    block = randomize(make(), seed=65).double().eval()
    assert block.with_idt == idt
    fused = fused_copy(block)
    for i, (h, w) in enumerate(SIZES):
        x = random_input(2, block.in_channels, h, w, torch.float64, seed=80 + i)
        with torch.no_grad():
            ref = reprfn_block_reference(x, block.state_dict(), k) + (x if idt else 0)
            assert (block.forward_train(x) - ref).abs().max() <= 1e-12 * max(1, ref.abs().max())
            assert_fused_close(ref, linear_part(fused, x))


def test_reprfn_block_official_names_and_fixed_masks():
    sd = RepRFNBlock(4, 4).state_dict()
    assert {k.rsplit('.', 1)[0] for k in sd} == {
        'rbr_3x3_branch', 'rbr_3x1_branch', 'rbr_1x3_branch', 'rbr_1x1_branch', 'rbr_1x1_3x3_branch_1x1',
        'rbr_1x1_3x3_branch_3x3', 'rbr_conv1x1_sbx_branch', 'rbr_conv1x1_sby_branch', 'rbr_conv1x1_lpl_branch'}
    assert sd['rbr_3x1_branch.weight'].shape == (4, 4, 3, 1) and sd['rbr_1x3_branch.weight'].shape == (4, 4, 1, 3)
    assert sd['rbr_1x1_3x3_branch_1x1.weight'].shape == (8, 4, 1, 1) and 'rbr_1x1_3x3_branch_1x1.bias' not in sd
    block = RepRFNBlock(4, 4)
    assert not any(n.endswith('mask') for n, _ in block.named_parameters())  # fixed: buffers, not trained
    assert RepRFNBlock.deploy_key == 'rbr_reparam'
    assert LEDBB.deploy_key == DiverseBranchBlock.deploy_key == 'dbb_reparam'


@pytest.mark.parametrize('make, arg, cls', [
    (lambda: DiverseBranchBlock(4, 4, bias=False), 'bias', 'DiverseBranchBlock'),
    (lambda: DiverseBranchBlock(4, 4, with_avg='yes'), 'with_avg', 'DiverseBranchBlock'),
    (lambda: DiverseBranchBlock(8, 4, groups=4), 'with_avg', 'DiverseBranchBlock'),  # depthwise pooling: in == out
    (lambda: DiverseBranchBlock(4, 4, internal_channels=0), 'internal_channels', 'DiverseBranchBlock'),
    (lambda: DiverseBranchBlock(4, 4, groups=2, internal_channels=5), 'internal_channels', 'DiverseBranchBlock'),
    (lambda: DiverseBranchBlock(4, 4, 2), 'kernel_size', 'DiverseBranchBlock'),
    (lambda: LEDBB(4, 6, groups=4), 'groups', 'LEDBB'),
    (lambda: RepRFNBlock(4, 4, kernel_size=1), 'kernel_size', 'RepRFNBlock'),
    (lambda: RepRFNBlock(4, 4, kernel_size=(3, 5)), 'kernel_size', 'RepRFNBlock'),
    (lambda: RepRFNBlock(4, 4, expand=0), 'expand', 'RepRFNBlock'),
    (lambda: RepRFNBlock(4, 6, with_idt=True), 'with_idt', 'RepRFNBlock')])
def test_dbb_and_reprfn_blocks_refuse_impossible_arguments_in_one_line(make, arg, cls):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'{cls}: {arg}='), message
