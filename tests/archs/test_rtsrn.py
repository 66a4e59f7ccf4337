"""RTSRN specifics: the NTIRE 2023 Real-Time SR challenge baseline (eduardzamfir/NTIRE23-RTSR@2bc37ba,
``demo/models/rtsrn.py``, ``RealTimeSRNet`` / ``rtsrn(scale)``; Apache-2.0). No official weights are
published, so a checkpoint in the official layout (what ``demo/sr_demo.py`` loads: a raw state dict
of ``RealTimeSRNet``) is made here with random weights and loaded through ``rtsr_arch.load_model``
with auto-detection; an independent functional forward on the official keys is the reference.
Fusion, parameter counts, keyword errors, tiling, ONNX and the importer round trip are checked for
every architecture by test_contract.py."""
import math

import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import photo, randomize, state_layout
from reference import conv, upsample
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.rtsrn_arch import RTSRN, import_official_rtsrn
from rtsr_arch.loader import resolve_checkpoint
from rtsr_arch.utils.efficiency import count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')

PHOTO_CROPS = (('astronaut', 48, 64), ('coffee', 37, 51), ('chelsea', 40, 45))


# ----------------------------------------------------------------------------- independent reference

@torch.no_grad()
def rtsrn_reference(sd, x, act='relu'):
    """RealTimeSRNet.forward written from its description on the official keys, torch.nn.functional
    only: res = head.0(x); the body convs are the 4-D ``body.<i>.weight`` in index order, each but
    the last followed by the activation (ReLU, or a PReLU whose slopes are ``body.<i+1>.weight``);
    out = PixelShuffle(s)(upsample.0(res + body(res))), s from upsample.0's output channels."""
    res = conv(x, sd, 'head.0', padding=1)
    convs = sorted(int(k.split('.')[1]) for k in sd if k.startswith('body.') and sd[k].dim() == 4)
    y = res
    for n, i in enumerate(convs):
        y = conv(y, sd, f'body.{i}', padding=1)
        if n < len(convs) - 1:
            if act == 'relu':
                y = F.relu(y)
            elif act == 'prelu':
                y = F.prelu(y, sd[f'body.{i + 1}.weight'])
            elif act != 'linear':
                raise ValueError(act)
    return upsample(res + y, sd, 'upsample.0', x.shape[1])


def random_official_state_dict(upscale=2, seed=0, num_feat=64, num_block=5):
    """A state dict in the official layout (keys and shapes of ``rtsrn(scale)``), random weights
    (fan-in scaled), written out key by key from the official module structure."""
    gen = torch.Generator().manual_seed(seed)

    def conv(cout, cin):
        weight = torch.randn(cout, cin, 3, 3, generator=gen) / math.sqrt(9 * cin)
        return weight, torch.randn(cout, generator=gen) * 0.1

    sd = {}
    sd['head.0.weight'], sd['head.0.bias'] = conv(num_feat, 3)
    for i in range(num_block):  # nn.Sequential: conv at 2i, ReLU (no parameters) at 2i + 1
        sd[f'body.{2 * i}.weight'], sd[f'body.{2 * i}.bias'] = conv(num_feat, num_feat)
    sd['upsample.0.weight'], sd['upsample.0.bias'] = conv(3 * upscale ** 2, num_feat)
    return sd


# ----------------------------------------------------------------------------- layout

def _layout(model):
    return list(state_layout(model).items())  # in order


@pytest.mark.parametrize('upscale', [2, 3, 4])
def test_rtsrn_state_dict_layout_is_official(upscale):
    """``RealTimeSRNet(3, 64, 5, s)`` keys: head.0, body.{0,2,4,6,8} (ReLU at the odd indices),
    upsample.0 (conv to 3 s^2, then PixelShuffle); identical in the deploy build and after
    ``reparameterize`` (nothing to fuse)."""
    expected = [('head.0.weight', (64, 3, 3, 3)), ('head.0.bias', (64,))]
    for i in (0, 2, 4, 6, 8):
        expected += [(f'body.{i}.weight', (64, 64, 3, 3)), (f'body.{i}.bias', (64,))]
    expected += [('upsample.0.weight', (3 * upscale ** 2, 64, 3, 3)), ('upsample.0.bias', (3 * upscale ** 2,))]
    model = RTSRN(upscale=upscale)
    assert _layout(model) == expected
    assert _layout(RTSRN(upscale=upscale, deploy=True)) == expected
    assert [type(m).__name__ for m in model.body] == ['Conv2d', 'ReLU'] * 4 + ['Conv2d']
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert rtsr_arch.reparameterize(model) is model and model.network_opt['deploy'] is True
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items()) and model.state_dict().keys() == sd.keys()
    assert model.receptive_radius == 7  # head + 5 body convs + upsample conv, 3x3 each


def test_rtsrn_prelu_slopes_sit_at_the_activation_indices():
    layout = dict(_layout(RTSRN(act_type='prelu', num_block=3, num_feat=16)))
    assert layout['body.1.weight'] == layout['body.3.weight'] == (16,) and 'body.5.weight' not in layout
    assert [k for k in layout if k.startswith('body.') and k.endswith('.bias')] == ['body.0.bias', 'body.2.bias',
                                                                                     'body.4.bias']


def test_rtsrn_parameter_counts_by_formula():
    """head 9·3·C + C, body n(9C² + C), upsample 9·C·3s² + 3s²: 193,356 / 202,011 / 214,128 for
    C = 64, n = 5 (LRSRN paper Table 3 lists 193.40K and 202.00K)."""
    for s, published in ((2, 193_356), (3, 202_011), (4, 214_128)):
        c, n, out = 64, 5, 3 * s * s
        formula = 9 * 3 * c + c + n * (9 * c * c + c) + 9 * c * out + out
        assert formula == published == sum(p.numel() for p in RTSRN(upscale=s).parameters())


def test_rtsrn_ntire_counts_by_formula():
    """NTIRE ESR counter conventions at (1, 3, H, W): conv MACs without bias plus the outputs of the
    4 ReLUs (in place, counted once each); activations are the conv outputs; 7 convs."""
    h, w = 256, 256
    for s in (2, 3):
        counts = count_ntire_esr(RTSRN(upscale=s).eval(), (1, 3, h, w))
        macs = h * w * 9 * (3 * 64 + 5 * 64 * 64 + 64 * 3 * s * s)
        assert counts.flops == macs + 4 * 64 * h * w
        assert counts.activations == h * w * (6 * 64 + 3 * s * s) and counts.num_conv == 7


# ----------------------------------------------------------------------------- official-layout checkpoints

@pytest.mark.parametrize('upscale', [2, 3])
@pytest.mark.parametrize('wrap', ['raw', 'dataparallel'])
def test_rtsrn_official_checkpoint_loads_and_matches_reference(upscale, wrap, tmp_path):
    """An official-layout checkpoint (raw, as demo/sr_demo.py loads it, or a DataParallel training
    checkpoint ``{'state_dict': {'module.…'}}``) is detected with no arch given and reproduces the
    reference on real photographs: float32 to rounding, float64 to ~1e-12."""
    sd = random_official_state_dict(upscale, seed=upscale)
    path = tmp_path / f'rtsrn_x{upscale}.pth'
    torch.save(sd if wrap == 'raw' else {'epoch': 3, 'state_dict': {f'module.{k}': v for k, v in sd.items()}}, path)
    resolved = resolve_checkpoint(path)
    assert resolved.how == 'official RTSRN checkpoint'
    assert resolved.network_opt == dict(type='RTSRN', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=5,
                                        upscale=upscale, act_type='relu', deploy=False)
    assert any('act_type' in note for note in resolved.notes)
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
        model = rtsr_arch.load_model(path, dtype=dtype)
        assert isinstance(model, RTSRN) and not model.training
        sd_d = {k: v.to(dtype) for k, v in sd.items()}
        for name, h, w in PHOTO_CROPS:
            x = photo(name, h, w, dtype=dtype)
            with torch.no_grad():
                y = model(x)
            ref = rtsrn_reference(sd_d, x)
            err = (y - ref).abs().max().item()
            print(f'RTSRN x{upscale} {wrap} {dtype} {name} {h}x{w}: max |ours - reference| = {err:.3g}')
            assert y.shape == (1, 3, h * upscale, w * upscale)
            assert err <= tol * max(1.0, ref.abs().max().item())


def test_rtsrn_reference_is_not_trivially_ours():
    """Negative controls for the reference comparison: dropping the long skip, or the ReLUs,
    changes the output by far more than rounding."""
    sd = random_official_state_dict(2, seed=7)
    model = RTSRN().double().eval()
    model.load_state_dict({k: v.double() for k, v in sd.items()})
    x = photo('coffee', 32, 40, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        assert (y - rtsrn_reference({k: v.double() for k, v in sd.items()}, x)).abs().max() <= 1e-12
        assert (y - rtsrn_reference({k: v.double() for k, v in sd.items()}, x, act='linear')).abs().max() > 1e-3
        no_skip = model.upsample(model.body(model.head(x)))
        assert (y - no_skip).abs().max() > 1e-3


def test_rtsrn_importer_activation_override_and_prelu():
    sd = random_official_state_dict(3, seed=1, num_feat=16, num_block=3)
    result = import_official_rtsrn(sd, {'act_type': 'gelu'})
    assert result.network_opt['act_type'] == 'gelu' and 'act_type' not in result.assumed
    prelu = randomize(RTSRN(num_feat=16, num_block=3, upscale=3, act_type='prelu'), seed=3, fan_in=True)
    result = import_official_rtsrn(prelu.state_dict(), {})
    assert result.network_opt['act_type'] == 'prelu' and 'act_type' not in result.assumed
    x = photo('chelsea', 20, 22, dtype=torch.float64)
    with torch.no_grad():
        ref = rtsrn_reference({k: v.double() for k, v in prelu.state_dict().items()}, x, act='prelu')
        assert (prelu.double().eval()(x) - ref).abs().max() <= 1e-12


def test_rtsrn_pre_relu_fix_checkpoints_import_as_linear(tmp_path):
    """Quirk of the official history: before commit 9f97c35 (24 Feb 2023) the body loop read
    ``if i > num_blocks: body.append(nn.ReLU(True))`` (never true), so the body was 5 linear convs
    with consecutive keys body.{0..4}. Such a checkpoint is renumbered and imported with
    act_type='linear', which reproduces what that code computed; asking for another activation
    is refused."""
    sd = random_official_state_dict(2, seed=11)
    old = {}
    for k, v in sd.items():
        if k.startswith('body.'):
            _, i, suffix = k.split('.')
            k = f'body.{int(i) // 2}.{suffix}'
        old[k] = v
    assert sorted({k.split('.')[1] for k in old if k.startswith('body.')}) == ['0', '1', '2', '3', '4']
    assert [imp.arch for imp, _ in find_importers(old)] == ['RTSRN']
    path = tmp_path / 'rtsrn_pre_9f97c35.pth'
    torch.save(old, path)
    resolved = resolve_checkpoint(path)
    assert resolved.network_opt['act_type'] == 'linear' and any('9f97c35' in n for n in resolved.notes)
    model = rtsr_arch.load_model(path, dtype=torch.float64)
    x = photo('astronaut', 30, 34, dtype=torch.float64)
    with torch.no_grad():
        err = (model(x) - rtsrn_reference({k: v.double() for k, v in old.items()}, x, act='linear')).abs().max()
    assert err <= 1e-12
    with pytest.raises(ValueError, match="only 'linear'"):
        import_official_rtsrn(old, {'act_type': 'relu'})


@pytest.mark.parametrize('mutate', ['extra_key', 'odd_conv', 'gap', 'bad_width', 'no_upsample'])
def test_rtsrn_detection_is_strict(mutate):
    """Anything but the official layout is not claimed: an extra top-level key, a conv at an odd
    index among even ones, a missing body conv, a body conv of another width, no upsample conv."""
    sd = random_official_state_dict(2, num_feat=8, num_block=3)
    if mutate == 'extra_key':
        sd['tail.0.weight'] = torch.zeros(3, 8, 3, 3)
    elif mutate == 'odd_conv':
        sd['body.1.weight'], sd['body.1.bias'] = torch.zeros(8, 8, 3, 3), torch.zeros(8)
    elif mutate == 'gap':
        del sd['body.2.weight'], sd['body.2.bias']
    elif mutate == 'bad_width':
        sd['body.2.weight'] = torch.zeros(8, 4, 3, 3)
    else:
        del sd['upsample.0.weight'], sd['upsample.0.bias']
    assert 'RTSRN' not in [imp.arch for imp, _ in find_importers(sd)]
