"""DIPNet specifics (Yu et al., "DIPNet: Efficiency Distillation and Iterative Pruning for Image
Super-Resolution", CVPRW 2023; NTIRE 2023 ESR report §4.1, team MegSR; official code
xiumu00/DIPNet@69f43a7 ``models/DIPNet.py``, MIT): the official state-dict layout (bias-free trunk),
an independent functional reference on the official keys, the released ``DIPNet.pth`` loaded
through ``rtsr_arch.load_model`` against it on real photographs, the training form (RRRBConv in
place of each block conv; unpublished officially) against a reference written from FMEN's RRRB
formula, the RRRBConv block, the importer (unique against RLFN, whose keys DIPNet shares minus the
biases) and the training recipes. Fusion, keyword errors and the generic checks are in
test_contract.py; the NTIRE 2023 ESR counts in test_ntire23_counts.py.
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import OFFICIAL_FIXTURES, bicubic, check_half_precision, check_official_weights, \
    check_recipe_network, check_reference_and_fusion, conv_shapes, esa_light_shapes, load_official, load_recipe, lr_photos, n_params, \
    official_fixture, photo, psnr, randomize, state_layout
from reference import conv, rlfn_forward, rrrb
from rtsr_arch.archs.dipnet_arch import DIPNet, RRFB, import_official_dipnet
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.rep import RRRB, RRRBConv
from rtsr_arch.loader import read_checkpoint
from rtsr_arch.utils.options import build_network

pytestmark = pytest.mark.usefixtures('torch_single_thread')

SLOPE = 0.05  # the official ``activation('lrelu', neg_slope=0.05)``


# ======================================================================= independent reference
# xiumu00/DIPNet models/DIPNet.py (deploy keys): RLFN's network (reference.rlfn_forward) with a
# bias-free trunk; the training form written from FMEN's RRRB formula (reference.rrrb).

def dipnet_reference(sd, x):
    """The official DIPNet forward on RGB ``x`` in [0, 1] (data range 1.0), any block count, either
    form: a block 3x3 conv is the deploy ``name.weight`` (padding 1) or, in training form, the RRRB
    (1x1 expand, its output padded by one pixel of the expand bias (zero when bias-free), 3x3 valid +
    the expanded map, 1x1 reduce, + the input when the widths match)."""
    def block_conv(t, name):
        return conv(t, sd, name, padding=1) if f'{name}.weight' in sd else rrrb(t, sd, name)
    return rlfn_forward(sd, x, block_conv, SLOPE)


# ======================================================================= layouts

def _official_layout(c=44, mid=38, blocks=4, esa=16, out=48):
    keys = conv_shapes([('conv_1', (c, 3, 3, 3)), ('conv_2', (c, c, 3, 3)), ('upsampler.0', (out, c, 3, 3))],
                       bias=False)
    for i in range(1, blocks + 1):
        p = f'block_{i}.'
        keys.update(conv_shapes([('c1_r', (mid, c, 3, 3)), ('c2_r', (mid, mid, 3, 3)), ('c3_r', (c, mid, 3, 3)),
                                 ('c5', (c, c, 1, 1))], p, bias=False))
        keys.update(conv_shapes(esa_light_shapes(c, esa), p + 'esa.'))
    return keys


def test_dipnet_deploy_layout_is_the_official_one():
    """models/DIPNet.py DIPNet(): 59 tensors, 243,252 parameters; no bias outside the ESAs
    (``conv_layer(..., bias=False)``); the block convs are plain keys (no ``rep_conv`` level),
    whether built deployed or reparameterized from the training form."""
    expected = _official_layout()
    assert state_layout(DIPNet(deploy=True)) == expected and len(expected) == 59
    assert state_layout(rtsr_arch.reparameterize(DIPNet())) == expected
    assert n_params(DIPNet(deploy=True)) == 243_252
    for model in (DIPNet(), DIPNet(deploy=True)):
        assert all('.esa.' in k for k in model.state_dict() if k.endswith('.bias'))


def test_dipnet_training_layout():
    """Each block conv trains as an RRRBConv (FMEN's names expand_conv, fea_conv, reduce_conv;
    ratio 2 of the input width), bias-free; conv_1, conv_2, upsampler and c5 stay plain."""
    layout = state_layout(DIPNet())
    assert layout['block_1.c1_r.expand_conv.weight'] == (88, 44, 1, 1)
    assert layout['block_1.c1_r.fea_conv.weight'] == (88, 88, 3, 3)
    assert layout['block_1.c1_r.reduce_conv.weight'] == (38, 88, 1, 1)
    assert layout['block_1.c3_r.expand_conv.weight'] == (76, 38, 1, 1)
    assert layout['block_1.c3_r.reduce_conv.weight'] == (44, 76, 1, 1)
    assert {'conv_1.weight', 'conv_2.weight', 'upsampler.0.weight', 'block_4.c5.weight'} <= set(layout)
    assert n_params(DIPNet()) == 842_436
    assert all('.esa.' in k for k in layout if k.endswith('.bias'))
    biased = state_layout(DIPNet(block_bias=True))
    assert {k for k in biased if k.endswith('.bias') and '.esa.' not in k} == {
        f'block_{i}.{c}.{conv}.bias' for i in range(1, 5) for c in ('c1_r', 'c2_r', 'c3_r')
        for conv in ('expand_conv', 'fea_conv', 'reduce_conv')}
    biased_deploy = state_layout(DIPNet(block_bias=True, deploy=True))
    assert {k for k in biased_deploy if k.endswith('.bias') and '.esa.' not in k} == {
        f'block_{i}.{c}.bias' for i in range(1, 5) for c in ('c1_r', 'c2_r', 'c3_r')}


def test_dipnet_uses_one_activation_module_per_block():
    """One LeakyReLU(0.05) module serves the three calls (the NTIRE ESR counter counts each call)."""
    block = DIPNet(deploy=True).block_1
    assert isinstance(block, RRFB)
    acts = [m for m in block.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 1 and acts[0].negative_slope == SLOPE


# ======================================================================= the released weights

def test_dipnet_official_weights_match_the_reference():
    """``DIPNet.pth`` through load_model (auto-detected, no architecture given) reproduces the
    independent reference on photographs to float32 rounding (float64: ~1e-13), and beats bicubic."""
    check_official_weights(official_fixture('dipnet.pth'), dipnet_reference, load_official('dipnet.pth'), DIPNet,
                           243_252, {'type': 'DIPNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 44, 'num_block': 4,
                                     'upscale': 4, 'act_type': 'lrelu', 'mid_channels': 38, 'esa_channels': 16,
                                     'rep_ratio': 2, 'block_bias': False, 'deploy': True})


def test_dipnet_computes_in_0_1():
    """Unlike RLFN (whose weights expect [0, 255]), the released DIPNet runs on [0, 1] (the official
    test_demo data range 1.0): fed [0, 255] and rescaled, it is far worse than bicubic."""
    official = load_official('dipnet.pth', torch.float64)
    hr, lr = lr_photos(dtype=torch.float64)
    with torch.no_grad():
        right = psnr(dipnet_reference(official, lr), hr)
        wrong = psnr(dipnet_reference(official, lr * 255) / 255, hr)
    reference = psnr(bicubic(lr), hr)
    print(f'DIPNet PSNR: [0, 1] {right:.2f} dB, [0, 255] {wrong:.2f} dB, bicubic {reference:.2f} dB')
    assert right > reference + 1.0 > wrong + 1.0
    assert DIPNet.value_range == (0.0, 1.0)


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_dipnet_official_weights_in_half_precision(dtype, tol):
    """fp16_safe: [0, 1] features stay far below float16's range; bfloat16 keeps 8 mantissa bits."""
    check_half_precision(official_fixture('dipnet.pth'), lr_photos()[1], dtype, tol)


# ======================================================================= training form

@pytest.mark.parametrize('kwargs', [dict(num_feat=8, num_block=2, mid_channels=6, esa_channels=4),
                                    dict(num_feat=6, num_block=1, mid_channels=7, esa_channels=3, block_bias=True,
                                         rep_ratio=3, upscale=3)])
def test_dipnet_training_form_matches_the_rrrb_formula_and_fuses_to_the_official_layout(kwargs):
    """The training form equals the reference written from FMEN's RRRB formula (bias padding; no
    outer identity where the widths differ), and its fused state dict, run through the *official*
    deploy reference, gives the same output on every pixel (15x15: the smallest valid input, where
    every conv's border matters)."""
    model = randomize(DIPNet(**kwargs), seed=3, std=1.0, fan_in=True).double().eval()
    inputs = [photo('coffee', h, w, dtype=torch.float64, batch=2) for h, w in ((15, 15), (17, 23))]
    check_reference_and_fusion(model, dipnet_reference, inputs, gone=('expand_conv', 'rep_conv'))


def test_dipnet_bias_free_training_form_stays_bias_free():
    """Bias-free RRRBConvs (zero padding is then the bias padding) fuse to bias-free convs: the
    official layout needs no bias to absorb."""
    model = DIPNet(num_feat=6, num_block=1, mid_channels=5, esa_channels=3)
    assert all(b.use_bias is False for b in model.modules() if isinstance(b, RRRBConv))
    fused = rtsr_arch.reparameterize(model)
    assert all(m.bias is None for name, m in fused.named_modules()
               if isinstance(m, nn.Conv2d) and '.esa.' not in f'.{name}.')


# ======================================================================= RRRBConv

def _rrrbconv_formula(block, x):
    """expand (1x1, input zero-padded: the border of the expanded map is its bias), 3x3 valid + the
    unpadded expanded map, reduce (1x1), + x when the widths match."""
    e = F.conv2d(F.pad(x, (1, 1, 1, 1)), block.expand_conv.weight, block.expand_conv.bias)
    u = F.conv2d(e, block.fea_conv.weight, block.fea_conv.bias) + e[..., 1:-1, 1:-1]
    y = F.conv2d(u, block.reduce_conv.weight, block.reduce_conv.bias)
    return y + x if y.shape == x.shape else y


@pytest.mark.parametrize('cin, cout, ratio, bias', [(5, 3, 2, True), (3, 6, 2, False), (4, 4, 3, True),
                                                    (6, 2, 1.5, True), (2, 5, 1, False)])
def test_rrrbconv_fuses_exactly_on_every_pixel(cin, cout, ratio, bias):
    """float64 <= 1e-10 on sizes where every pixel is a border pixel (1x1, 2x2, 1x5) and on a photo."""
    block = randomize(RRRBConv(cin, cout, ratio=ratio, bias=bias), seed=cin * 10 + cout, std=1.0).double().eval()
    assert block.expand_conv.weight.shape[0] == int(ratio * cin) and block.with_idt == (cin == cout)
    for h, w in ((1, 1), (2, 2), (1, 5), (7, 6)):
        x = torch.randn(2, cin, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            y = block(x)
            assert (y - _rrrbconv_formula(block, x)).abs().max() <= 1e-12
            fused = rtsr_arch.reparameterize(copy.deepcopy(block))
            assert (fused(x) - y).abs().max() <= 1e-10
    assert (fused.rep_conv.bias is None) == (not bias)


def test_rrrbconv_with_equal_widths_is_rrrb():
    """Same keys, same forward, same fused conv as the library's RRRB (FMEN)."""
    a = randomize(RRRBConv(6, 6, ratio=2), seed=4, std=1.0).double()
    b = RRRB(6, ratio=2).double()
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    x = photo('rocket', 9, 11, dtype=torch.float64).repeat(1, 2, 1, 1)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        fa, fb = rtsr_arch.reparameterize(a), rtsr_arch.reparameterize(b)
        assert torch.equal(fa.rep_conv.weight, fb.rep_conv.weight) and torch.equal(fa.rep_conv.bias, fb.rep_conv.bias)


def test_rrrbconv_negative_control_zero_padding_breaks_the_border():
    """Padding the expanded map with zeros instead of the expand bias changes border pixels only."""
    block = randomize(RRRBConv(4, 3), seed=5, std=1.0).double()
    x = torch.randn(1, 4, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused = rtsr_arch.reparameterize(copy.deepcopy(block))(x)
        e = F.conv2d(x, block.expand_conv.weight, block.expand_conv.bias)
        wrong = block.reduce_conv(block.fea_conv(F.pad(e, (1, 1, 1, 1))) + e)
    diff = (wrong - fused).abs()
    assert diff[..., 1:-1, 1:-1].max() <= 1e-10 and diff.max() > 1e-3


def test_rrrbconv_refuses_impossible_arguments():
    for kwargs in (dict(in_channels=0, out_channels=3), dict(in_channels=3, out_channels=True),
                   dict(in_channels=3, out_channels=3, ratio=0), dict(in_channels=3, out_channels=3, ratio=0.2)):
        with pytest.raises(ValueError, match='^RRRBConv: ') as excinfo:
            RRRBConv(**kwargs)
        assert '\n' not in str(excinfo.value)


# ======================================================================= importer

def test_dipnet_importer_reads_training_and_deploy_forms():
    """Training-form state dicts determine every keyword but act_type (rep_ratio from the expand
    width, block_bias from the keys); deploy dicts leave rep_ratio (unused there) assumed."""
    model = DIPNet(num_feat=8, num_block=3, mid_channels=6, esa_channels=5, rep_ratio=3, block_bias=True, upscale=2)
    result = import_official_dipnet(model.state_dict(), {})
    assert result.assumed == ('act_type',)
    assert result.network_opt == model.network_opt
    deployed = rtsr_arch.reparameterize(model).state_dict()
    result = import_official_dipnet(deployed, {})
    assert result.assumed == ('rep_ratio', 'act_type')
    assert result.network_opt == {**model.network_opt, 'rep_ratio': 2, 'deploy': True}


def test_dipnet_detection_is_unique_against_rlfn_and_dlfan():
    """DIPNet has RLFN's top-level names and light ESA minus the trunk biases: the released DIPNet is
    claimed by DIPNet alone, and no RLFN or DLFAN (``c1_r.dbb_reparam``) file by DIPNet."""
    matches = find_importers(read_checkpoint(official_fixture('dipnet.pth'))[0])
    assert [m.arch for m, _ in matches] == ['DIPNet']
    for name in ('rlfn_ntire_x4.pth', 'rlfn_x4.pth', 'rlfn_s_x4.pth', 'dlfan.pth', 'dlfan_beforerep.pth'):
        path = OFFICIAL_FIXTURES / name
        if path.is_file():
            assert 'DIPNet' not in [m.arch for m, _ in find_importers(read_checkpoint(path)[0])], name
    rlfn_like = {k: v for k, v in DIPNet(deploy=True).state_dict().items()}
    rlfn_like['conv_1.bias'] = torch.zeros(44)  # an RLFN-style biased head is not DIPNet
    assert 'DIPNet' not in [m.arch for m, _ in find_importers(rlfn_like)]


# ======================================================================= recipes

STAGES = ('stage1_KD_L1', 'stage2_progressive_L2_p64', 'stage2_progressive_L2_p128', 'stage2_progressive_L2_p256',
          'stage2_progressive_L2_p384')


def test_dipnet_recipes_chain():
    """NTIRE 2023 ESR report §4.1: distillation (teacher outputs + features at four depths, enhanced
    HR targets), Adam 1e-4 halved every 100k, L1; then progressive fine-tuning with L2, Adam 2e-5
    halved every 20k, HR patches 64 -> 128 -> 256 -> 384; each stage starts from the previous one."""
    stages = [load_recipe('DIPNet', f'train_DIPNet_x4_{s}') for s in STAGES]
    for previous, stage in zip(stages, stages[1:]):
        assert stage['path']['pretrain_network_g'].startswith(f"experiments/{previous['name']}/models/")
        assert stage['network_g'] == previous['network_g']
    assert [s['model_type'] for s in stages] == ['KDModel'] + ['RTSRModel'] * 4
    assert [s['datasets']['train']['gt_size'] for s in stages] == [256, 64, 128, 256, 384]
    assert [s['train']['losses'][0]['type'] for s in stages] == ['L1Loss'] + ['MSELoss'] * 4
    assert [s['train']['optim_g']['lr'] for s in stages] == [1e-4] + [2e-5] * 4
    assert stages[0]['train']['scheduler']['milestones'][:2] == [100_000, 200_000]
    assert all(s['train']['scheduler']['milestones'][:2] == [20_000, 40_000] for s in stages[1:])
    kd = stages[0]['train']['kd']
    assert kd['output']['criterion'] == 'l1' and [f['student'] for f in kd['features']] == [
        f'block_{i}' for i in range(1, 5)]
    teacher = build_network(stages[0]['network_t'])
    assert type(teacher).__name__ == 'RLFN' and n_params(teacher) == 543_740  # bytedance/RLFN rlfn_x4.pth
    check_recipe_network(stages[0]['network_g'], DIPNet, deploy_params=243_252)
    for s in stages:
        assert s['datasets']['train']['type'] == 'PairedImageDataset'
        assert s['scale'] == 4 and s['val']['deploy'] is True
