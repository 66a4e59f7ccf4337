"""LGVAN specifics (Local-Global Visual Attention Network, NTIRE 2023 ESR report §4.26, team
Dase-IDEALab; official code charonf/LGVAN-NTIRE2023-ESR@a6fa8ff ``models/team18_LGVAN.py``, MIT):
the official state-dict layout (``upsapling`` sic, grouped ``conv_after_body``), an independent
functional reference on the official keys, the released ``team18_LGVAN.pth`` (``params_ema``)
loaded through ``rtsr_arch.load_model`` against it on real photographs, the replicated wrong-axis
padding of the asymmetric depthwise pairs (and what dropping it would change), the importer and the
recipe. The generic checks (tiling included) are in test_contract.py; the NTIRE 2023 ESR counts in
test_ntire23_counts.py.
"""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import check_official_weights, check_recipe_network, load_official, load_recipe, n_params, \
    official_fixture, photo, randomize, state_layout
from reference import conv, count_blocks, layer_norm_2d
from rtsr_arch.archs.lgvan_arch import LGCA, LGVAN, import_official_lgvan
from rtsr_arch.archs.official import find_importers
from rtsr_arch.inference import upscale_tensor
from rtsr_arch.loader import read_checkpoint, resolve_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')


# ======================================================================= independent reference
# charonf/LGVAN-NTIRE2023-ESR team18_LGVAN.py (LayerNorm channels_first, LKA, Attention, MLP,
# BasicConv, LGVAN), on the official keys with torch.nn.functional only.

def _lka(u, sd, p, fix_padding=False):
    """``fix_padding``: the asymmetric pairs padded on their own axis (NOT the official network)."""
    c = u.shape[1]
    h = conv(u, sd, f'{p}.head')
    attn = conv(conv(h, sd, f'{p}.conv0', padding=2, groups=c), sd, f'{p}.conv_spatial', padding=6, groups=c,
                dilation=3)
    pads = {5: ((0, 2), (2, 0)), 3: ((0, 1), (1, 0))} if fix_padding else {5: ((2, 0), (0, 2)), 3: ((1, 0), (0, 1))}
    v5 = conv(conv(h, sd, f'{p}.conv_v', padding=pads[5][0], groups=c), sd, f'{p}.conv_h', padding=pads[5][1],
              groups=c)
    v3 = conv(conv(h, sd, f'{p}.conv_v_2', padding=pads[3][0], groups=c), sd, f'{p}.conv_h_2',
              padding=pads[3][1], groups=c)
    return u * conv(attn + v5 + h + v3, sd, f'{p}.conv1')


def lgvan_reference(sd, x, fix_padding=False):
    """The official LGVAN forward on RGB ``x`` in [0, 1] (data range 1.0)."""
    c = sd['conv_first.weight'].shape[0]
    fea = conv(x, sd, 'conv_first', padding=1)
    y = fea
    for i in range(count_blocks(sd, 'layers.')):
        a = f'layers.{i}.atten'
        t = F.gelu(conv(layer_norm_2d(y, sd, f'{a}.norm'), sd, f'{a}.proj_1'))
        y = conv(_lka(t, sd, f'{a}.spatial_gating_unit', fix_padding), sd, f'{a}.proj_2') * sd[f'{a}.scale'] + y
        m = f'layers.{i}.MLP'
        t = conv(layer_norm_2d(y, sd, f'{m}.norm'), sd, f'{m}.fc1')
        t = F.gelu(F.conv2d(t, sd[f'{m}.dwconv.weight'], None, padding=1, groups=2 * c) + t)
        y = conv(t, sd, f'{m}.fc2') * sd[f'{m}.scale'] + y
    res = conv(y, sd, 'conv_after_body', padding=1, groups=2) + fea
    if 'upsapling.2.weight' in sd:
        up = F.pixel_shuffle(conv(F.pixel_shuffle(conv(res, sd, 'upsapling.0'), 2), sd, 'upsapling.2'), 2)
        scale = 4
    else:
        t = conv(res, sd, 'upsapling.0')
        scale = int(round((t.shape[1] // c) ** 0.5))
        up = F.pixel_shuffle(t, scale)
    out = conv(F.leaky_relu(up, 0.2), sd, 'conv_last', padding=1)
    return out + F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=False)


# ======================================================================= layout

def test_lgvan_layout_is_the_official_one():
    """LGVAN(3, 3, 32, 9, 4): 289 tensors, 118,243 parameters; ``upsapling`` (sic); conv_after_body has
    2 groups; the MLP's depthwise conv has no bias; ``scale`` gains of shape (1, C, 1, 1)."""
    layout = state_layout(LGVAN())
    assert len(layout) == 289 and n_params(LGVAN()) == 118_243
    assert layout['conv_after_body.weight'] == (32, 16, 3, 3)
    assert layout['upsapling.0.weight'] == layout['upsapling.2.weight'] == (128, 32, 1, 1)
    assert layout['layers.8.atten.scale'] == layout['layers.0.MLP.scale'] == (1, 32, 1, 1)
    g = 'layers.0.atten.spatial_gating_unit'
    assert layout[f'{g}.conv_v.weight'] == (32, 1, 1, 5) and layout[f'{g}.conv_h.weight'] == (32, 1, 5, 1)
    assert layout[f'{g}.conv_v_2.weight'] == (32, 1, 1, 3) and layout[f'{g}.conv_h_2.weight'] == (32, 1, 3, 1)
    assert 'layers.0.MLP.dwconv.bias' not in layout and layout['conv_last.weight'] == (3, 32, 3, 3)
    assert set(LGVAN(upscale=3).state_dict()) - set(layout) == set() and \
        LGVAN(upscale=3).state_dict()['upsapling.0.weight'].shape == (288, 32, 1, 1)


def test_lgvan_scale_gains_start_at_zero():
    """As the official code, every block starts as the identity (``scale`` initialized to 0)."""
    model = LGVAN(num_feat=4, num_block=2)
    assert all(torch.equal(m.scale, torch.zeros(1, 4, 1, 1)) for layer in model.layers
               for m in (layer.atten, layer.MLP))


# ======================================================================= the released weights

def test_lgvan_official_weights_match_the_reference():
    """``team18_LGVAN.pth`` through load_model (auto-detected) reads ``params_ema`` (the official
    test_demo.py's choice), reproduces the independent reference on photographs to float32 rounding
    (float64: ~1e-12) and beats bicubic; ``params`` is a different weight set."""
    path = official_fixture('lgvan.pth')
    checkpoint = load_official('lgvan.pth')
    ema = checkpoint['params_ema']
    resolved = resolve_checkpoint(path)
    assert resolved.how == 'official LGVAN checkpoint'
    assert all(torch.equal(resolved.state_dict[k], ema[k]) for k in ema)
    assert any(not torch.equal(checkpoint['params'][k], ema[k]) for k in ema)
    check_official_weights(path, lgvan_reference, ema, LGVAN, 118_243,
                           {'type': 'LGVAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 9,
                            'upscale': 4, 'deploy': True}, tol32=5e-6)


def test_lgvan_official_file_is_detected_as_lgvan_only():
    assert [m.arch for m, _ in find_importers(read_checkpoint(official_fixture('lgvan.pth'))[0])] == ['LGVAN']


# ======================================================================= the padding quirk

def test_lgca_asymmetric_pairs_pad_on_the_wrong_axis_as_the_official_code():
    """conv_v (1x5) pads rows, conv_h (5x1) columns: the branch's two outer columns on each side are
    conv_h's bias alone, and its rows beyond the image carry conv_v's bias; one column for the 3-pair."""
    lgca = randomize(LGCA(4), seed=5, std=1.0).double()
    h = torch.randn(1, 4, 9, 11, dtype=torch.float64)
    assert lgca.conv_v.padding == (2, 0) and lgca.conv_h.padding == (0, 2)
    assert lgca.conv_v_2.padding == (1, 0) and lgca.conv_h_2.padding == (0, 1)
    with torch.no_grad():
        mid = lgca.conv_v(h)
        assert mid.shape == (1, 4, 13, 7)  # (H + 4) x (W - 4)
        assert torch.equal(mid[..., :2, :], lgca.conv_v.bias.view(1, -1, 1, 1).expand(1, 4, 2, 7))
        v5 = lgca.conv_h(mid)
        v3 = lgca.conv_h_2(lgca.conv_v_2(h))
    assert v5.shape == v3.shape == h.shape
    bias5 = lgca.conv_h.bias.view(1, -1, 1, 1)
    assert torch.equal(v5[..., :2], bias5.expand(1, 4, 9, 2)) and torch.equal(v5[..., -2:], bias5.expand(1, 4, 9, 2))
    bias3 = lgca.conv_h_2.bias.view(1, -1, 1, 1)
    assert torch.equal(v3[..., :1], bias3.expand(1, 4, 9, 1)) and torch.equal(v3[..., -1:], bias3.expand(1, 4, 9, 1))


def test_lgvan_padding_quirk_changes_the_border_of_the_official_output():
    """Padding the pairs on their own axis (a same-padded separable kernel) is NOT the released
    network: per attention it changes only the two outer rows and columns (interior identical), and
    on the official weights the change reaches the output (it is why the quirk is replicated)."""
    ema = load_official('lgvan.pth')['params_ema']
    sd = {k: v.double() for k, v in ema.items()}
    g = 'layers.0.atten.spatial_gating_unit'
    u = torch.randn(1, 32, 11, 12, dtype=torch.float64)
    local = (_lka(u, sd, g) - _lka(u, sd, g, fix_padding=True)).abs()[0].amax(0)
    assert local[2:-2, 2:-2].max() <= 1e-12 and local.max() > 1e-3
    x = photo('coffee', 24, 28)
    with torch.no_grad():
        diff = (lgvan_reference(ema, x) - lgvan_reference(ema, x, fix_padding=True)).abs()
    print(f'official vs same-padded pairs, team18_LGVAN.pth on a 24x28 crop: max |diff| {diff.max():.2e}')
    assert diff.max() > 1e-3


def test_lgvan_declares_its_minimum_width_and_tiles_exactly():
    """The (1, 5) kernel is unpadded along the width: 5 is the smallest valid input (4 fails, as in the
    official code). The quirk stays inside the declared receptive radius (84 for the released
    network): tiled inference equals untiled inference (float64, up to rounding)."""
    model = LGVAN(num_feat=4, num_block=1).eval()
    assert model.min_input_size == 5 and model.tile_exact and model.receptive_radius == 12
    with torch.no_grad():
        assert model(photo('astronaut', 5, 5)).shape == (1, 3, 20, 20)
        with pytest.raises(RuntimeError):
            model(photo('astronaut', 5, 4))
    assert rtsr_arch.load_model(official_fixture('lgvan.pth')).receptive_radius == 84
    net = randomize(LGVAN(num_feat=8, num_block=2), seed=9, std=1.0, fan_in=True).double().eval()
    x = photo('chelsea', 50, 53, dtype=torch.float64)
    whole = upscale_tensor(net, x)
    tiled = upscale_tensor(net, x, tile=7)  # overlap 21: tile borders cross the quirk's columns everywhere
    print(f'LGVAN C8 x2 blocks, tiled (7 px, overlap 21) vs untiled, float64: {(tiled - whole).abs().max():.1e}')
    assert (tiled - whole).abs().max() <= 1e-12


# ======================================================================= constructor and importer

def test_lgvan_refuses_odd_widths_and_unequal_channels():
    with pytest.raises(ValueError, match=r'^LGVAN: num_feat=5: expected an even number'):
        LGVAN(num_feat=5)
    with pytest.raises(ValueError, match=r'^LGVAN: num_out_ch=1: expected num_in_ch=3'):
        LGVAN(num_out_ch=1)


@pytest.mark.parametrize('upscale', [2, 3, 4])
def test_lgvan_importer_infers_the_shapes(upscale):
    model = LGVAN(num_feat=6, num_block=3, upscale=upscale)
    result = import_official_lgvan(model.state_dict(), {})
    assert result.assumed == ('deploy',) and result.network_opt == model.network_opt


def test_lgvan_importer_refuses_an_ungrouped_body_conv():
    sd = LGVAN(num_feat=4, num_block=1).state_dict()
    sd['conv_after_body.weight'] = torch.zeros(4, 4, 3, 3)
    with pytest.raises(ValueError, match='2 groups'):
        import_official_lgvan(sd, {})


# ======================================================================= recipe

def test_lgvan_recipe():
    """Report §4.26: L1 + 0.5 FFT loss; Adam (0.9, 0.99), lr 5e-4 halved every 2e5 iterations, 1e6
    iterations; batch 128 of 64x64 LR patches; DIV2K + Flickr2K bicubic x4."""
    opt = load_recipe('LGVAN', 'train_LGVAN_x4_L1_FFT')
    train = opt['train']
    assert [(loss['type'], loss['loss_weight']) for loss in train['losses']] == [('L1Loss', 1.0), ('FFTLoss', 0.5)]
    assert train['optim_g']['type'] == 'Adam' and train['optim_g']['betas'] == [0.9, 0.99]
    assert train['optim_g']['lr'] == 5e-4 and train['total_iter'] == 1_000_000
    assert train['scheduler']['milestones'] == [200_000, 400_000, 600_000, 800_000]
    data = opt['datasets']['train']
    assert data['gt_size'] == 256 and data['batch_size_per_gpu'] * opt['num_gpu'] == 128
    assert data['type'] == 'PairedImageDataset' and 'DF2K' in data['dataroot_gt']
    check_recipe_network(opt['network_g'], LGVAN, 118_243)


def test_lgvan_has_no_reparameterizable_block():
    model = LGVAN(num_feat=4, num_block=1)
    assert not any(hasattr(type(m), 'fuse') for m in model.modules())
    assert set(rtsr_arch.reparameterize(model).state_dict()) == set(LGVAN(num_feat=4, num_block=1).state_dict())
    assert isinstance(model.act, nn.LeakyReLU) and model.act.negative_slope == 0.2
