"""PFDN specifics (Partial Feature Distillation Network, team KaiBai Group, NTIRE 2023 ESR report
§4.7; official code icandle/PlainUSR@d7ff11a ``2023_PFDN_NTIRE/models/team08_PFDN.py``, MIT): the
official state-dict layout (``convN.rep_conv``), an independent functional reference on the
official keys that replicates the official in-place partial write literally, the released
``team08_PFDN.pth`` loaded through ``rtsr_arch.load_model`` against it on real photographs, the
RRRB training form, the in-place quirk (the official block cannot be trained; ours trains with the
same gradients as an out-of-place reference), the importer and the staged recipes. Fusion, keyword
errors and the generic checks are in test_contract.py; the NTIRE 2023 ESR counts in
test_ntire23_counts.py.
"""
import copy
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import ROOT, photo, randomize
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.pfdn_arch import PFDB, PFDN, import_official_pfdn
from rtsr_arch.loader import read_checkpoint
from rtsr_arch.utils.options import build_network, load_options

pytestmark = pytest.mark.usefixtures('torch_single_thread')

FIXTURES_DIR = Path(os.environ.get('RTSR_OFFICIAL_FIXTURES') or Path(__file__).resolve().parents[3] /
                    'shared/fixtures/official')
PHOTOS = ('astronaut', 'coffee', 'chelsea')
SLOPE = 0.05  # the official ``nn.LeakyReLU(0.05, True)``


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def fixture(name):
    path = FIXTURES_DIR / name
    if not path.is_file():
        pytest.skip(f'official fixture {path} not found (set RTSR_OFFICIAL_FIXTURES)')
    return path


# ======================================================================= independent reference
# icandle/PlainUSR 2023_PFDN_NTIRE/models/team08_PFDN.py (deploy keys ``convN.rep_conv``) and the
# RRRB training form (NJU-Jet/FMEN train_fmen.py formula), torch.nn.functional only.

def _conv(t, sd, name, padding=0, stride=1):
    return F.conv2d(t, sd[f'{name}.weight'], sd.get(f'{name}.bias'), stride=stride, padding=padding)


def _rrrb(t, sd, name):
    """Deploy ``name.rep_conv``; training: 1x1 expand, one pixel of the expand bias around it, 3x3
    valid + the expanded map, 1x1 reduce + t."""
    if f'{name}.rep_conv.weight' in sd:
        return _conv(t, sd, f'{name}.rep_conv', padding=1)
    e = _conv(t, sd, f'{name}.expand_conv')
    border = torch.ones(1, 1, e.shape[2] + 2, e.shape[3] + 2, dtype=torch.bool)
    border[..., 1:-1, 1:-1] = False
    padded = torch.where(border, sd[f'{name}.expand_conv.bias'].view(1, -1, 1, 1), F.pad(e, (1, 1, 1, 1)))
    return _conv(_conv(padded, sd, f'{name}.fea_conv') + e, sd, f'{name}.reduce_conv') + t


def _esa(x, sd, name):
    """RLFN's light ESA (official ``ESA`` of team08_PFDN.py, f = 16)."""
    c1_ = _conv(x, sd, f'{name}.conv1')
    c1 = _conv(c1_, sd, f'{name}.conv2', stride=2)
    v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
    c3 = F.interpolate(_conv(v_max, sd, f'{name}.conv3', padding=1), (x.shape[2], x.shape[3]), mode='bilinear',
                       align_corners=False)
    return x * torch.sigmoid(_conv(c3 + _conv(c1_, sd, f'{name}.conv_f'), sd, f'{name}.conv4'))


def pfdn_reference(sd, x, in_place=True):
    """The official PFDN forward on RGB ``x`` in [0, 1] (data range 1.0). ``in_place``: the partial
    step written as the official ``x[:, :p] = relu(conv3(x[:, :p]))`` (with the official in-place
    LeakyReLU); else out of place (``torch.cat``). Not under no_grad (the in-place test needs autograd)."""
    scale = math.isqrt(sd['tail.0.weight'].shape[0] // x.shape[1])
    blocks = len({k.split('.')[0] for k in sd if k.startswith('block')})
    x = _conv(x, sd, 'conv_first', padding=1)
    res0 = x
    for i in range(1, blocks + 1):
        p = f'block{i}'
        x = _esa(x, sd, f'{p}.attn')
        res = x
        x = F.leaky_relu(_rrrb(x, sd, f'{p}.conv1'), SLOPE, inplace=in_place)
        c = sd[f'{p}.conv3.rep_conv.weight' if f'{p}.conv3.rep_conv.weight' in sd else f'{p}.conv3.expand_conv.weight']
        c = c.shape[0] if f'{p}.conv3.rep_conv.weight' in sd else c.shape[1]
        if in_place:
            x[:, :c] = F.leaky_relu(_rrrb(x[:, :c], sd, f'{p}.conv3'), SLOPE, inplace=True)
        else:
            x = torch.cat([F.leaky_relu(_rrrb(x[:, :c], sd, f'{p}.conv3'), SLOPE), x[:, c:]], 1)
        x = F.leaky_relu(_rrrb(x, sd, f'{p}.conv2'), SLOPE, inplace=in_place)
        x = x + res
    x = _conv(x, sd, 'conv_last', padding=1) + res0
    return F.pixel_shuffle(_conv(x, sd, 'tail.0', padding=1), scale)


def psnr(y, hr, border=4):
    mse = ((y.clamp(0, 1) - hr)[..., border:-border, border:-border] ** 2).mean()
    return (-10 * torch.log10(mse)).item()


def lr_photos(size=48, scale=4, dtype=torch.float32):
    """HR crops of three photographs and their antialiased bicubic LR (the NTIRE ESR degradation)."""
    hr = torch.cat([photo(p, size * scale, size * scale, dtype=torch.float64) for p in PHOTOS])
    lr = F.interpolate(hr, scale_factor=1 / scale, mode='bicubic', antialias=True, align_corners=False)
    return hr.to(dtype), lr.clamp(0, 1).to(dtype)


# ======================================================================= layouts

def _layout(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _official_layout(c=48, p=32, blocks=4, esa=16, out=48):
    keys = {}
    for name, shape in (('conv_first', (c, 3, 3, 3)), ('conv_last', (c, c, 3, 3)), ('tail.0', (out, c, 3, 3))):
        keys.update({f'{name}.weight': shape, f'{name}.bias': (shape[0],)})
    for i in range(1, blocks + 1):
        for conv, shape in (('attn.conv1', (esa, c, 1, 1)), ('attn.conv_f', (esa, esa, 1, 1)),
                            ('attn.conv2', (esa, esa, 3, 3)), ('attn.conv3', (esa, esa, 3, 3)),
                            ('attn.conv4', (c, esa, 1, 1)), ('conv1.rep_conv', (c, c, 3, 3)),
                            ('conv2.rep_conv', (c, c, 3, 3)), ('conv3.rep_conv', (p, p, 3, 3))):
            keys.update({f'block{i}.{conv}.weight': shape, f'block{i}.{conv}.bias': (shape[0],)})
    return keys


def test_pfdn_deploy_layout_is_the_official_one():
    """team08_PFDN.py Net(): 70 tensors, 272,224 parameters; ``convN.rep_conv`` (the deployed RRRBs),
    the partial conv 32 -> 32; built deployed or reparameterized from the training form."""
    expected = _official_layout()
    assert _layout(PFDN(deploy=True)) == expected and len(expected) == 70
    assert _layout(rtsr_arch.reparameterize(PFDN())) == expected
    assert n_params(PFDN(deploy=True)) == 272_224


def test_pfdn_training_layout():
    """Every block conv is an RRRB (FMEN's expand_conv, fea_conv, reduce_conv; ratio 2), with biases."""
    layout = _layout(PFDN())
    assert layout['block1.conv1.expand_conv.weight'] == (96, 48, 1, 1)
    assert layout['block1.conv1.fea_conv.weight'] == (96, 96, 3, 3)
    assert layout['block1.conv1.reduce_conv.weight'] == (48, 96, 1, 1)
    assert layout['block1.conv3.expand_conv.weight'] == (64, 32, 1, 1)
    assert layout['block1.conv3.reduce_conv.bias'] == (32,)
    assert not any('rep_conv' in k for k in layout) and n_params(PFDN()) == 972_640


def test_pfdn_uses_one_activation_module_per_block():
    """One LeakyReLU(0.05) module (the official ``relu``) serves the three calls."""
    block = PFDN(deploy=True).block1
    assert isinstance(block, PFDB)
    acts = [m for m in block.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 1 and acts[0].negative_slope == SLOPE


# ======================================================================= the released weights

def test_pfdn_official_weights_match_the_reference():
    """``team08_PFDN.pth`` through load_model (auto-detected, no architecture given) reproduces the
    independent reference (official in-place partial write) on photographs to float32 rounding
    (float64: ~1e-13), and beats bicubic."""
    path = fixture('pfdn.pth')
    official = torch.load(path, map_location='cpu', weights_only=True)
    model = rtsr_arch.load_model(path)
    assert type(model) is PFDN and n_params(model) == 272_224
    assert model.network_opt == {'type': 'PFDN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 48, 'num_block': 4,
                                 'upscale': 4, 'act_type': 'lrelu', 'partial_channels': 32, 'esa_channels': 16,
                                 'rep_ratio': 2, 'deploy': True}
    hr, lr = lr_photos()
    with torch.no_grad():
        y = model(lr)
        diff = (y - pfdn_reference(official, lr)).abs().max().item()
    model64 = rtsr_arch.load_model(path, dtype=torch.float64)
    with torch.no_grad():
        y64 = model64(lr.double())
        diff64 = (y64 - pfdn_reference({k: v.double() for k, v in official.items()}, lr.double())).abs().max().item()
    bicubic = F.interpolate(lr.double(), scale_factor=4, mode='bicubic', align_corners=False)
    gain = psnr(y64, hr.double()) - psnr(bicubic, hr.double())
    print(f'team08_PFDN.pth: max |ours - reference| float32 {diff:.2e}, float64 {diff64:.2e}; '
          f'PSNR {psnr(y64, hr.double()):.2f} dB ({gain:+.2f} dB over bicubic)')
    assert y.shape == (3, 3, 192, 192)
    assert diff <= 2e-6 and diff64 <= 1e-12
    assert gain > 1.0


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_pfdn_official_weights_in_half_precision(dtype, tol):
    """fp16_safe: [0, 1] features stay far below float16's range; bfloat16 keeps 8 mantissa bits."""
    path = fixture('pfdn.pth')
    _, lr = lr_photos(size=32)
    with torch.no_grad():
        y32 = rtsr_arch.load_model(path)(lr)
        y16 = rtsr_arch.load_model(path, dtype=dtype)(lr.to(dtype)).float()
    diff = (y16 - y32).abs().max().item()
    print(f'team08_PFDN.pth {dtype}: max |diff| vs float32 {diff:.2e}')
    assert torch.isfinite(y16).all() and diff <= tol


# ======================================================================= the in-place partial step

def test_pfdn_official_in_place_write_cannot_be_trained_ours_can():
    """The official ``x[:, :32] = relu(conv3(x[:, :32]))`` overwrites the map conv3 read (and saved
    for its weight gradient): autograd refuses the backward. Ours concatenates the two channel
    groups: the same values, and the gradients of an out-of-place reference, for every parameter."""
    model = randomize(PFDN(num_feat=8, num_block=2, partial_channels=5, esa_channels=4, deploy=True), seed=6,
                      std=1.0, fan_in=True).double()
    x = photo('astronaut', 16, 18, dtype=torch.float64, batch=2)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match='inplace'):
        pfdn_reference(params, x, in_place=True).square().mean().backward()
    for p in params.values():  # the failed backward accumulated the gradients of the later layers
        p.grad = None
    y_ref = pfdn_reference(params, x, in_place=False)
    y_ref.square().mean().backward()
    y = model(x)
    y.square().mean().backward()
    with torch.no_grad():
        assert (y - y_ref).abs().max() <= 1e-12 * y.abs().max()
        assert torch.equal(pfdn_reference(params, x, in_place=True), pfdn_reference(params, x, in_place=False))
    grads = dict(model.named_parameters())
    for k, p in params.items():
        assert (grads[k].grad - p.grad).abs().max() <= 1e-10 * max(1.0, p.grad.abs().max().item()), k


def test_pfdn_forward_has_no_in_place_write_on_a_view():
    """The exported graph has no slice assignment (``copy_`` into a view, functionalized as
    ``slice_scatter``): the partial step is a concatenation."""
    model = PFDN(num_feat=6, num_block=1, partial_channels=4, esa_channels=3, deploy=True).eval()
    graph = torch.export.export(model, (photo('coffee', 16, 16),)).graph
    ops = {str(node.target) for node in graph.nodes if node.op == 'call_function'}
    assert not any('slice_scatter' in op or 'copy_' in op for op in ops), ops
    assert any(op.startswith('aten.cat') for op in ops), ops

    class OfficialPartialStep(nn.Module):  # negative control: the official slice assignment is seen
        def __init__(self):
            super().__init__()
            self.conv3 = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            x = F.leaky_relu(x, SLOPE)
            x[:, :4] = F.leaky_relu(self.conv3(x[:, :4]), SLOPE, inplace=True)
            return x

    graph = torch.export.export(OfficialPartialStep(), (photo('coffee', 16, 16).repeat(1, 2, 1, 1),)).graph
    assert any('copy_' in str(node.target) for node in graph.nodes if node.op == 'call_function')


def test_pfdn_partial_channels_bounds():
    """partial_channels == num_feat is allowed (conv3 then refines every channel); more is a one-line error."""
    PFDN(num_feat=6, num_block=1, partial_channels=6, esa_channels=3)
    with pytest.raises(ValueError, match=r'^PFDN: partial_channels=7: expected at most num_feat=6$'):
        PFDN(num_feat=6, num_block=1, partial_channels=7, esa_channels=3)


# ======================================================================= training form

@pytest.mark.parametrize('kwargs', [dict(num_feat=8, num_block=2, partial_channels=5, esa_channels=4),
                                    dict(num_feat=6, num_block=1, partial_channels=6, esa_channels=3, rep_ratio=3,
                                         upscale=2)])
def test_pfdn_training_form_matches_the_rrrb_formula_and_fuses_to_the_official_layout(kwargs):
    """The RRRB training form equals the reference written from FMEN's formula (bias padding), and
    its fused state dict, through the *official* deploy reference, gives the same output on every
    pixel (15x15: the smallest valid input)."""
    model = randomize(PFDN(**kwargs), seed=7, std=1.0, fan_in=True).double().eval()
    for h, w in ((15, 15), (17, 22)):
        x = photo('chelsea', h, w, dtype=torch.float64, batch=2)
        with torch.no_grad():
            y = model(x)
            scale = max(1.0, y.abs().max().item())
            assert (y - pfdn_reference(model.state_dict(), x, in_place=False)).abs().max() <= 1e-12 * scale
            fused = rtsr_arch.reparameterize(copy.deepcopy(model)).state_dict()
            assert all('expand_conv' not in k for k in fused)
            assert (pfdn_reference(fused, x) - y).abs().max() <= 1e-10 * scale


# ======================================================================= importer

def test_pfdn_importer_reads_training_and_deploy_forms():
    model = PFDN(num_feat=8, num_block=3, partial_channels=5, esa_channels=4, rep_ratio=3, upscale=3)
    result = import_official_pfdn(model.state_dict(), {})
    assert result.assumed == ('act_type',) and result.network_opt == model.network_opt
    result = import_official_pfdn(rtsr_arch.reparameterize(model).state_dict(), {})
    assert result.assumed == ('rep_ratio', 'act_type')
    assert result.network_opt == {**model.network_opt, 'rep_ratio': 2, 'deploy': True}


def test_pfdn_official_file_is_detected_as_pfdn_only():
    assert [m.arch for m, _ in find_importers(read_checkpoint(fixture('pfdn.pth'))[0])] == ['PFDN']


# ======================================================================= recipes

RECIPES = ROOT / 'options/train/PFDN'
STAGES = ('stage1_scratch_p64_L1', 'stage2_p128_L1', 'stage2_p160_L1', 'stage2_p180_deploy_L1',
          'stage3_p240_deploy_L2')


def test_pfdn_recipes_chain():
    """NTIRE 2023 ESR report §4.7 / factsheet: LR patches 64 (batch 96, L1, Adam 5e-4 halved at
    250k/400k/450k/475k of 500k) -> 128 -> 160 -> 180 (2e-4; reparameterized before 180) -> 240
    (batch 128, L2, 1e-5); DIV2K + Flickr2K bicubic x4; each stage starts from the previous one, the
    180 stage from the rtsr-reparam output of the 160 stage."""
    stages = [load_options(RECIPES / f'train_PFDN_x4_{s}.yml') for s in STAGES]
    names = [s['name'] for s in stages]
    for i, (previous, stage) in enumerate(zip(stages, stages[1:])):
        start = stage['path']['pretrain_network_g']
        assert start.startswith(f"experiments/{previous['name']}/models/"), start
        if i + 1 == 3:  # the 180 stage starts from the reparameterized 160 result
            assert start.endswith('_deploy.pth')
        assert stage['network_g'] == {**previous['network_g'], 'deploy': stage['network_g']['deploy']}
    assert [s['network_g']['deploy'] for s in stages] == [False, False, False, True, True]
    assert [s['datasets']['train']['gt_size'] for s in stages] == [256, 512, 640, 720, 960]
    train_sets = [s['datasets']['train'] for s in stages]
    assert [t['batch_size_per_gpu'] * stages[0]['num_gpu'] for t in train_sets][::4] == [96, 128]
    assert all(t['type'] == 'PairedImageDataset' for t in train_sets)
    assert all('DF2K' in t['dataroot_gt'] and 'DF2K' in t['dataroot_lq'] for t in train_sets)  # DIV2K + Flickr2K
    assert [s['train']['losses'][0]['type'] for s in stages] == ['L1Loss'] * 4 + ['MSELoss']
    assert [s['train']['optim_g']['lr'] for s in stages] == [5e-4, 2e-4, 2e-4, 2e-4, 1e-5]
    assert stages[0]['train']['scheduler']['milestones'] == [250_000, 400_000, 450_000, 475_000]
    assert stages[0]['train']['total_iter'] == 500_000
    student = build_network(stages[0]['network_g'])
    assert type(student) is PFDN and n_params(rtsr_arch.reparameterize(student)) == 272_224
    assert len(set(names)) == 5 and all(s['scale'] == 4 for s in stages)
