"""ANUNet specifics (AIS 2024 Real-Time 4K SR report, Conde et al., CVPRW 2024, §3.6, team LeRTSR /
Lenovo; official code zhoumenghan/AIS2024_ANUNet@c41a2d8, deploy form and ``ANUNet_x4.pth`` only):
the official state-dict layout, an independent functional reference of the official deploy forward
on the official keys, the released weights through ``rtsr_arch.load_model`` on real photographs,
the anchor (every input channel repeated upscale^2 times), and the nested reparameterization block
(NRB) against its formula. Fusion, parameter counts, keyword errors, importer round trips,
receptive radius, ONNX and padding are checked for every architecture by test_contract.py."""
import copy
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import gain_over_bicubic, load_official, load_photo, load_recipe, n_params, official_fixture, photo, psnr, \
    randomize
from reference import conv, pad_with
from rtsr_arch.archs.anunet_arch import ANUNet
from rtsr_arch.archs.official import OfficialImportError, find_importers
from rtsr_arch.archs.rep import NRB

pytestmark = pytest.mark.usefixtures('torch_single_thread')

OFFICIAL = 'anunet_x4.pth'
TOL64 = 1e-10


# ----------------------------------------------------------------------------- independent reference

@torch.no_grad()
def official_deploy_forward(sd, x):
    """zhoumenghan/AIS2024_ANUNet ``models/LeRTSR.py`` ``ANUNet(deploy=True)`` written on the official
    keys with torch.nn.functional only: shortcut = repeat_interleave(x, s^2, dim=1);
    PixelUnshuffle(2); GELU(conv backbone.0.rbr_reparam); GELU(conv backbone.i.nrb.rep_conv) for
    each NRB; conv backbone.{last}.rbr_reparam; PixelShuffle(2); + shortcut; PixelShuffle(s)."""
    last = max(int(k.split('.')[1]) for k in sd)
    out_ch = sd[f'backbone.{last}.rbr_reparam.weight'].shape[0]
    scale = math.isqrt(out_ch // (4 * x.shape[1]))
    shortcut = torch.repeat_interleave(x, scale * scale, dim=1)
    y = F.gelu(conv(F.pixel_unshuffle(x, 2), sd, 'backbone.0.rbr_reparam', padding=1))
    for i in range(1, last):
        y = F.gelu(conv(y, sd, f'backbone.{i}.nrb.rep_conv', padding=1))
    y = conv(y, sd, f'backbone.{last}.rbr_reparam', padding=1)
    return F.pixel_shuffle(F.pixel_shuffle(y, 2) + shortcut, scale)


# ----------------------------------------------------------------------------- layout and counts

def test_anunet_deploy_layout_is_the_official_one():
    """The released ``ANUNet_x4.pth`` layout: 10 tensors, 72,880 parameters."""
    sd = ANUNet(deploy=True).state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == [
        ('backbone.0.rbr_reparam.weight', (28, 12, 3, 3)), ('backbone.0.rbr_reparam.bias', (28,)),
        ('backbone.1.nrb.rep_conv.weight', (28, 28, 3, 3)), ('backbone.1.nrb.rep_conv.bias', (28,)),
        ('backbone.2.nrb.rep_conv.weight', (28, 28, 3, 3)), ('backbone.2.nrb.rep_conv.bias', (28,)),
        ('backbone.3.nrb.rep_conv.weight', (28, 28, 3, 3)), ('backbone.3.nrb.rep_conv.bias', (28,)),
        ('backbone.4.rbr_reparam.weight', (192, 28, 3, 3)), ('backbone.4.rbr_reparam.bias', (192,))]
    assert n_params(ANUNet(deploy=True)) == 72_880
    fused = rtsr_arch.reparameterize(ANUNet())
    assert list(fused.state_dict()) == list(sd) and n_params(fused) == 72_880


def test_anunet_training_layout():
    """ECBs with ECBSR's keys and no identity; NRB = expand_conv / eecb (an ECB with identity) / reduce_conv."""
    model = ANUNet()
    layout = {k.rsplit('.', 1)[0] for k in model.state_dict()}
    ecb = ('conv3x3', 'conv1x1_3x3', 'conv1x1_sbx', 'conv1x1_sby', 'conv1x1_lpl')
    expected = {f'backbone.{i}.{b}' for i in (0, 4) for b in ecb}
    expected |= {f'backbone.{i}.nrb.{m}' for i in (1, 2, 3) for m in ('expand_conv', 'reduce_conv')}
    expected |= {f'backbone.{i}.nrb.eecb.{b}' for i in (1, 2, 3) for b in ecb}
    assert layout == expected
    assert not model.backbone[0].with_idt and not model.backbone[4].with_idt
    nrb = model.backbone[1].nrb
    assert nrb.eecb.with_idt and nrb.expand_conv.weight.shape == (56, 28, 1, 1)
    assert nrb.eecb.conv1x1_3x3.k1.shape == (56, 112, 3, 3)  # depth multiplier 2.0 inside
    assert model.backbone[4].conv1x1_3x3.k1.shape == (192, 384, 3, 3)
    assert n_params(model) == 1_073_392
    assert isinstance(model.backbone[1].act, torch.nn.GELU) and isinstance(model.backbone[0].act, torch.nn.GELU)
    assert isinstance(model.backbone[4].act, torch.nn.Identity)
    assert n_params(ANUNet(nrb_ratio=1)) < n_params(model)
    assert n_params(rtsr_arch.reparameterize(ANUNet(nrb_ratio=1))) == 72_880


def test_anunet_refuses_different_input_and_output_channels():
    with pytest.raises(ValueError) as info:
        ANUNet(num_in_ch=3, num_out_ch=1)
    assert str(info.value).startswith('ANUNet: num_out_ch=1 must equal num_in_ch=3') and '\n' not in str(info.value)


# ----------------------------------------------------------------------------- the anchor

@pytest.mark.parametrize('upscale', [2, 3, 4])
def test_anunet_anchor_is_the_input_repeated_upscale_squared_times(upscale):
    """With the last ECB zeroed the network outputs its anchor: PixelShuffle(s) of every input channel
    repeated s^2 times in a row (``repeat_interleave``, R..R G..G B..B), i.e. nearest-neighbour
    upscaling. ``repeat`` (RGB RGB ...) would interleave the colours: a different image."""
    model = randomize(ANUNet(num_feat=8, num_block=1, upscale=upscale, deploy=True), seed=4, fan_in=True).eval()
    x = photo('coffee', 10, 14, batch=2)
    with torch.no_grad():
        model.backbone[-1].rbr_reparam.weight.zero_()
        model.backbone[-1].rbr_reparam.bias.zero_()
        y = model(x)
        assert torch.equal(y, F.pixel_shuffle(torch.repeat_interleave(x, upscale ** 2, dim=1), upscale))
        assert torch.equal(y, F.interpolate(x, scale_factor=upscale, mode='nearest'))
        assert (y - F.pixel_shuffle(x.repeat(1, upscale ** 2, 1, 1), upscale)).abs().max() > 0.1


def test_anunet_output_is_anchor_plus_body():
    """y = PS_s(PS_2(backbone(PU_2(x))) + repeat_interleave(x, s^2)), recomputed by hand in training form."""
    model = randomize(ANUNet(num_feat=6, num_block=2, upscale=4), seed=5, fan_in=True).double().eval()
    x = photo('chelsea', 12, 10, dtype=torch.float64)
    with torch.no_grad():
        body = F.pixel_shuffle(model.backbone(F.pixel_unshuffle(x, 2)), 2)
        ref = F.pixel_shuffle(body + torch.repeat_interleave(x, 16, dim=1), 4)
        assert (model(x) - ref).abs().max() <= TOL64
        assert body.abs().max() > 0.1  # the body contributes


# ----------------------------------------------------------------------------- official weights

@pytest.mark.parametrize('name, h, w', [('astronaut', 48, 64), ('coffee', 62, 90), ('chelsea', 50, 74)])
def test_official_weights_reproduce_the_reference(name, h, w):
    """``ANUNet_x4.pth`` through ``rtsr_arch.load_model`` (auto-detected, no arch given) equals the
    functional reference of the official deploy forward on real photographs: float32 rounding in
    float32, ~1e-12 in float64."""
    sd = load_official(OFFICIAL)
    model = rtsr_arch.load_model(official_fixture(OFFICIAL))
    assert type(model) is ANUNet and model.network_opt['upscale'] == 4 and n_params(model) == 72_880
    x = photo(name, h, w, batch=2)
    with torch.no_grad():
        y = model(x)
    ref = official_deploy_forward(sd, x)
    diff = (y - ref).abs().max().item()
    print(f'{name} {h}x{w} float32: max |ours - official reference| = {diff:.3g} (output peak {ref.abs().max():.3g})')
    assert y.shape == (2, 3, 4 * h, 4 * w)
    assert diff <= 1e-5 * ref.abs().max().item()

    model64 = rtsr_arch.load_model(official_fixture(OFFICIAL), dtype=torch.float64)
    x64 = x.double()
    with torch.no_grad():
        y64 = model64(x64)
    ref64 = official_deploy_forward({k: v.double() for k, v in sd.items()}, x64)
    diff64 = (y64 - ref64).abs().max().item()
    print(f'{name} {h}x{w} float64: max |ours - official reference| = {diff64:.3g}')
    assert diff64 <= 1e-12


def test_official_import_notes_and_assumptions():
    sd = load_official(OFFICIAL)
    matches = find_importers(sd)
    assert [importer.arch for importer, _ in matches] == ['ANUNet']
    importer, unwrapped = matches[0]
    result = importer.convert(unwrapped, {})
    assert result.network_opt == dict(type='ANUNet', num_in_ch=3, num_out_ch=3, num_feat=28, num_block=3, upscale=4,
                                      deploy=True, act_type='gelu', nrb_ratio=2)
    assert set(result.assumed) == {'act_type', 'nrb_ratio'} and len(result.notes) == 2
    # a partially fused dict (head fused, NRBs not) is refused in one line
    mixed = dict(rtsr_arch.reparameterize(ANUNet(num_feat=4, num_block=1)).state_dict())
    train = ANUNet(num_feat=4, num_block=1).state_dict()
    mixed = {k: v for k, v in mixed.items() if not k.startswith('backbone.1.')}
    mixed.update({k: v for k, v in train.items() if k.startswith('backbone.1.')})
    with pytest.raises(OfficialImportError, match='partially fused'):
        importer.convert(mixed, {})


def test_official_weights_beat_bicubic_on_an_ais24_degraded_photo():
    """Sanity of the whole path on the challenge's degradation: a 256x256 astronaut crop, Lanczos-5
    x4 + AVIF qp 31 (AIS 2024), upscaled by the released network: its PSNR beats bicubic."""
    pytest.importorskip('av')
    path = official_fixture(OFFICIAL)
    from rtsr_arch.data.degradations import Degradation
    from rtsr_arch.inference import upscale_image

    hr = np.ascontiguousarray(load_photo('astronaut')[64:320, 128:384])
    degradation = Degradation.from_opt({'preset_name': 'ais24'})
    lr = degradation(hr, 31)
    assert lr.shape == (64, 64, 3)
    sr = upscale_image(rtsr_arch.load_model(path), lr)

    def tensor(image):  # HxWx3 uint8 -> 1x3xHxW float64 in [0, 1]
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].double() / 255

    hr, sr, lr = tensor(hr), tensor(sr), tensor(lr)
    gain = gain_over_bicubic(sr, hr, lr, quantize=True)
    print(f'AIS24 qp31 astronaut crop: ANUNet {psnr(sr, hr, quantize=True):.2f} dB ({gain:+.2f} dB over bicubic)')
    assert gain > 0.3


# ----------------------------------------------------------------------------- the NRB block

def _ecb_valid(block, t):
    """ECBSR's ECB (with identity) as a *valid* 3x3 operator on the already padded map ``t``:
    3x3 + (1x1 -> 3x3) + 3 x (1x1 -> scale * mask), + the centre of t."""
    y = F.conv2d(t, block.conv3x3.weight, block.conv3x3.bias) + t[:, :, 1:-1, 1:-1]
    seq = block.conv1x1_3x3
    y = y + F.conv2d(F.conv2d(t, seq.k0, seq.b0), seq.k1, seq.b1)
    for name in ('sbx', 'sby', 'lpl'):
        br = getattr(block, f'conv1x1_{name}')
        y = y + F.conv2d(F.conv2d(t, br.k0, br.b0), br.scale * br.mask, br.bias, groups=t.shape[1])
    return y


@pytest.mark.parametrize('h, w', [(7, 9), (1, 1), (2, 5)])
def test_nrb_training_form_matches_its_formula(h, w):
    """NRB (our reading of report §3.6): t = W_e x + b_e, padded with b_e (FMEN's RRRB bias padding);
    u = eECB_valid(t_pad) (ECB's five branches + identity on the expanded map); y = W_r u + b_r + x."""
    block = randomize(NRB(5, ratio=2), seed=21).double()
    x = torch.randn(2, 5, h, w, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    e, r = block.expand_conv, block.reduce_conv
    t_pad = pad_with(F.conv2d(x, e.weight, e.bias), e.bias)
    ref = F.conv2d(_ecb_valid(block.eecb, t_pad), r.weight, r.bias) + x
    assert (block.forward_train(x) - ref).abs().max() <= TOL64
    fused = rtsr_arch.reparameterize(copy.deepcopy(block))
    with torch.no_grad():
        assert (fused(x) - ref).abs().max() <= TOL64  # borders included


def test_nrb_zero_padded_inner_map_would_break_the_border():
    """Negative control: zero padding of the expanded map (instead of the expand bias) changes the
    border pixels, so the fused conv could not match; the interior is unaffected."""
    block = randomize(NRB(4), seed=22).double()
    x = torch.randn(1, 4, 6, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    e, r = block.expand_conv, block.reduce_conv
    t_zero = F.pad(F.conv2d(x, e.weight, e.bias), [1, 1, 1, 1])
    wrong = F.conv2d(_ecb_valid(block.eecb, t_zero), r.weight, r.bias) + x
    err = (block.forward_train(x) - wrong).abs()
    assert err[..., 1:-1, 1:-1].max() <= TOL64 and err.max() > 1e-3


def test_nrb_fusion_is_not_trivially_equal():
    """Every part of the nested block matters: zeroing any branch changes the output."""
    block = randomize(NRB(4), seed=23).double().eval()
    x = torch.randn(1, 4, 5, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = block.forward_train(x)
    parts = ['expand_conv', 'reduce_conv'] + [f'eecb.{b}' for b in ('conv3x3', 'conv1x1_3x3', 'conv1x1_sbx',
                                                                     'conv1x1_sby', 'conv1x1_lpl')]
    for name in parts:
        ablated = copy.deepcopy(block)
        for p in ablated.get_submodule(name).parameters():
            p.data.zero_()
        assert (ablated.forward_train(x) - y).abs().max() > 1e-3, name


@pytest.mark.parametrize('make, arg', [(lambda: NRB(0), 'channels'), (lambda: NRB(4, ratio=0), 'ratio'),
                                       (lambda: NRB(4, ratio=0.1), 'ratio'),
                                       (lambda: NRB(4, depth_multiplier=0.01), 'depth_multiplier')])
def test_nrb_refuses_impossible_arguments_in_one_line(make, arg):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert message.startswith(f'NRB: {arg}=') and '\n' not in message


def test_nrb_bias_free_has_no_bias_anywhere():
    block = NRB(4, bias=False)
    assert not any(n.endswith('bias') and p is not None for n, p in block.named_parameters())
    fused = rtsr_arch.reparameterize(randomize(block, seed=1))
    assert fused.rep_conv.bias is None


# ----------------------------------------------------------------------------- training recipes

def test_recipes_follow_the_report():
    """options/train/ANUNet: the three stages of report §3.6 chained, with the published settings."""
    names = ['stage1_scratch', 'stage2_aux_hf', 'stage3_L2_FFT']
    stages = [load_recipe('ANUNet', f'train_ANUNet_x4_{n}') for n in names]
    assert [s['name'] for s in stages] == [f'ANUNet_x4_{n}' for n in names]
    assert stages[0]['path']['pretrain_network_g'] is None
    for previous, stage in zip(stages, stages[1:]):
        assert stage['path']['pretrain_network_g'] == f"experiments/{previous['name']}/models/net_g_latest.pth"
        assert stage['network_g'] == previous['network_g'] and stage['datasets'] == previous['datasets']
    assert stages[0]['network_g'] == {**ANUNet().network_opt}
    losses = [[loss['type'] for loss in s['train']['losses']] for s in stages]
    assert losses == [['CharbonnierLoss', 'FFTLoss'], ['CharbonnierLoss', 'FFTLoss', 'DownsampleLoss', 'HFLoss'],
                      ['MSELoss', 'FFTLoss']]
    aux = stages[1]['train']['losses'][2]
    assert (aux['kernel'], aux['lanczos_a'], aux['scale']) == ('lanczos', 5, 4)  # Lanczos, as the AVIF pipeline
    assert stages[0]['train']['optim_g']['lr'] == 1e-3 and stages[0]['train']['scheduler'] == {
        'type': 'CosineAnnealingLR', 'T_max': 1_000_000, 'eta_min': 1e-6}
    for stage in stages[1:]:
        assert stage['train']['optim_g']['lr'] == 5e-4 and stage['train']['scheduler'] == {
            'type': 'MultiStepLR', 'milestones': [200_000, 400_000, 800_000], 'gamma': 0.5}
    for stage in stages:
        train = stage['datasets']['train']
        assert stage['train']['total_iter'] == 1_000_000 and stage['train']['optim_g']['type'] == 'Adam'
        assert train['type'] == 'MultiLRPairedDataset' and train['gt_size'] == 480
        assert train['batch_size_per_gpu'] == 64 and train['use_hflip'] and train['use_rot']
        assert sorted(train['dataroots_lq']) == ['qp31', 'qp39', 'qp47', 'qp55', 'qp63']
        assert stage['val']['deploy'] is True
