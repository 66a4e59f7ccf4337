"""LKDN-S specifics (Large Kernel Distillation Network, Xie et al., CVPRW 2023; NTIRE 2023 ESR report
§4.23, team Set5_Baby; official code stella-von/LKDN@54df78a ``basicsr/archs/lkdns_arch.py``,
``lkdn_blocks.py``, MIT): the official state-dict layouts (deploy: BSConv-U + ``upsampler.0``;
training: RBSB ``rep1x1`` + re-parameterized upsampler), an independent functional reference on
the official keys for both forms, the released ``LKDN-S_del_rep_x4.pth`` and ``LKDN-S_x4.pth``
loaded through ``rtsr_arch.load_model`` against it on real photographs, our fusion of the training
file against the published deploy file, the importer and the two-stage recipe. Fusion, keyword
errors and the generic checks are in test_contract.py; the NTIRE 2023 ESR counts in
test_ntire23_counts.py.
"""
import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import check_official_weights, check_recipe_network, check_reference_and_fusion, load_official, \
    load_recipe, lr_photos, n_params, official_fixture, output_peaks, photo, randomize, state_layout
from reference import conv, count_blocks, pad_with, upsample
from rtsr_arch.archs.lkdns_arch import LKDNS, import_official_lkdns
from rtsr_arch.archs.official import find_importers
from rtsr_arch.loader import read_checkpoint, resolve_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')


# ======================================================================= independent reference
# stella-von/LKDN lkdns_arch.py LKDN_S and lkdn_blocks.py (BSConvU, BSConvU_rep, Attention, LKDB,
# UpsampleOneStep, Upsampler_rep), written on the official keys with torch.nn.functional only.

def _bsconv(t, sd, name):
    """BSConvU: pw 1x1 (no bias), then dw depthwise 3x3; BSConvU_rep when ``rep1x1`` is stored:
    y = pw(t) + t; dw(y) + y + rep1x1(y)."""
    c = sd[f'{name}.dw.weight'].shape[0]
    y = conv(t, sd, f'{name}.pw')
    if f'{name}.rep1x1.weight' not in sd:
        return conv(y, sd, f'{name}.dw', padding=1, groups=c)
    y = y + t
    return conv(y, sd, f'{name}.dw', padding=1, groups=c) + y + conv(y, sd, f'{name}.rep1x1', groups=c)


def _lkdb(x, sd, p):
    gelu = F.gelu
    d1 = gelu(conv(x, sd, f'{p}.c1_d'))
    r1 = gelu(_bsconv(x, sd, f'{p}.c1_r'))
    d2 = gelu(conv(r1, sd, f'{p}.c2_d'))
    r2 = gelu(_bsconv(r1, sd, f'{p}.c2_r'))
    d3 = gelu(conv(r2, sd, f'{p}.c3_d'))
    r3 = gelu(_bsconv(r2, sd, f'{p}.c3_r'))
    r4 = gelu(_bsconv(r3, sd, f'{p}.c4'))
    out = conv(torch.cat([d1, d2, d3, r4], 1), sd, f'{p}.c5')
    a = out.shape[1]
    attn = conv(conv(conv(out, sd, f'{p}.atten.pointwise'), sd, f'{p}.atten.depthwise', padding=2, groups=a),
                sd, f'{p}.atten.depthwise_dilated', padding=6, groups=a, dilation=3)
    out = conv(out * attn, sd, f'{p}.c6')
    # the official nn.LayerNorm(C) on the channels-last map (eps 1e-5)
    out = F.layer_norm(out.permute(0, 2, 3, 1), (out.shape[1],), sd[f'{p}.pixel_norm.weight'],
                       sd[f'{p}.pixel_norm.bias'], 1e-5).permute(0, 3, 1, 2)
    return out + x


def lkdns_reference(sd, x, num_in=4):
    """The official LKDN-S forward on RGB ``x`` in [0, 1] (data range 1.0), deploy or training keys."""
    fea = _bsconv(torch.cat([x] * num_in, 1), sd, 'fea_conv')
    outs, out = [], fea
    for i in range(1, count_blocks(sd, 'B') + 1):
        out = _lkdb(out, sd, f'B{i}')
        outs.append(out)
    out = _bsconv(F.gelu(conv(torch.cat(outs, 1), sd, 'c1')), sd, 'c2') + fea
    if 'upsampler.0.weight' in sd:
        return upsample(out, sd, 'upsampler.0', x.shape[1])
    # Upsampler_rep: the 1x1 expansion padded by one pixel of its bias, written explicitly
    v = pad_with(conv(out, sd, 'upsampler.conv1x1'), sd['upsampler.conv1x1.bias'])
    y = conv(out, sd, 'upsampler.conv1') + conv(out, sd, 'upsampler.conv3', padding=1) + \
        conv(v, sd, 'upsampler.conv3x3')
    scale = int(round((y.shape[1] // x.shape[1]) ** 0.5))
    return F.pixel_shuffle(y, scale)


# ======================================================================= layouts

def test_lkdns_deploy_layout_is_the_official_one():
    """LKDN_S(conv='BSConvU', upsampler='pixelshuffledirect'): 160 tensors, 129,177 parameters."""
    layout = state_layout(LKDNS(deploy=True))
    assert len(layout) == 160 and n_params(LKDNS(deploy=True)) == 129_177
    assert layout['fea_conv.pw.weight'] == (42, 12, 1, 1) and layout['fea_conv.dw.weight'] == (42, 1, 3, 3)
    assert 'fea_conv.pw.bias' not in layout
    assert layout['B1.c1_r.pw.weight'] == (42, 42, 1, 1) and layout['B1.c4.pw.weight'] == (21, 42, 1, 1)
    assert layout['B5.c5.weight'] == (42, 84, 1, 1) and layout['B3.atten.depthwise_dilated.weight'] == (42, 1, 5, 5)
    assert layout['B2.pixel_norm.weight'] == (42,) and layout['c1.weight'] == (42, 210, 1, 1)
    assert layout['upsampler.0.weight'] == (48, 42, 3, 3) and not any('rep1x1' in k for k in layout)
    assert state_layout(rtsr_arch.reparameterize(LKDNS())) == layout


def test_lkdns_training_layout_is_the_official_one():
    """LKDN_S(conv='BSConvU_rep', upsampler='pixelshuffle_rep'): 196 tensors, 172,449 parameters; only
    c1_r/c2_r/c3_r are RBSBs (fea_conv, c4 and c2 stay BSConv-U)."""
    layout = state_layout(LKDNS())
    assert len(layout) == 196 and n_params(LKDNS()) == 172_449
    assert {k.rsplit('.', 2)[0] for k in layout if 'rep1x1' in k} == {
        f'B{i}.c{j}_r' for i in range(1, 6) for j in (1, 2, 3)}
    assert layout['upsampler.conv1x1.weight'] == (84, 42, 1, 1) and layout['upsampler.conv3x3.weight'] == (48, 84, 3, 3)
    assert layout['upsampler.conv1.weight'] == (48, 42, 1, 1) and 'upsampler.0.weight' not in layout


# ======================================================================= the released weights

def _compare(model, sd, lr, num_in=4):
    with torch.no_grad():
        return (model(lr) - lkdns_reference(sd, lr, num_in)).abs().max().item()


def test_lkdns_official_deploy_weights_match_the_reference():
    """``LKDN-S_del_rep_x4.pth`` through load_model (auto-detected) reproduces the independent reference
    on photographs to float32 rounding (float64: ~1e-12) and beats bicubic."""
    check_official_weights(official_fixture('lkdn_s_deploy.pth'), lkdns_reference, load_official('lkdn_s_deploy.pth'),
                           LKDNS, 129_177, {'type': 'LKDNS', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 42,
                                            'num_atten': 42, 'num_block': 5, 'upscale': 4, 'num_in': 4, 'deploy': True},
                           tol32=5e-6)


def test_lkdns_official_training_weights_match_the_reference_and_fuse_to_the_published_deploy_file():
    """``LKDN-S_x4.pth`` (``params_ema``, as the official test config reads it): the training form
    through load_model(deploy=False) reproduces the reference training forward; our fusion of it
    reproduces that forward in float64 (~1e-12) and the published deploy file's outputs to float32
    rounding (the official deploy file was itself fused from these ``params_ema`` in float32)."""
    path = official_fixture('lkdn_s_train.pth')
    ema = load_official('lkdn_s_train.pth')['params_ema']
    published = load_official('lkdn_s_deploy.pth')
    resolved = resolve_checkpoint(path)
    assert resolved.how == 'official LKDNS checkpoint' and all(torch.equal(resolved.state_dict[k], ema[k]) for k in ema)
    _, lr = lr_photos()
    train = rtsr_arch.load_model(path, deploy=False)
    assert not train.network_opt['deploy'] and n_params(train) == 172_449
    diff_train = _compare(train, ema, lr)
    fused = rtsr_arch.load_model(path)
    assert n_params(fused) == 129_177 and set(fused.state_dict()) == set(published)
    diff_fused_train = _compare(fused, ema, lr)
    diff_fused_published = _compare(fused, published, lr)
    fused64 = rtsr_arch.load_model(path, dtype=torch.float64)
    diff64 = _compare(fused64, {k: v.double() for k, v in ema.items()}, lr.double())
    with torch.no_grad():
        y_pub = lkdns_reference(published, lr)
        y_train = lkdns_reference(ema, lr)
    official_gap = (y_pub - y_train).abs().max().item()
    print(f'LKDN-S_x4.pth: training form vs reference {diff_train:.2e}; our fusion vs training reference '
          f'{diff_fused_train:.2e} (float64 {diff64:.2e}); our fusion vs the published deploy file '
          f'{diff_fused_published:.2e}; published deploy vs training reference {official_gap:.2e}')
    assert diff_train <= 5e-6 and diff_fused_train <= 5e-6 and diff64 <= 1e-12
    assert diff_fused_published <= 5e-6
    # the 113 tensors that no fusion touches are the params_ema ones, bit for bit, in both files
    sd = fused.state_dict()
    untouched = [k for k in published if not k.startswith('upsampler') and not any(f'c{j}_r.' in k for j in (1, 2, 3))]
    assert len(untouched) == 113 and all(torch.equal(sd[k], published[k]) for k in untouched)


def test_lkdns_fused_kernels_equal_the_published_ones_to_float32_rounding():
    """The kernels our float64 fusion writes differ from the published deploy file's only by the
    rounding of its float32 fusion."""
    fused = rtsr_arch.load_model(official_fixture('lkdn_s_train.pth')).state_dict()
    published = load_official('lkdn_s_deploy.pth')
    worst = max((fused[k] - published[k]).abs().max().item() / max(1.0, published[k].abs().max().item())
                for k in published)
    print(f'max relative |our fused tensor - published tensor| {worst:.2e}')
    assert worst <= 1e-6


def test_lkdns_is_declared_float16_unsafe_because_the_released_weights_overflow():
    """With ``LKDN-S_del_rep_x4.pth`` the features before a block's LayerNorm exceed float16's 65504 on
    an ordinary photograph (the official network too: its nn.LayerNorm input is the same map), so
    float16 inference gives non-finite values; bfloat16 (float32's exponent range) stays accurate.
    Hence ``fp16_safe = False`` (rtsr-upscale / rtsr-export refuse --precision fp16 / --fp16)."""
    assert LKDNS.fp16_safe is False
    path = official_fixture('lkdn_s_deploy.pth')
    x = photo('astronaut', 64, 64)
    model = rtsr_arch.load_model(path)
    with torch.no_grad():
        with output_peaks([getattr(model, b).c6 for b in model.block_names]) as peak:
            y32 = model(x)
        y16 = rtsr_arch.load_model(path, dtype=torch.float16)(x.half()).float()
        ybf = rtsr_arch.load_model(path, dtype=torch.bfloat16)(x.bfloat16()).float()
    print(f'LKDN-S_del_rep_x4.pth, 64x64 astronaut: c6 peak {max(peak):.3g}; float16 finite: '
          f'{bool(torch.isfinite(y16).all())}; bfloat16 max |diff| {(ybf - y32).abs().max():.2e}')
    assert max(peak) > torch.finfo(torch.float16).max and not torch.isfinite(y16).all()
    assert (ybf - y32).abs().max() <= 5e-2


# ======================================================================= training form

@pytest.mark.parametrize('kwargs', [dict(num_feat=6, num_atten=5, num_block=2, num_in=2),
                                    dict(num_feat=5, num_atten=4, num_block=1, upscale=3, num_in_ch=1,
                                         num_out_ch=1, num_in=3)])
def test_lkdns_training_form_matches_the_reference_and_fuses_to_the_official_layout(kwargs):
    """The training form equals the reference written from the official BSConvU_rep / Upsampler_rep
    formulas (explicit bias padding), and its fused state dict, through the reference deploy forward,
    gives the same output on every pixel (down to 1x1 inputs)."""
    model = randomize(LKDNS(**kwargs), seed=3, std=1.0, fan_in=True).double().eval()
    num_in = model.num_in
    inputs = [photo('chelsea', h, w, dtype=torch.float64, batch=2)[:, :model.fea_conv.in_channels // num_in]
              for h, w in ((1, 1), (5, 7), (12, 9))]
    check_reference_and_fusion(model, lambda sd, x: lkdns_reference(sd, x, num_in), inputs, gone=('rep1x1', 'conv1x1'))


# ======================================================================= importer

def test_lkdns_importer_reads_both_forms_and_assumes_the_image_channels():
    """fea_conv's input width is image channels x copies: the importer assumes RGB when the widths
    allow it (and says so); the rest is read from the shapes."""
    model = LKDNS(num_feat=6, num_atten=5, num_block=3, upscale=2, num_in=2)
    result = import_official_lkdns(model.state_dict(), {})
    assert result.assumed == ('num_in_ch',) and result.network_opt == model.network_opt
    assert 'num_in_ch' in result.notes[0]
    fused = rtsr_arch.reparameterize(model)
    assert import_official_lkdns(fused.state_dict(), {}).network_opt == {**model.network_opt, 'deploy': True}
    gray = LKDNS(num_feat=4, num_atten=4, num_block=1, num_in_ch=1, num_out_ch=1, num_in=6)  # 6 = 3 x 2 or 1 x 6
    guess = import_official_lkdns(gray.state_dict(), {}).network_opt
    assert (guess['num_in_ch'], guess['num_in']) == (1, 6)  # 48 = 3 x 16 is not: 16 outputs = 1 x 4^2
    assert import_official_lkdns(gray.state_dict(), {'num_in_ch': 1}).network_opt == gray.network_opt


def test_lkdns_importer_refuses_mixed_forms():
    sd = LKDNS(num_feat=4, num_atten=4, num_block=1).state_dict()
    sd.update({k.replace('upsampler.conv3.', 'upsampler.0.'): v for k, v in sd.items() if 'upsampler.conv3.' in k})
    for k in [k for k in sd if k.startswith('upsampler.conv')]:
        del sd[k]
    with pytest.raises(ValueError, match='mixed forms'):
        import_official_lkdns(sd, {})


def test_lkdns_official_files_are_detected_as_lkdns_only():
    for name in ('lkdn_s_deploy.pth', 'lkdn_s_train.pth'):
        assert [m.arch for m, _ in find_importers(read_checkpoint(official_fixture(name))[0])] == ['LKDNS'], name


# ======================================================================= recipes

def test_lkdns_recipes_chain():
    """Report §4.23: 256 HR patches, batch 128, L1, 950k iterations -> 480 patches, batch 64, L2, lr 2e-5,
    50k iterations; EMA 0.999 in both; DIV2K + Flickr2K bicubic x4; the fine-tuning starts from the
    first stage's EMA weights; the training form throughout, validated fused."""
    stages = [load_recipe('LKDNS', f'train_LKDNS_x4_{s}') for s in ('stage1_scratch_L1', 'stage2_finetune_L2')]
    first, second = stages
    assert second['path']['pretrain_network_g'] == f"experiments/{first['name']}/models/net_g_latest.pth"
    assert second['path']['param_key_g'] == 'params_ema' and second['network_g'] == first['network_g']
    assert [s['datasets']['train']['gt_size'] for s in stages] == [256, 480]
    assert [s['datasets']['train']['batch_size_per_gpu'] * s['num_gpu'] for s in stages] == [128, 64]
    assert [s['train']['losses'][0]['type'] for s in stages] == ['L1Loss', 'MSELoss']
    assert [s['train']['total_iter'] for s in stages] == [950_000, 50_000]
    assert [s['train']['optim_g']['lr'] for s in stages] == [1e-3, 2e-5]
    assert all(s['train']['ema_decay'] == 0.999 and s['val']['deploy'] for s in stages)
    assert all('DF2K' in s['datasets']['train']['dataroot_gt'] for s in stages)
    check_recipe_network(first['network_g'], LKDNS, 172_449, 129_177)
