"""SAFMN++ light specifics (team VPEG, AIS 2024 RTSR survey §3.3, Conde et al., CVPRW 2024;
official code sunny2109/SAFMN@68c2182, folder AIS2024-RTSR, Apache-2.0): the official state-dict
layout and parameter count, an independent functional forward on the official keys, the released
``light_safmnpp.pth`` (``params`` as the official inference.py, ``params_ema`` on request) against
it on real photographs, the traceable adaptive max pooling (bit-identical to
``F.adaptive_max_pool2d`` at every size, ONNX graphs correct at sizes not divisible by 8), and the
honest declarations (global operation: not tile-exact; minimum input 8). Keyword errors, param
counts of the presets, importer round trips and one ONNX export are checked for every
architecture by test_contract.py."""
import math
import warnings

import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import check_param_key_on_request, check_half_precision, check_official_reference, check_onnx_at, \
    load_official, n_params, official_fixture, photo, randomize, state_layout, tall_photo
from rtsr_arch.archs.layers import adaptive_max_pool2d_by, adaptive_max_pool2d_by_windows
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.safmnpp_arch import SAFMNPP
from rtsr_arch.loader import resolve_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')

OFFICIAL = 'light_safmnpp.pth'


# ----------------------------------------------------------------------------- independent reference

@torch.no_grad()
def safmnpp_reference(sd, x, upscale=4):
    """The official ``SAFMN_VIS24`` forward (sunny2109/SAFMN AIS2024-RTSR/light_safmnpp_arch.py),
    written on the official keys with torch.nn.functional only: bias-free convs throughout;
    AttBlock = SimpleSAFM then CCM without residuals; one global skip around the blocks."""
    sd = {k: v.to(x.dtype) for k, v in sd.items()}
    feat = F.conv2d(x, sd['to_feat.weight'], padding=1)
    y = feat
    blocks = sorted({int(k.split('.')[1]) for k in sd if k.startswith('feats.')})
    for i in blocks:
        p = f'feats.{i}.'
        h, w = y.shape[-2:]
        x0, x1 = F.conv2d(y, sd[p + 'conv1.proj.weight'], padding=1).chunk(2, dim=1)
        x2 = F.adaptive_max_pool2d(x0, (h // 8, w // 8))
        x2 = F.conv2d(x2, sd[p + 'conv1.dwconv.weight'], padding=1, groups=x2.shape[1])
        x2 = F.interpolate(x2, size=(h, w), mode='bilinear', align_corners=False)
        x2 = F.gelu(x2) * x0
        y = F.conv2d(F.gelu(torch.cat([x1, x2], dim=1)), sd[p + 'conv1.out.weight'])
        y = F.conv2d(F.gelu(F.conv2d(y, sd[p + 'conv2.conv.0.weight'], padding=1)), sd[p + 'conv2.conv.2.weight'])
    return F.pixel_shuffle(F.conv2d(y + feat, sd['to_img.0.weight'], padding=1), upscale)


# sizes divisible by 8 and not (540 = 8 * 67 + 4, the challenge's LR height), down to the minimum
PHOTO_SIZES = [('astronaut', 32, 48), ('coffee', 45, 67), ('rocket', 8, 8), ('astronaut', 15, 23)]


# ----------------------------------------------------------------------------- layout and counts

def test_safmnpp_state_dict_layout_is_official():
    """``SAFMN_VIS24(dim=32, n_blocks=2, ffn_scale=1.5)``: 12 bias-free tensors, official keys and shapes."""
    shapes = state_layout(SAFMNPP())
    expected = {'to_feat.weight': (32, 3, 3, 3), 'to_img.0.weight': (48, 32, 3, 3)}
    for i in range(2):
        p = f'feats.{i}.'
        expected.update({p + 'conv1.proj.weight': (32, 32, 3, 3), p + 'conv1.dwconv.weight': (16, 1, 3, 3),
                         p + 'conv1.out.weight': (32, 32, 1, 1), p + 'conv2.conv.0.weight': (48, 32, 3, 3),
                         p + 'conv2.conv.2.weight': (32, 48, 1, 1)})
    assert shapes == expected
    assert n_params(SAFMNPP()) == n_params(SAFMNPP(deploy=True)) == n_params(SAFMNPP(preset='ais24_light')) == 66_176
    # a single form: deploy builds the same network, reparameterize changes no key
    assert rtsr_arch.reparameterize(SAFMNPP()).state_dict().keys() == SAFMNPP(deploy=True).state_dict().keys()
    assert SAFMNPP(upscale=2).state_dict()['to_img.0.weight'].shape == (12, 32, 3, 3)


def test_safmnpp_parameter_count_formula():
    """Table 1 / Table 3: 0.066 M / 0.0662 M = 864 + 2 x (9216 + 144 + 1024 + 13824 + 1536) + 13824."""
    assert 3 * 32 * 9 + 2 * (32 * 32 * 9 + 16 * 9 + 32 * 32 + 32 * 48 * 9 + 48 * 32) + 32 * 48 * 9 == 66_176


def test_safmnpp_declarations():
    net = SAFMNPP()
    assert net.upscale == 4 and net.input_multiple == 1 and net.min_input_size == 8
    assert net.tile_exact is False and net.receptive_radius is None and net.fp16_safe is True
    assert net.code == 'sunny2109/SAFMN@68c2182' and net.license == 'Apache-2.0'


def test_safmnpp_keyword_errors_specific_to_it():
    with pytest.raises(ValueError, match=r'SAFMNPP: num_feat=33: expected an even int'):
        SAFMNPP(num_feat=33)
    with pytest.raises(ValueError, match=r'SAFMNPP: ffn_scale=0.01'):
        SAFMNPP(num_feat=8, ffn_scale=0.01)
    with pytest.raises(ValueError, match=r"SAFMNPP: act_type='prelu'"):
        SAFMNPP(act_type='prelu')  # one activation module serves 16- and 32-channel maps


# ----------------------------------------------------------------------------- forward vs reference

@pytest.mark.parametrize('kwargs', [{}, dict(num_feat=8, num_block=3, ffn_scale=2.0, upscale=2)])
def test_safmnpp_matches_the_functional_reference(kwargs):
    """Random weights, float64, real photographs at sizes divisible and not divisible by 8."""
    model = randomize(SAFMNPP(**kwargs), seed=5, std=1.0, fan_in=True).double().eval()
    sd = model.state_dict()
    for name, h, w in PHOTO_SIZES:
        x = photo(name, h, w, dtype=torch.float64)
        with torch.no_grad():
            y = model(x)
        ref = safmnpp_reference(sd, x, model.upscale)
        assert y.shape == ref.shape == (1, 3, h * model.upscale, w * model.upscale)
        assert (y - ref).abs().max() <= 1e-12 * max(1.0, ref.abs().max()), (name, h, w)


# ----------------------------------------------------------------------------- the traceable pooling

def _sizes():
    return sorted(set(range(8, 72)) | {96, 100, 135, 270, 540, 960, 1080})


@pytest.mark.parametrize('factor', [1, 2, 3, 5, 8, 16])
def test_window_pooling_equals_adaptive_max_pool_bit_for_bit(factor):
    """``F.adaptive_max_pool2d(x, (H // f, W // f))`` == the traceable window form, exactly, for
    every H, W >= f tried (all of 8..71 and the 4K LR sizes 540, 960, 1080)."""
    gen = torch.Generator().manual_seed(factor)
    for h in [s for s in _sizes() if s >= factor]:
        w = [s for s in _sizes() if s >= factor][(h * 7) % len([s for s in _sizes() if s >= factor])]
        x = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
        ref = F.adaptive_max_pool2d(x, (h // factor, w // factor))
        assert torch.equal(adaptive_max_pool2d_by_windows(x, factor), ref), (factor, h, w)
        assert torch.equal(adaptive_max_pool2d_by(x, factor), ref)
    # every H in 8..300 against the 8 the network uses (the widths stay small to keep it fast)
    for h in range(8, 301):
        x = torch.randn(1, 1, h, 8 + h % 13, generator=gen)
        assert torch.equal(adaptive_max_pool2d_by_windows(x, 8), F.adaptive_max_pool2d(x, (h // 8, (8 + h % 13) // 8)))


def test_window_pooling_bins_are_covered_by_two_windows():
    """The proof's premise, checked: with o = n // 8 bins every adaptive bin is 8..16 wide."""
    for n in range(8, 5000):
        o = n // 8
        widths = {math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)}
        assert 8 <= min(widths) and max(widths) <= 16, n


def test_traced_pooling_follows_the_input_size():
    """A TorchScript trace at 38x54 runs the window form and stays exact at other sizes; the
    eager path uses F.adaptive_max_pool2d itself."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(lambda t: adaptive_max_pool2d_by(t, 8), torch.rand(1, 2, 38, 54))
    for h, w in [(38, 54), (540, 96), (15, 23), (64, 64), (100, 135)]:
        x = torch.rand(1, 2, h, w)
        assert torch.equal(traced(x), F.adaptive_max_pool2d(x, (h // 8, w // 8))), (h, w)


def test_naive_adaptive_pool_export_is_the_trap():
    """Negative control: the official formulation (adaptive_max_pool2d with output size h // 8)
    cannot be exported with dynamic H/W by the TorchScript exporter, or would be wrong at other sizes."""
    import io

    import numpy as np
    import onnxruntime as ort

    class Naive(torch.nn.Module):
        def forward(self, x):
            h, w = x.shape[-2:]
            return F.interpolate(F.adaptive_max_pool2d(x, (h // 8, w // 8)), size=(h, w), mode='bilinear') * x

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(Naive(), (torch.rand(1, 2, 38, 54),), buffer, dynamo=False, opset_version=18,
                              input_names=['input'], output_names=['output'],
                              dynamic_axes={'input': {2: 'h', 3: 'w'}, 'output': {2: 'h', 3: 'w'}})
    except Exception:  # torch 2.14: "ONNX export of operator adaptive pooling, since output_size is not constant"
        return
    x = torch.rand(1, 2, 94, 130)
    try:
        got = ort.InferenceSession(buffer.getvalue()).run(None, {'input': x.numpy()})[0]
    except Exception:
        return
    assert np.abs(got - Naive()(x).numpy()).max() > 1e-3


# ----------------------------------------------------------------------------- the official weights

def test_official_checkpoint_layout():
    """light_safmnpp.pth: ``{params, params_ema}``, the same 12 keys, different values."""
    ckpt = load_official(OFFICIAL)
    assert set(ckpt) == {'params', 'params_ema'}
    assert ckpt['params'].keys() == ckpt['params_ema'].keys() == SAFMNPP().state_dict().keys()
    assert sum(v.numel() for v in ckpt['params'].values()) == 66_176
    assert not all(torch.equal(ckpt['params'][k], ckpt['params_ema'][k]) for k in ckpt['params'])
    assert [imp.arch for imp, _ in find_importers(ckpt)] == ['SAFMNPP']


@pytest.mark.parametrize('name, h, w', PHOTO_SIZES)
def test_official_weights_reproduce_the_reference(name, h, w):
    """``rtsr_arch.load_model(path)`` (auto-detected, no architecture given) uses ``params`` as the
    official inference.py and reproduces the functional reference: float32 to rounding, float64 to 1e-12."""
    ckpt = load_official(OFFICIAL)
    resolved = resolve_checkpoint(official_fixture(OFFICIAL))
    assert resolved.how == 'official SAFMNPP checkpoint'
    assert resolved.network_opt == dict(type='SAFMNPP', num_in_ch=3, num_out_ch=3, num_feat=32, num_block=2,
                                        ffn_scale=1.5, upscale=4, act_type='gelu', deploy=False)
    check_official_reference(official_fixture(OFFICIAL), ckpt['params'], safmnpp_reference,
                             photo(name, h, w, dtype=torch.float64), near=(-0.2, 1.2))


def test_official_ema_weights_on_request():
    """``param_key='params_ema'`` loads the EMA weights, not the default ``params``."""
    check_param_key_on_request(official_fixture(OFFICIAL), safmnpp_reference, min_diff=1e-4)


def test_official_weights_fp16():
    """fp16_safe on the trained weights: half inference within 1e-2 of the output peak."""
    check_half_precision(official_fixture(OFFICIAL), photo('chelsea', 60, 90), torch.float16, 1e-2, relative=True)


def test_official_onnx_export_is_exact_at_every_size(tmp_path):
    """The official network exported once (traced at 38x54) runs in onnxruntime at sizes divisible
    and not divisible by 8 (8x8, 15x23 and 540 rows, the challenge's LR height) and matches PyTorch
    to 1e-4 of the output peak."""
    net = rtsr_arch.load_model(official_fixture(OFFICIAL))
    images = [photo(name, h, w) for name, h, w in PHOTO_SIZES[2:]] + [tall_photo(40)]  # 8x8, 15x23, 540x40
    check_onnx_at(net, tmp_path / 'safmnpp.onnx', images)
