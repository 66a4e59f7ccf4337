"""MFA specifics (team NJUST_E, NTIRE 2023 ESR report §4.5, Li et al., CVPRW 2023; official code
Zheng-MJ/NTIRE2023-ESR-MFA@845b73a, models/team16_MFA.py, MIT): the official state-dict layout and
parameter counts, an independent functional forward on the official keys, the released
``team16_mfa.pth`` (``params`` as the official test_demo.py, ``params_ema`` on request) against it
on real photographs at sizes divisible and not divisible by 16, the even-kernel ``padding='same'``
of the CCM (0 before, 1 after), the nearest resize whose ONNX form is exact at every size, and the
honest declarations (global operation: not tile-exact; minimum input 16). Keyword errors, preset
parameter counts, importer round trips and one ONNX export are checked for every architecture by
test_contract.py; the NTIRE 2023 ESR counts by test_ntire23_counts.py."""
import io
import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import check_official_beats_bicubic, check_param_key_on_request, SIZES_BY_16, check_half_precision, \
    check_official_reference, check_onnx_at, load_official, load_recipe, n_params, official_fixture, photo, \
    randomize, state_layout, tall_photo
from reference import layer_norm_2d
from rtsr_arch.archs.layers import ffn_scale_for, nearest_source_index, resize_nearest, resize_nearest_by_gather
from rtsr_arch.archs.mfa_arch import MFA, SameConv2d
from rtsr_arch.archs.official import find_importers, get_importer
from rtsr_arch.export import check_onnx, export_onnx
from rtsr_arch.loader import resolve_checkpoint
from rtsr_arch.utils.options import build_network

pytestmark = pytest.mark.usefixtures('torch_single_thread')

OFFICIAL = 'mfa.pth'


# ----------------------------------------------------------------------------- independent reference

def _same_pad(x, kh, kw):
    """PyTorch's padding='same' for stride 1: per axis (k - 1) // 2 zeros before, the rest after
    (k = 2: 0 before, 1 after; k = 5: 2 and 2)."""
    return F.pad(x, ((kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2))


@torch.no_grad()
def mfa_reference(sd, x, upscale=4, same_pad=_same_pad):
    """The official ``MFA`` forward (Zheng-MJ/NTIRE2023-ESR-MFA models/team16_MFA.py), written on the
    official keys with torch.nn.functional only: to_feat -> blocks [x + SAFM(LN(x)); x + CCM(LN(x))]
    -> + to_feat output -> to_img conv -> PixelShuffle. SAFM: depthwise 3x3 + GELU, chunk (odd
    channel to the first part); second part pooled to (H // 8, W // 8), depthwise 3x3 + GELU, chunk;
    its second half pooled to (H // 16, W // 16), depthwise 3x3 + GELU; both nearest-resized to
    H x W; concat -> 1x1 -> GELU -> times the SAFM input. CCM: 1x1 -> depthwise (k, 5) and (5, k),
    'same' padding -> chunk -> product (no activation) -> 1x1."""
    sd = {k: v.to(x.dtype) for k, v in sd.items()}

    def dw(t, key):
        w = sd[key + '.weight']
        kh, kw = w.shape[-2:]
        return F.conv2d(same_pad(t, kh, kw), w, sd[key + '.bias'], groups=w.shape[0])

    y = feat = F.conv2d(x, sd['to_feat.weight'], sd['to_feat.bias'], padding=1)
    for i in sorted({int(k.split('.')[1]) for k in sd if k.startswith('feats.')}):
        p = f'feats.{i}.'
        h, w = y.shape[-2:]
        t = layer_norm_2d(y, sd, p + 'norm1')
        x1, x2 = F.gelu(dw(t, p + 'safm.dwConv1.0')).chunk(2, dim=1)
        x2 = F.adaptive_max_pool2d(x2, (h // 8, w // 8))
        x2, x3 = F.gelu(dw(x2, p + 'safm.dwConv2.0')).chunk(2, dim=1)
        x3 = F.gelu(dw(F.adaptive_max_pool2d(x3, (h // 16, w // 16)), p + 'safm.dwConv3.0'))
        cat = torch.cat([x1, F.interpolate(x2, size=(h, w), mode='nearest'),
                         F.interpolate(x3, size=(h, w), mode='nearest')], dim=1)
        y = F.gelu(F.conv2d(cat, sd[p + 'safm.ConvCat.weight'], sd[p + 'safm.ConvCat.bias'])) * t + y
        t = layer_norm_2d(y, sd, p + 'norm2')
        t = F.conv2d(t, sd[p + 'ccm.Conv1.weight'], sd[p + 'ccm.Conv1.bias'])
        g1, g2 = dw(dw(t, p + 'ccm.Conv2.0'), p + 'ccm.Conv2.1').chunk(2, dim=1)
        y = F.conv2d(g1 * g2, sd[p + 'ccm.Conv3.weight'], sd[p + 'ccm.Conv3.bias']) + y
    out = F.conv2d(y + feat, sd['to_img.0.weight'], sd['to_img.0.bias'], padding=1)
    return F.pixel_shuffle(out, upscale)


# ----------------------------------------------------------------------------- layout and counts

def test_mfa_state_dict_layout_is_official():
    """``MFA(dim=33, n_blocks=8, ffn_scale=1.8)``: 164 tensors, official keys and shapes (CCM width
    int(33 * 1.8) = 59, doubled; CCM kernels (2, 5) and (5, 2))."""
    shapes = state_layout(MFA())
    expected = {'to_feat.weight': (33, 3, 3, 3), 'to_feat.bias': (33,),
                'to_img.0.weight': (48, 33, 3, 3), 'to_img.0.bias': (48,)}
    for i in range(8):
        p = f'feats.{i}.'
        for name, shape in [('norm1.weight', (33,)), ('norm1.bias', (33,)), ('norm2.weight', (33,)),
                            ('norm2.bias', (33,)), ('safm.dwConv1.0.weight', (33, 1, 3, 3)),
                            ('safm.dwConv1.0.bias', (33,)), ('safm.dwConv2.0.weight', (16, 1, 3, 3)),
                            ('safm.dwConv2.0.bias', (16,)), ('safm.dwConv3.0.weight', (8, 1, 3, 3)),
                            ('safm.dwConv3.0.bias', (8,)), ('safm.ConvCat.weight', (33, 33, 1, 1)),
                            ('safm.ConvCat.bias', (33,)), ('ccm.Conv1.weight', (118, 33, 1, 1)),
                            ('ccm.Conv1.bias', (118,)), ('ccm.Conv2.0.weight', (118, 1, 2, 5)),
                            ('ccm.Conv2.0.bias', (118,)), ('ccm.Conv2.1.weight', (118, 1, 5, 2)),
                            ('ccm.Conv2.1.bias', (118,)), ('ccm.Conv3.weight', (33, 59, 1, 1)),
                            ('ccm.Conv3.bias', (33,))]:
            expected[p + name] = shape
    assert shapes == expected and len(shapes) == 164
    assert n_params(MFA()) == n_params(MFA(deploy=True)) == n_params(MFA(preset='ntire23_esr')) == 98_524
    # a single form: deploy builds the same network, reparameterize changes no key
    assert rtsr_arch.reparameterize(MFA()).state_dict().keys() == MFA(deploy=True).state_dict().keys()
    c60 = MFA(preset='c60', upscale=2).state_dict()
    assert c60['feats.0.ccm.Conv2.0.weight'].shape == (240, 1, 3, 5) and c60['to_img.0.weight'].shape == (12, 60, 3, 3)


def test_mfa_parameter_count_formula():
    """Table 1: 0.099 M = 3x3 head + 8 x (2 LayerNorms + SAFM + CCM) + 3x3 tail (all convs with bias)."""
    safm = (33 * 9 + 33) + (16 * 9 + 16) + (8 * 9 + 8) + (33 * 33 + 33)
    ccm = (118 * 33 + 118) + 2 * (118 * 10 + 118) + (33 * 59 + 33)
    assert (3 * 33 * 9 + 33) + 8 * (4 * 33 + safm + ccm) + (33 * 48 * 9 + 48) == 98_524
    # the 2025 C60 models (checkpoints/MFA_X{2,3,4}.pth): 3x5 / 5x3 CCM kernels, FFN 2.0
    assert [n_params(MFA(preset='c60', upscale=s)) for s in (2, 3, 4)] == [284_412, 292_527, 303_888]


def test_mfa_counts_by_hand():
    """The NTIRE 2023 ESR counter's conventions on MFA's layers, exactly, at 3x256x256 (P = 65,536
    positions): a conv costs k_h * k_w * C_in * (C_out / groups) MACs per output position (a depthwise
    3x3 over 33 channels: 9 * 33 * 1; the (2, 5) CCM convs: 10 * 118 * 1), the pooled branches run
    at 32x32 and 16x16, GELU / LayerNorm / pooling / resizes / PixelShuffle cost 0; activations =
    conv output elements; 66 conv calls. Table 1 (NJUST_E): 6.02 G, 242.96 M, 66."""
    from rtsr_arch.utils.efficiency import count_ntire_esr

    p = 256 * 256
    block_macs = (9 * 33 + 33 * 33 + 33 * 118 + 2 * 10 * 118 + 59 * 33) * p + 9 * 16 * 32 * 32 + 9 * 8 * 16 * 16
    flops = 9 * 3 * 33 * p + 8 * block_macs + 9 * 33 * 48 * p
    block_acts = (33 + 33 + 3 * 118 + 33) * p + 16 * 32 * 32 + 8 * 16 * 16
    acts = 33 * p + 8 * block_acts + 48 * p
    assert (flops, acts) == (6_020_349_952, 242_958_336)
    counts = count_ntire_esr(MFA())
    assert (counts.params, counts.flops, counts.activations, counts.num_conv) == (98_524, flops, acts, 66)
    # a registered ReLU-family activation counts its output elements per call (4 calls per SAFM)
    relu = count_ntire_esr(MFA(act_type='relu'))
    assert relu.flops - flops == 8 * ((33 + 33) * p + 16 * 32 * 32 + 8 * 16 * 16)


def test_mfa_declarations():
    net = MFA()
    assert net.upscale == 4 and net.input_multiple == 1 and net.min_input_size == 16
    assert net.tile_exact is False and net.receptive_radius is None and net.fp16_safe is True
    assert net.value_range == (0.0, 1.0)
    assert net.code == 'Zheng-MJ/NTIRE2023-ESR-MFA@845b73a' and net.license == 'MIT'


def test_mfa_keyword_errors_specific_to_it():
    with pytest.raises(ValueError, match=r'MFA: ffn_scale=0.1: int\(num_feat \* ffn_scale\) must be >= 1'):
        MFA(num_feat=8, ffn_scale=0.1)
    with pytest.raises(ValueError, match=r"MFA: act_type='prelu'"):
        MFA(act_type='prelu')  # one activation module serves 33-, 16- and 8-channel maps
    with pytest.raises(ValueError, match=r'MFA: num_feat=3: expected an int >= 4'):
        MFA(num_feat=3)  # SAFM quarters the width
    with pytest.raises(ValueError, match=r'MFA: ccm_kernel=4: expected one of 2, 3'):
        MFA(ccm_kernel=4)


# ----------------------------------------------------------------------------- forward vs reference

@pytest.mark.parametrize('kwargs', [dict(num_feat=9, num_block=2),
                                    dict(num_feat=12, num_block=1, ffn_scale=2.0, ccm_kernel=3, upscale=2),
                                    dict(num_feat=5, num_block=2, ffn_scale=1.5, upscale=3)])
def test_mfa_matches_the_functional_reference(kwargs):
    """Random weights, float64, real photographs at sizes divisible and not divisible by 16; odd
    widths exercise the official chunk split (9 -> 5 + 4 -> 2 + 2)."""
    model = randomize(MFA(**kwargs), seed=5, std=1.0, fan_in=True).double().eval()
    sd = model.state_dict()
    for name, h, w in SIZES_BY_16:
        x = photo(name, h, w, dtype=torch.float64)
        with torch.no_grad():
            y = model(x)
        ref = mfa_reference(sd, x, model.upscale)
        assert y.shape == ref.shape == (1, 3, h * model.upscale, w * model.upscale)
        assert (y - ref).abs().max() <= 1e-12 * max(1.0, ref.abs().max()), (name, h, w)


def test_even_kernel_same_padding_is_pytorchs():
    """CCM's depthwise (2, 5) / (5, 2) convs: SameConv2d equals nn.Conv2d(padding='same') bit for
    bit (float64 and float32) and is zero padding 0 before and 1 after on the even axis."""
    gen = torch.Generator().manual_seed(3)
    for kernel in [(2, 5), (5, 2), (3, 5), (5, 3), (2, 2)]:
        ours = SameConv2d(6, 6, kernel, groups=6)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch warns about even kernels with padding='same'
            theirs = torch.nn.Conv2d(6, 6, kernel, 1, padding='same', groups=6)
            theirs.load_state_dict(ours.state_dict())
            for dtype in (torch.float64, torch.float32):
                x = torch.randn(2, 6, 17, 23, generator=gen, dtype=dtype)
                with torch.no_grad():
                    y = ours.to(dtype)(x)
                    assert torch.equal(y, theirs.to(dtype)(x)), (kernel, dtype)
        kh, kw = kernel
        padded = F.pad(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2))  # k = 2: 0 before, 1 after
        explicit = F.conv2d(padded, ours.weight, ours.bias, groups=6)
        assert (y - explicit).abs().max() <= 1e-6 and y.shape == x.shape


def test_even_kernel_padding_side_matters():
    """Negative control: padding the even axis before instead of after (a symmetric reading of
    'same') changes the output of the official weights visibly, so the reference check above
    would catch it."""
    sd = {k: v.double() for k, v in load_official(OFFICIAL)['params'].items()}
    x = photo('coffee', 32, 48, dtype=torch.float64)
    ref = mfa_reference(sd, x)
    wrong = mfa_reference(sd, x, same_pad=lambda t, kh, kw: F.pad(t, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2)))
    assert (wrong - ref).abs().max() > 1e-3


# ----------------------------------------------------------------------------- the exact nearest resize

def test_gather_resize_equals_interpolate_bit_for_bit():
    """The traceable gather form picks the same source rows as F.interpolate(mode='nearest') for
    every (H // 8 -> H) and (H // 16 -> H) with H = 16..2400, and for arbitrary pairs."""
    for h in range(16, 2401):
        for n_in in (h // 8, h // 16):
            x = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)
            assert torch.equal(resize_nearest_by_gather(x, (h, 1)), F.interpolate(x, size=(h, 1), mode='nearest')), \
                (n_in, h)
    gen = torch.Generator().manual_seed(0)
    for n_in, n_out in [(7, 3), (5, 5), (3, 6), (67, 540), (135, 1080), (11, 94)]:
        x = torch.randn(2, 3, n_in, n_in + 1, generator=gen, dtype=torch.float64)
        assert torch.equal(resize_nearest_by_gather(x, (n_out, n_out + 2)), F.interpolate(x, size=(n_out, n_out + 2)))
        assert torch.equal(resize_nearest(x, (n_out, n_out + 2)), F.interpolate(x, size=(n_out, n_out + 2)))
    assert nearest_source_index(14, 114).tolist() == F.interpolate(
        torch.arange(14.).view(1, 1, 14, 1), size=(114, 1)).flatten().long().tolist()


class _Resize(torch.nn.Module):
    def __init__(self, resize):
        super().__init__()
        self.resize = resize

    def forward(self, x, ref):
        return self.resize(x, ref.shape[-2:])


def _resize_session(resize):
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(_Resize(resize), (torch.rand(1, 1, 4, 1), torch.rand(1, 1, 38, 1)), buffer, dynamo=False,
                          opset_version=18, input_names=['x', 'ref'], output_names=['y'],
                          dynamic_axes={'x': {2: 'a', 3: 'b'}, 'ref': {2: 'h', 3: 'w'}, 'y': {2: 'h', 3: 'w'}})
    return ort.InferenceSession(buffer.getvalue())


def _mismatched_heights(session, heights):
    bad = []
    for h in heights:
        for n_in in (h // 8, h // 16):
            x = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)
            got = session.run(None, {'x': x.numpy(), 'ref': np.zeros((1, 1, h, 1), np.float32)})[0]
            if not np.array_equal(got, F.interpolate(x, size=(h, 1), mode='nearest').numpy()):
                bad.append((n_in, h))
    return bad


def test_exported_resize_is_exact_and_the_naive_one_is_not():
    """One graph traced at 38 rows, run by onnxruntime at every height 16..1200: the gather form
    matches PyTorch everywhere; onnxruntime's nearest Resize (what F.interpolate exports to) picks
    other source rows at some heights, first at 114 (14 -> 114): the trap the gather form avoids."""
    heights = range(16, 1201)
    assert _mismatched_heights(_resize_session(resize_nearest), heights) == []
    naive = _mismatched_heights(_resize_session(lambda x, size: F.interpolate(x, size=size, mode='nearest')), heights)
    assert naive and naive[0] == (14, 114)


# ----------------------------------------------------------------------------- importer

def test_ffn_scale_is_recovered_as_written():
    """The weights give the CCM width; the importer writes the shortest decimal that rebuilds it."""
    assert ffn_scale_for(33, 59) == 1.8 and ffn_scale_for(60, 120) == 2.0
    assert ffn_scale_for(8, 12) == 1.5 and ffn_scale_for(9, 16) == 1.8
    for num_feat in range(4, 70):
        for hidden in range(1, 4 * num_feat):
            assert int(num_feat * ffn_scale_for(num_feat, hidden)) == hidden, (num_feat, hidden)


@pytest.mark.parametrize('upscale', [2, 3, 4])
def test_c60_layout_is_imported(upscale):
    """The 2025 C60 checkpoints' layout (checkpoints/MFA_X{2,3,4}.pth: {params, params_ema}, CCM
    (3, 5)/(5, 3) kernels) is detected as MFA and imported as the c60 preset, preferring ``params``."""
    net = randomize(MFA(preset='c60', upscale=upscale), seed=upscale, std=1.0, fan_in=True)
    ema = randomize(MFA(preset='c60', upscale=upscale), seed=10 + upscale, std=1.0, fan_in=True)
    ckpt = {'params': net.state_dict(), 'params_ema': ema.state_dict()}
    matches = find_importers(ckpt)
    assert [imp.arch for imp, _ in matches] == ['MFA']
    result = get_importer('MFA').convert(matches[0][1], {})
    opt = {k: v for k, v in result.network_opt.items() if k not in ('type', 'deploy', 'act_type')}
    assert opt == dict(num_in_ch=3, num_out_ch=3, **MFA.presets['c60'], upscale=upscale)
    assert all(torch.equal(result.state_dict[k], v) for k, v in net.state_dict().items())
    assert result.assumed == ('deploy', 'act_type')


# ----------------------------------------------------------------------------- the official weights

def test_official_checkpoint_layout():
    """team16_mfa.pth: ``{params, params_ema}``, the same 164 keys, different values."""
    ckpt = load_official(OFFICIAL)
    assert set(ckpt) == {'params', 'params_ema'}
    assert ckpt['params'].keys() == ckpt['params_ema'].keys() == MFA().state_dict().keys()
    assert sum(v.numel() for v in ckpt['params'].values()) == 98_524
    assert not all(torch.equal(ckpt['params'][k], ckpt['params_ema'][k]) for k in ckpt['params'])
    assert [imp.arch for imp, _ in find_importers(ckpt)] == ['MFA']


@pytest.mark.parametrize('name, h, w', SIZES_BY_16)
def test_official_weights_reproduce_the_reference(name, h, w):
    """``rtsr_arch.load_model(path)`` (auto-detected, no architecture given) uses ``params`` as the
    official test_demo.py and reproduces the functional reference: float32 to rounding, float64 to 1e-12."""
    ckpt = load_official(OFFICIAL)
    resolved = resolve_checkpoint(official_fixture(OFFICIAL))
    assert resolved.how == 'official MFA checkpoint'
    assert resolved.network_opt == dict(type='MFA', num_in_ch=3, num_out_ch=3, num_feat=33, num_block=8,
                                        ffn_scale=1.8, ccm_kernel=2, upscale=4, act_type='gelu', deploy=False)
    check_official_reference(official_fixture(OFFICIAL), ckpt['params'], mfa_reference,
                             photo(name, h, w, dtype=torch.float64))


def test_official_weights_beat_bicubic():
    check_official_beats_bicubic(official_fixture(OFFICIAL), 'MFA')


def test_official_ema_weights_on_request():
    """``param_key='params_ema'`` loads the EMA weights, not the default ``params``."""
    check_param_key_on_request(official_fixture(OFFICIAL), mfa_reference, min_diff=1e-4)


def test_official_weights_fp16():
    """fp16_safe on the trained weights: half inference within 1e-2 of the output peak."""
    check_half_precision(official_fixture(OFFICIAL), photo('chelsea', 60, 90), torch.float16, 1e-2, relative=True)


def test_official_onnx_export_is_exact_at_every_size(tmp_path):
    """The official network exported once (traced at 38x54) runs in onnxruntime at sizes divisible
    and not divisible by 16 (16x16, 114 rows where a plain nearest Resize would be wrong, and 540
    rows, the 4K x4 LR height) and matches PyTorch to 1e-4 of the output peak."""
    net = rtsr_arch.load_model(official_fixture(OFFICIAL))
    images = [photo(name, h, w) for name, h, w in SIZES_BY_16[2:4]] + [tall_photo(16)]  # 16x16, 114x20, 540x16
    check_onnx_at(net, tmp_path / 'mfa.onnx', images)


def test_torch_export_onnx_graph_is_exact_at_other_sizes(tmp_path):
    """The torch.export exporter (export_onnx's fallback) also records the pooling and resize index
    arithmetic: a graph traced at 38x54 is exact at 114x70 and 16x16."""
    net = randomize(MFA(num_feat=8, num_block=1), seed=8, std=1.0, fan_in=True).eval()
    export_onnx(net, tmp_path / 'small.onnx', exporter='dynamo')
    checks = check_onnx(tmp_path / 'small.onnx', net, images=[photo('rocket', 114, 70), photo('chelsea', 16, 16)])
    assert max(c.max_abs_diff / c.peak for c in checks) <= 1e-4


# ----------------------------------------------------------------------------- the training recipe

def test_recipe_follows_the_report():
    """options/train/MFA: the two stages of the report's §4.5 (L1 + frequency loss from scratch, LR
    96 / batch 64 / Adam 1e-3 -> 1e-6 cosine / 500k; then L2, LR 160 / batch 16 / 5e-4 / 150k), on
    bicubic x4 pairs, the second starting from the first's result with the same network."""
    stage1, stage2 = (load_recipe('MFA', f'train_MFA_x4_{s}') for s in ('stage1_L1_FFT', 'stage2_L2'))
    assert stage2['path']['pretrain_network_g'] == f"experiments/{stage1['name']}/models/net_g_latest.pth"
    assert stage1['network_g'] == stage2['network_g']
    assert build_network(stage1['network_g']).network_opt == {**MFA(preset='ntire23_esr').network_opt, 'preset': None}
    assert [[loss['type'] for loss in s['train']['losses']] for s in (stage1, stage2)] == \
        [['L1Loss', 'FFTLoss'], ['MSELoss']]
    assert [(s['datasets']['train']['gt_size'] // 4, s['datasets']['train']['batch_size_per_gpu'])
            for s in (stage1, stage2)] == [(96, 64), (160, 16)]
    assert [(s['train']['optim_g']['type'], s['train']['optim_g']['lr'], s['train']['total_iter'])
            for s in (stage1, stage2)] == [('Adam', 1e-3, 500_000), ('Adam', 5e-4, 150_000)]
    assert stage1['train']['scheduler'] == dict(type='CosineAnnealingRestartLR', periods=[500_000],
                                                restart_weights=[1], eta_min=1e-6)
    for s in (stage1, stage2):
        train = s['datasets']['train']
        assert train['type'] == 'PairedImageDataset' and train['filename_tmpl'] == '{}x4' and s['scale'] == 4
        assert s['val']['metrics']['psnr'] == dict(type='calculate_psnr', crop_border=4, test_y_channel=False,
                                                   better='higher')
