"""PRFDN specifics (NTIRE 2023 ESR report §4.21, team SEU_CNII, "Expand Big, Then Shrink" RFDN;
official code yindaheng98/NTIRE2023_ESR@9d5f418 ``models/rfdn_half/``, MIT): the released
``PRFDN_28.992.pth`` is a whole pickled module (``torch.save(model)`` of ``RFDNEXP``): read by the
restricted reader without running its code, its structure inspected as data, its state dict
loaded through ``rtsr_arch.load_model`` (auto-detected) against an independent functional reference
on real photographs; what tells a PRFDN state dict from an RFDN one (the ESA width), the importer
and the recipe. The generic checks are in test_contract.py; the NTIRE 2023 ESR counts in
test_ntire23_counts.py.
"""
import os
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import ROOT, photo
from rtsr_arch.archs.official import PickledModuleStateDict, find_importers, official_state_dict
from rtsr_arch.archs.prfdn_arch import PRFDN, import_official_prfdn, is_prfdn_state_dict
from rtsr_arch.archs.rfdn_arch import RFDN
from rtsr_arch.loader import read_checkpoint, resolve_checkpoint
from rtsr_arch.utils.checkpoint import PickledPlaceholder, load_checkpoint
from rtsr_arch.utils.options import build_network, load_options

pytestmark = pytest.mark.usefixtures('torch_single_thread')

FIXTURES_DIR = Path(os.environ.get('RTSR_OFFICIAL_FIXTURES') or Path(__file__).resolve().parents[3] /
                    'shared/fixtures/official')
PHOTOS = ('astronaut', 'coffee', 'chelsea')
SLOPE = 0.05


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def fixture(name):
    path = FIXTURES_DIR / name
    if not path.is_file():
        pytest.skip(f'official fixture {path} not found (set RTSR_OFFICIAL_FIXTURES)')
    return path


# ======================================================================= independent reference
# models/rfdn_half/RFDNEXP.py (RFDNEXP, RFDB_EXP) and models/rfdn_baseline/block.py (ESA, the
# forward ESA_EXP inherits), data range 255, on the official keys with torch.nn.functional only.

def _conv(t, sd, name, padding=0, stride=1):
    return F.conv2d(t, sd[f'{name}.weight'], sd[f'{name}.bias'], stride=stride, padding=padding)


def _esa(x, sd, p):
    c1_ = _conv(x, sd, f'{p}.conv1')
    v = F.max_pool2d(_conv(c1_, sd, f'{p}.conv2', stride=2), kernel_size=7, stride=3)
    v = F.relu(_conv(v, sd, f'{p}.conv_max', padding=1))
    c3 = _conv(F.relu(_conv(v, sd, f'{p}.conv3', padding=1)), sd, f'{p}.conv3_', padding=1)
    c3 = F.interpolate(c3, (x.shape[2], x.shape[3]), mode='bilinear', align_corners=False)
    return x * torch.sigmoid(_conv(c3 + _conv(c1_, sd, f'{p}.conv_f'), sd, f'{p}.conv4'))


def _rfdb(x, sd, p):
    act = lambda t: F.leaky_relu(t, SLOPE)  # noqa: E731
    d1 = act(_conv(x, sd, f'{p}.c1_d'))
    r1 = act(_conv(x, sd, f'{p}.c1_r', padding=1) + x)
    d2 = act(_conv(r1, sd, f'{p}.c2_d'))
    r2 = act(_conv(r1, sd, f'{p}.c2_r', padding=1) + r1)
    d3 = act(_conv(r2, sd, f'{p}.c3_d'))
    r3 = act(_conv(r2, sd, f'{p}.c3_r', padding=1) + r2)
    r4 = act(_conv(r3, sd, f'{p}.c4', padding=1))
    return _esa(_conv(torch.cat([d1, d2, d3, r4], 1), sd, f'{p}.c5'), sd, f'{p}.esa')


def prfdn_reference(sd, x):
    """The official forward on RGB ``x`` in [0, 1]: the network runs on x * 255 (data range 255) and
    its output is divided by 255."""
    blocks = len({k.split('.')[0] for k in sd if k[0] == 'B'})
    fea = _conv(x * 255.0, sd, 'fea_conv', padding=1)
    outs, out = [], fea
    for i in range(1, blocks + 1):
        out = _rfdb(out, sd, f'B{i}')
        outs.append(out)
    out = _conv(F.leaky_relu(_conv(torch.cat(outs, 1), sd, 'c.0'), SLOPE), sd, 'LR_conv', padding=1) + fea
    up = _conv(out, sd, 'upsampler.0', padding=1)
    return F.pixel_shuffle(up, int(round((up.shape[1] // x.shape[1]) ** 0.5))) / 255.0


def psnr(y, hr, border=4):
    mse = ((y.clamp(0, 1) - hr)[..., border:-border, border:-border] ** 2).mean()
    return (-10 * torch.log10(mse)).item()


def lr_photos(size=48, scale=4, dtype=torch.float32):
    """HR crops of three photographs and their antialiased bicubic LR (the NTIRE ESR degradation)."""
    hr = torch.cat([photo(p, size * scale, size * scale, dtype=torch.float64) for p in PHOTOS])
    lr = F.interpolate(hr, scale_factor=1 / scale, mode='bicubic', antialias=True, align_corners=False)
    return hr.to(dtype), lr.clamp(0, 1).to(dtype)


# ======================================================================= the pickled module

def test_prfdn_file_is_a_pickled_module_read_as_data():
    """``torch.load(weights_only=True)`` refuses the file (it names the team's classes); the restricted
    reader rebuilds its tensors and records every other object as an inert placeholder, so its
    structure can be checked without running any of its code: RFDNEXP -> RFDB_EXP blocks with one
    LeakyReLU(0.05) each, ESA_EXP with conv2 3x3 stride 2 padding 0 and an in-place ReLU, the
    upsampler a 3x3 conv then PixelShuffle(4)."""
    path = fixture('prfdn_seu.pth')
    with pytest.raises(Exception):
        torch.load(path, map_location='cpu', weights_only=True)
    obj = load_checkpoint(path)
    assert isinstance(obj, PickledPlaceholder) and obj.pickled_name == 'models.rfdn_half.RFDNEXP.RFDNEXP'
    modules = obj._modules
    assert list(modules) == ['fea_conv', 'B1', 'B2', 'B3', 'B4', 'c', 'LR_conv', 'upsampler']
    block = modules['B1']._modules
    assert modules['B1'].pickled_name == 'models.rfdn_half.RFDNEXP.RFDB_EXP'
    assert block['act'].pickled_name == 'torch.nn.modules.activation.LeakyReLU' and block['act'].negative_slope == SLOPE
    assert modules['c']._modules['1'].negative_slope == SLOPE
    esa = block['esa']
    assert esa.pickled_name == 'models.rfdn_half.block.ESA_EXP'
    assert (esa._modules['conv2'].stride, esa._modules['conv2'].padding) == ((2, 2), (0, 0))
    assert esa._modules['relu'].pickled_name == 'torch.nn.modules.activation.ReLU'
    assert modules['upsampler']._modules['1'].upscale_factor == 4
    sd = official_state_dict(obj)
    assert isinstance(sd, PickledModuleStateDict) and sd.pickled_class == obj.pickled_name
    assert len(sd) == 128 and sum(v.numel() for v in sd.values()) == 616_312


def test_prfdn_file_keeps_the_zero_expansion_of_fea_conv():
    """The network was expanded from a trained RFDN (C 50) by zero-padding its convs: fea_conv's
    extra ten output channels are still exactly zero in the released file."""
    sd = official_state_dict(load_checkpoint(fixture('prfdn_seu.pth')))
    assert sd['fea_conv.weight'].shape == (60, 3, 3, 3)
    assert not sd['fea_conv.weight'][50:].any() and not sd['fea_conv.bias'][50:].any()
    assert sd['fea_conv.weight'][:50].abs().max() > 0.01
    assert sd['B1.esa.conv1.weight'].shape == (14, 60, 1, 1)  # ESA 14, not 60 // 4 = 15


def test_prfdn_official_weights_match_the_reference():
    """``PRFDN_28.992.pth`` through load_model (auto-detected; the import notes say it is a pickled
    module read without running its code) reproduces the independent reference on photographs to
    float32 rounding (float64: ~1e-12) and beats bicubic."""
    path = fixture('prfdn_seu.pth')
    resolved = resolve_checkpoint(path)
    assert resolved.how == 'official PRFDN checkpoint'
    assert any('pickled module' in note and 'without running its code' in note for note in resolved.notes)
    official = dict(resolved.state_dict)
    model = rtsr_arch.load_model(path)
    assert type(model) is PRFDN and n_params(model) == 616_312
    assert model.network_opt == {'type': 'PRFDN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 60, 'num_block': 4,
                                 'upscale': 4, 'act_type': 'lrelu', 'esa_channels': 14, 'deploy': True}
    hr, lr = lr_photos()
    with torch.no_grad():
        y = model(lr)
        diff = (y - prfdn_reference(official, lr)).abs().max().item()
        model64 = rtsr_arch.load_model(path, dtype=torch.float64)
        y64 = model64(lr.double())
        diff64 = (y64 - prfdn_reference({k: v.double() for k, v in official.items()}, lr.double())).abs().max().item()
    bicubic = F.interpolate(lr.double(), scale_factor=4, mode='bicubic', align_corners=False)
    gain = psnr(y64, hr.double()) - psnr(bicubic, hr.double())
    print(f'PRFDN_28.992.pth: max |ours - reference| float32 {diff:.2e}, float64 {diff64:.2e}; '
          f'PSNR {psnr(y64, hr.double()):.2f} dB ({gain:+.2f} dB over bicubic)')
    assert y.shape == (3, 3, 192, 192) and diff <= 5e-6 and diff64 <= 1e-12 and gain > 1.0


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_prfdn_official_weights_in_half_precision(dtype, tol):
    """fp16_safe: the [0, 255] features of the released network stay within float16's range."""
    path = fixture('prfdn_seu.pth')
    _, lr = lr_photos(size=32)
    with torch.no_grad():
        y32 = rtsr_arch.load_model(path)(lr)
        y16 = rtsr_arch.load_model(path, dtype=dtype)(lr.to(dtype)).float()
    diff = (y16 - y32).abs().max().item()
    print(f'PRFDN_28.992.pth {dtype}: max |diff| vs float32 {diff:.2e}')
    assert torch.isfinite(y16).all() and diff <= tol


# ======================================================================= PRFDN vs RFDN

def test_prfdn_is_told_from_rfdn_by_its_esa_width():
    """Same keys as RFDN; the ESA width other than C // 4 is PRFDN's (the official file: C 60, f 14),
    C // 4 is RFDN's (the official RFDN always uses C // 4); PRFDN refuses f = C // 4."""
    assert is_prfdn_state_dict(PRFDN().state_dict()) and is_prfdn_state_dict(PRFDN(num_feat=8, esa_channels=3)
                                                                             .state_dict())
    assert not is_prfdn_state_dict(RFDN().state_dict()) and not is_prfdn_state_dict(RFDN(num_feat=60).state_dict())
    assert set(PRFDN().state_dict()) == set(RFDN().state_dict())
    with pytest.raises(ValueError, match=r'^PRFDN: esa_channels=15: expected anything but num_feat // 4 = 15'):
        PRFDN(esa_channels=15)


def test_prfdn_detection_is_unique():
    """The released file and PRFDN state dicts are claimed by PRFDN's importer only, RFDN's by RFDN's.
    (Needs RFDN's detection to leave ESA widths other than C // 4 to PRFDN.)"""
    assert [m.arch for m, _ in find_importers(read_checkpoint(fixture('prfdn_seu.pth'))[0])] == ['PRFDN']
    assert [m.arch for m, _ in find_importers(PRFDN(num_feat=8, esa_channels=3).state_dict())] == ['PRFDN']
    assert 'PRFDN' not in [m.arch for m, _ in find_importers(RFDN().state_dict())]


def test_prfdn_importer_infers_the_shapes():
    model = PRFDN(num_feat=12, num_block=3, upscale=2, esa_channels=5)
    result = import_official_prfdn(model.state_dict(), {})
    assert set(result.assumed) == {'act_type', 'deploy'} and result.network_opt == model.network_opt
    assert not any('pickled' in note for note in result.notes)  # a plain state dict


# ======================================================================= recipe

def test_prfdn_recipe():
    """Report §4.21: LSDIR, Adam, lr 1e-5, 300 epochs; starts from the converted released weights."""
    opt = load_options(ROOT / 'options/train/PRFDN/train_PRFDN_x4_LSDIR_finetune.yml')
    train, data = opt['train'], opt['datasets']['train']
    assert train['optim_g']['type'] == 'Adam' and train['optim_g']['lr'] == 1e-5
    assert 'LSDIR' in data['dataroot_gt'] and data['type'] == 'PairedImageDataset'
    assert train['total_iter'] == 300 * -(-84_991 // (data['batch_size_per_gpu'] * opt['num_gpu']))
    net = build_network(opt['network_g'])
    assert type(net) is PRFDN and n_params(net) == 616_312
