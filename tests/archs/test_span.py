"""SPAN specifics (Wan et al., "Swift Parameter-free Attention Network for Efficient
Super-Resolution", CVPRW 2024; AIS 2024 RTSR report §3.8, team XiaomiMM; official code
hongyuanyu/SPAN@c77a591 ``basicsr/archs/span_arch.py``, Apache-2.0): the official state-dict
layout with ``eval_conv`` in both forms, an independent functional reference on the official keys,
the (x - mean) * 255 input convention without de-normalization, the in-place SiLU quirk of the
concatenated feature, the parameter and FLOP counts, the importer, and the round trips with
spandrel (chaiNNer-org/spandrel, whose SPAN is a copy of the official class). Fusion, keyword
errors and the generic checks are in test_contract.py.

No official SPAN weights are public outside Google Drive, so the checkpoint tests use weights in
the official layout written by spandrel's class and in BasicSR's ``{'params': ...}`` format (the
official repository is a BasicSR fork).
"""
import copy
import math

import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import PHOTOS, n_params, photo, photos, randomize
from rtsr_arch.archs.official import OfficialImportError, find_importers
from rtsr_arch.archs.rep import Conv3XC
from rtsr_arch.archs.span_arch import SPAN, SPAN_RGB_MEAN, import_official_span, span_official_training_layout
from rtsr_arch.utils.efficiency import count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')

BRANCHES = ('sk', 'conv.0', 'conv.1', 'conv.2')


def conv3xc_prefixes(num_block):
    return ['conv_1', 'conv_2'] + [f'block_{i}.c{j}_r' for i in range(1, num_block + 1) for j in (1, 2, 3)]


def random_span(seed=0, dtype=torch.float64, **kwargs):
    """Random weights (fan-in scaled, std 0.5: with std 1 the deep random network amplifies
    float32 rounding ~1e4-fold, a property of those weights, not of the code)."""
    return randomize(SPAN(**kwargs), seed=seed, std=0.5, fan_in=True).to(dtype).eval()


# ======================================================================= independent reference

OFFICIAL_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _conv3xc_branches(x, sd, p):
    """Official Conv3XC training forward: conv(pad(x, 1)) + sk(x), the 1x1s and the 3x3 unpadded."""
    t = F.conv2d(F.pad(x, (1, 1, 1, 1)), sd[f'{p}.conv.0.weight'], sd[f'{p}.conv.0.bias'])
    t = F.conv2d(t, sd[f'{p}.conv.1.weight'], sd[f'{p}.conv.1.bias'])
    t = F.conv2d(t, sd[f'{p}.conv.2.weight'], sd[f'{p}.conv.2.bias'])
    return t + F.conv2d(x, sd[f'{p}.sk.weight'], sd[f'{p}.sk.bias'])


def probed_eval_conv(sd, p):
    """The 3x3 kernel and bias the official eval mode computes (``update_params``), derived
    independently of any merge formula: the affine map the training branches compute at an
    interior pixel, read off their responses (float64) to a zero input and to impulses on a 3x3
    input (whose centre output sees the whole input and no padding). The impulses are 2^16, so
    subtracting the bias costs no precision (the division by 2^16 is exact)."""
    sd64 = {k: v.double() for k, v in sd.items() if k.startswith(p + '.')}
    c_out, c_in = sd64[f'{p}.sk.weight'].shape[:2]
    amplitude = 2.0 ** 16
    probes = torch.zeros(1 + 9 * c_in, c_in * 9, dtype=torch.float64)
    probes[1:] = amplitude * torch.eye(9 * c_in, dtype=torch.float64)
    response = _conv3xc_branches(probes.view(-1, c_in, 3, 3), sd64, p)[:, :, 1, 1]
    bias = response[0]
    weight = ((response[1:] - bias) / amplitude).t().reshape(c_out, c_in, 3, 3)
    return weight, bias


@torch.no_grad()
def span_reference(state_dict, x, conv3xc='branches', pre_activation_cat=False):
    """hongyuanyu/SPAN ``SPAN.forward`` on the official raw keys, ``torch.nn.functional`` only.

    conv3xc: 'branches' (official training mode), 'probed' (official eval mode: one 3x3 conv
    with the kernel of :func:`probed_eval_conv`) or 'stored' (the ``eval_conv`` keys as stored:
    deploy-form dicts). ``pre_activation_cat`` is a deliberately wrong reading (the last block's
    ``c1_r`` output before its SiLU), for the negative control."""
    sd = {k: v.to(x.dtype) for k, v in state_dict.items()}
    if 'no_norm' not in sd:  # x = (x - mean) * img_range, mean built in float32 then type_as(x)
        x = (x - torch.tensor(OFFICIAL_RGB_MEAN, dtype=torch.float32).view(1, 3, 1, 1).to(x.dtype)) * 255.0

    def c3(t, p):
        if conv3xc == 'branches':
            return _conv3xc_branches(t, sd, p)
        if conv3xc == 'probed':
            w, b = probed_eval_conv(state_dict, p)
            return F.conv2d(t, w.to(t.dtype), b.to(t.dtype), padding=1)
        return F.conv2d(t, sd[f'{p}.eval_conv.weight'], sd[f'{p}.eval_conv.bias'], padding=1)

    num_block = len({k.split('.')[0] for k in sd if k.startswith('block_')})
    feat = c3(x, 'conv_1')
    h = feat
    for i in range(1, num_block + 1):
        pre1 = c3(h, f'block_{i}.c1_r')
        out1 = F.silu(pre1)  # official: SiLU(inplace=True) on out1 itself
        out3 = c3(F.silu(c3(out1, f'block_{i}.c2_r')), f'block_{i}.c3_r')
        h = (out3 + h) * (torch.sigmoid(out3) - 0.5)
        if i == 1:
            out_b1 = h
    last = pre1 if pre_activation_cat else out1
    y = F.conv2d(torch.cat([feat, c3(h, 'conv_2'), out_b1, last], 1), sd['conv_cat.weight'], sd['conv_cat.bias'])
    y = F.conv2d(y, sd['upsampler.0.weight'], sd['upsampler.0.bias'], padding=1)
    scale = math.isqrt(y.shape[1] // x.shape[1])
    return F.pixel_shuffle(y, scale)


def test_reference_probe_recovers_a_known_kernel():
    """The probe itself: on a Conv3XC whose branches are one known 3x3 conv (via the exact
    embedding), it returns that conv."""
    w, b = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    sd = span_official_training_layout({'c.eval_conv.weight': w, 'c.eval_conv.bias': b})
    pw, pb = probed_eval_conv(sd, 'c')
    assert (pw - w).abs().max() <= 1e-14 and (pb - b).abs().max() <= 1e-14


# ======================================================================= the reference vs this package

CONFIGS = [dict(), dict(preset='ais24'), dict(num_feat=8, num_block=3, upscale=2, norm=False)]


@pytest.mark.parametrize('kwargs', CONFIGS, ids=['ch48_x4', 'ais24', 'c8b3_x2_nonorm'])
def test_reference_equals_training_and_fused_forms_on_photos(kwargs):
    """Training form == official training mode; fused == official eval mode (independently
    probed kernels) and == the stored eval_conv; float64 ~1e-12, float32 to rounding."""
    model = random_span(seed=5, **kwargs)
    fused = rtsr_arch.reparameterize(copy.deepcopy(model))
    sd, sd_fused = model.state_dict(), fused.state_dict()
    x = photos(20, 28, torch.float64, names=PHOTOS[:2])
    with torch.no_grad():
        y, y_fused = model(x), fused(x)
    scale = y.abs().max().item()
    ref_train = span_reference(sd, x)
    ref_eval = span_reference(sd, x, 'probed')
    ref_stored = span_reference(sd_fused, x, 'stored')
    ref_stored_train = span_reference(sd, x, 'stored')  # the training checkpoint's eval_conv
    diffs = {'train': (y - ref_train).abs().max().item(), 'fused vs probed': (y_fused - ref_eval).abs().max().item(),
             'fused vs stored': (y_fused - ref_stored).abs().max().item(),
             'training eval_conv': (y_fused - ref_stored_train).abs().max().item()}
    print(f'SPAN {kwargs} float64, output scale {scale:.3g}:', {k: f'{v:.2e}' for k, v in diffs.items()})
    assert y.shape == (2, 3, 20 * model.upscale, 28 * model.upscale)
    assert max(diffs.values()) <= 1e-10 * max(1.0, scale)
    assert diffs['train'] <= 1e-12 * max(1.0, scale)
    # float32: the package's forms vs the reference computed in float64
    model32, fused32 = copy.deepcopy(model).float(), copy.deepcopy(fused).float()
    x32 = x.float()
    with torch.no_grad():
        d_train = (model32(x32).double() - ref_train).abs().max().item()
        d_fused = (fused32(x32).double() - ref_eval).abs().max().item()
    print(f'SPAN {kwargs} float32 vs float64 reference: training {d_train:.2e}, fused {d_fused:.2e}')
    assert max(d_train, d_fused) <= 1e-5 * scale


def test_fused_kernel_equals_the_official_eval_kernel():
    """Every eval_conv of the fused network equals the probed official eval kernel (float64)."""
    model = random_span(seed=6, num_feat=6, num_block=2)
    fused = rtsr_arch.reparameterize(copy.deepcopy(model)).state_dict()
    for p in conv3xc_prefixes(2):
        w, b = probed_eval_conv(model.state_dict(), p)
        assert (fused[f'{p}.eval_conv.weight'] - w).abs().max() <= 1e-12, p
        assert (fused[f'{p}.eval_conv.bias'] - b).abs().max() <= 1e-12, p


def test_concatenated_feature_is_the_activated_c1_r_output():
    """Official quirk: SPAB's ``act1`` is ``SiLU(inplace=True)`` applied to ``out1``, which the
    block then returns, so SPAN concatenates SiLU(c1_r(.)) of the last block, not its raw output
    (as the paper's Eq. 3 would suggest). The wrong reading changes the output by far more than
    rounding."""
    model = random_span(seed=7, num_feat=6, num_block=2)
    x = photos(12, 16, torch.float64)
    with torch.no_grad():
        y = model(x)
    wrong = span_reference(model.state_dict(), x, pre_activation_cat=True)
    assert (y - span_reference(model.state_dict(), x)).abs().max() <= 1e-12 * y.abs().max()
    assert (y - wrong).abs().max() > 1e-3 * y.abs().max()


# ======================================================================= input convention

def test_input_is_mean_subtracted_and_scaled_by_255_without_denormalization():
    """x -> (x - (0.4488, 0.4371, 0.4040)) * 255 inside; the output is the upsampler's, not
    de-normalized (no + mean, no / 255); the mean is not in the state dict."""
    assert SPAN_RGB_MEAN == OFFICIAL_RGB_MEAN
    model = random_span(seed=8, num_feat=6, num_block=1)
    plain = SPAN(num_feat=6, num_block=1, norm=False).double().eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items()} | {'no_norm': torch.zeros(1)})
    x = photos(10, 12, torch.float64)
    mean = torch.tensor(OFFICIAL_RGB_MEAN, dtype=torch.float32).double().view(1, 3, 1, 1)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y, plain((x - mean) * 255.0))
        # no output de-normalization: the output is exactly the upsampler's
        feats = {}
        model.upsampler.register_forward_hook(lambda m, i, o: feats.setdefault('up', o))
        assert torch.equal(model(x), feats['up'])
    assert 'mean' not in model.state_dict() and model.mean.dtype == torch.float64
    assert model.value_range == (0.0, 255.0) and plain.value_range == (0.0, 1.0)
    assert set(plain.state_dict()) - set(model.state_dict()) == {'no_norm'}
    with pytest.raises(ValueError, match='num_in_ch=1 needs norm=False'):
        SPAN(num_in_ch=1)


# ======================================================================= layout and counts

def official_keys(num_feat_blocks):
    keys = []
    for p in conv3xc_prefixes(num_feat_blocks):
        keys += [f'{p}.{b}.{t}' for b in (*BRANCHES, 'eval_conv') for t in ('weight', 'bias')]
    return set(keys) | {'conv_cat.weight', 'conv_cat.bias', 'upsampler.0.weight', 'upsampler.0.bias'}


def test_state_dict_layout_is_official():
    """hongyuanyu/SPAN's training module registers sk, conv.{0,1,2} and eval_conv per Conv3XC:
    the training form has all of them (eval_conv as buffers), the deploy form eval_conv only."""
    train, deploy = SPAN(), SPAN(deploy=True)
    assert set(train.state_dict()) == official_keys(6)
    assert set(deploy.state_dict()) == {k for k in official_keys(6) if '.sk.' not in k and '.conv.' not in k}
    assert set(rtsr_arch.reparameterize(SPAN()).state_dict()) == set(deploy.state_dict())
    sd = train.state_dict()
    assert sd['conv_1.conv.0.weight'].shape == (6, 3, 1, 1) and sd['conv_1.conv.1.weight'].shape == (96, 6, 3, 3)
    assert sd['conv_1.conv.2.weight'].shape == (48, 96, 1, 1) and sd['conv_1.eval_conv.weight'].shape == (48, 3, 3, 3)
    assert sd['block_3.c2_r.conv.1.weight'].shape == (96, 96, 3, 3) and sd['conv_cat.weight'].shape == (48, 192, 1, 1)
    assert sd['upsampler.0.weight'].shape == (48, 48, 3, 3)
    # eval_conv is not trainable state in the training form
    names = [n for n, _ in train.named_parameters()]
    assert not any('eval_conv' in n for n in names) and len(names) == len(official_keys(6)) - 2 * 20


def test_eval_conv_mirror_is_refreshed_on_save_and_ignored_on_load():
    model = random_span(seed=9, num_feat=6, num_block=2)
    fused = rtsr_arch.reparameterize(copy.deepcopy(model)).state_dict()
    sd = model.state_dict()
    for p in conv3xc_prefixes(2):  # the same float64 merge as the deploy export, bit for bit
        assert torch.equal(sd[f'{p}.eval_conv.weight'], fused[f'{p}.eval_conv.weight'])
        assert torch.equal(sd[f'{p}.eval_conv.bias'], fused[f'{p}.eval_conv.bias'])
    # training changes the branches; the next state dict follows them
    with torch.no_grad():
        model.block_1.c2_r.conv[1].weight.add_(0.1)
    assert not torch.equal(model.state_dict()['block_1.c2_r.eval_conv.weight'], sd['block_1.c2_r.eval_conv.weight'])
    # stale or garbage eval_conv in a loaded checkpoint changes nothing (as the official eval forward)
    stale = {k: (torch.full_like(v, 7.0) if 'eval_conv' in k else v) for k, v in sd.items()}
    other = SPAN(num_feat=6, num_block=2).double().eval()
    other.load_state_dict(stale, strict=True)
    ref = SPAN(num_feat=6, num_block=2).double().eval()
    ref.load_state_dict(sd, strict=True)
    x = photos(9, 11, torch.float64)
    with torch.no_grad():
        assert torch.equal(other(x), ref(x))
    assert torch.equal(other.state_dict()['conv_2.eval_conv.weight'], sd['conv_2.eval_conv.weight'])
    # the buffers follow dtype conversions and never reach an optimizer
    opt = torch.optim.Adam(SPAN(num_feat=6, num_block=1).parameters())
    assert sum(p.numel() for g in opt.param_groups for p in g['params']) == n_params(SPAN(num_feat=6, num_block=1))
    assert SPAN(num_feat=6, num_block=1).half().state_dict()['conv_1.eval_conv.weight'].dtype == torch.float16


def test_conv3xc_eval_conv_alone_is_a_deploy_checkpoint():
    """The eval_conv entries of a training checkpoint load into the deploy build and reproduce the
    training form."""
    model = random_span(seed=10, num_feat=6, num_block=2)
    sd = model.state_dict()
    deploy = SPAN(num_feat=6, num_block=2, deploy=True).double().eval()
    deploy.load_state_dict({k: v for k, v in sd.items() if not any(f'.{b}.' in k for b in BRANCHES)}, strict=True)
    x = photos(8, 10, torch.float64)
    with torch.no_grad():
        assert (deploy(x) - model(x)).abs().max() <= 1e-10


def deploy_params_formula(num_feat, num_block, upscale=4, channels=3):
    """eval_conv: conv_1 (9*3*C + C), 3 per SPAB and conv_2 (9*C*C + C); conv_cat 4C*C + C;
    upsampler 9*C*3s^2 + 3s^2."""
    c, out = num_feat, channels * upscale ** 2
    return (9 * channels * c + c) + (3 * num_block + 1) * (9 * c * c + c) + (4 * c * c + c) + (9 * c * out + out)


@pytest.mark.parametrize('num_feat, num_block, expected', [(48, 6, 426_288), (28, 6, 150_688), (32, 6, 194_608),
                                                           (16, 6, 52_528), (16, 2, 24_688), (17, 2, 27_367)])
def test_deploy_parameter_counts(num_feat, num_block, expected):
    """The deploy-equivalent counts of hongyuanyu/SPAN's class (eval_conv + conv_cat + upsampler):
    F=48 426,288; 28: 150,688; 32: 194,608; 16: 52,528; and the 2-SPAB widths around AIS 2024's
    Table 1 (0.026 M): C16 24,688, C17 27,367."""
    assert deploy_params_formula(num_feat, num_block) == expected
    assert n_params(SPAN(num_feat=num_feat, num_block=num_block, deploy=True)) == expected
    train = SPAN(num_feat=num_feat, num_block=num_block)
    copies = sum(b.numel() for n, b in train.named_buffers() if 'eval_conv' in n)
    assert copies == expected - (4 * num_feat + 1) * num_feat - (9 * num_feat * 48 + 48)
    if (num_feat, num_block) == (48, 6):  # the official module: training branches + eval_conv copies
        assert n_params(train) + copies == 2_236_728


def test_efficiency_counts_match_the_official_counter():
    """NTIRE ESR counter in eval mode (the official Conv3XC then runs only eval_conv): F=48 at
    3x256x256: 27.87 G FLOPs, 69.21 M activations, 22 convs. AIS 2024 entry (2 SPABs, C16) at
    the challenge's 960x540 input: 12.70 G (Table 1: 13.3 G, see SPAN.presets)."""
    c = count_ntire_esr(SPAN(deploy=True), (1, 3, 256, 256))
    assert (c.params, c.flops, c.activations, c.num_conv) == (426_288, 27_868_004_352, 69_206_016, 22)
    assert round(c.flops / 1e9, 2) == 27.87 and round(c.activations / 1e6, 2) == 69.21
    ais = count_ntire_esr(SPAN(preset='ais24', deploy=True), (1, 3, 540, 960))
    assert ais.params == 24_688 and round(ais.flops / 1e9, 2) == 12.70 and ais.num_conv == 10
    # the training form's count is the over-parameterized one (every branch conv)
    assert count_ntire_esr(SPAN(preset='ais24'), (1, 3, 540, 960)).flops > 3 * ais.flops


# ======================================================================= importer

def official_checkpoint(model):
    """What the official BasicSR fork saves: ``{'params': state_dict}`` with every key."""
    return {'params': model.state_dict()}


def test_importer_reads_official_training_and_deploy_dicts(tmp_path):
    model = random_span(seed=11, dtype=torch.float32, num_feat=8, num_block=6)
    path = tmp_path / 'span_official.pth'
    torch.save(official_checkpoint(model), path)
    x = photos(10, 14, torch.float32)
    ref = span_reference(model.state_dict(), x.double())
    loaded = rtsr_arch.load_model(path)  # auto-detected, fused
    assert loaded.network_opt == {'type': 'SPAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 6,
                                  'upscale': 4, 'norm': True, 'deploy': True, 'preset': None}
    with torch.no_grad():
        diff = (loaded(x).double() - ref).abs().max().item()
    print(f'official-layout training checkpoint -> load_model (fused, float32) vs reference: {diff:.2e}')
    assert diff <= 1e-5 * ref.abs().max()
    # deploy-form dict (eval_conv only)
    deploy_path = tmp_path / 'span_deploy.pth'
    torch.save(rtsr_arch.reparameterize(copy.deepcopy(model)).state_dict(), deploy_path)
    result = import_official_span(find_importers(torch.load(deploy_path))[0][1], {})
    assert result.network_opt['deploy'] is True and result.assumed == ()
    with torch.no_grad():
        assert (rtsr_arch.load_model(deploy_path)(x).double() - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_importer_fills_a_missing_eval_conv_and_notes_unusual_depth():
    model = random_span(seed=12, num_feat=6, num_block=2)
    sd = {k: v for k, v in model.state_dict().items() if 'eval_conv' not in k}
    [(importer, found)] = find_importers(sd)
    result = importer.convert(found, {})
    assert any('eval_conv was missing in 8 Conv3XC' in n for n in result.notes)
    assert any('2 SPABs' in n for n in result.notes)
    for k, v in model.state_dict().items():
        assert (result.state_dict[k] - v).abs().max() <= 1e-12, k


def test_importer_detection_is_strict():
    sd = SPAN(num_feat=4, num_block=2).state_dict()
    assert [i.arch for i, _ in find_importers(sd)] == ['SPAN']
    assert find_importers({**sd, 'extra.weight': torch.zeros(1)}) == []
    assert find_importers({k: v for k, v in sd.items() if not k.startswith('conv_cat.')}) == []
    gap = {k.replace('block_2.', 'block_3.'): v for k, v in sd.items()}
    [(importer, found)] = find_importers(gap)
    with pytest.raises(OfficialImportError, match='block_1 ... block_N'):
        importer.convert(found, {})
    gray = SPAN(num_feat=4, num_block=1, num_in_ch=1, num_out_ch=3, norm=False, upscale=2).state_dict()
    opt = import_official_span(gray, {}).network_opt
    assert {k: opt[k] for k in ('num_in_ch', 'num_out_ch', 'upscale', 'norm')} == dict(num_in_ch=1, num_out_ch=3,
                                                                                      upscale=2, norm=False)


def test_official_training_layout_of_a_deploy_checkpoint_is_exact():
    """A fused checkpoint expanded into the official training layout: the training form computes
    the deploy conv exactly (products by 0 and 1 only) and re-fuses to the same kernels."""
    fused = rtsr_arch.reparameterize(random_span(seed=13, num_feat=6, num_block=2))
    expanded = span_official_training_layout(fused.state_dict())
    assert set(expanded) == set(SPAN(num_feat=6, num_block=2).state_dict())
    train = SPAN(num_feat=6, num_block=2).double().eval()
    train.load_state_dict(expanded, strict=True)
    x = photos(9, 13, torch.float64)
    with torch.no_grad():
        assert (train(x) - fused(x)).abs().max() <= 1e-12 * fused(x).abs().max()
    refused = rtsr_arch.reparameterize(train).state_dict()
    assert all(torch.equal(refused[k], v) for k, v in fused.state_dict().items())


# ======================================================================= spandrel (chaiNNer-org/spandrel)

def _spandrel():
    return pytest.importorskip('spandrel', reason='spandrel not installed (pip install spandrel)')


def _spandrel_output(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
@pytest.mark.parametrize('norm', [True, False])
def test_spandrel_loads_checkpoints_written_here(tmp_path, suffix, norm):
    """``rtsr_arch.save_model`` of a training-form SPAN (.pth: ``{'params', 'network_g'}``, which
    spandrel unwraps; .safetensors: the bare tensors) is detected by spandrel as SPAN, loaded
    strictly, and gives our output on real photographs."""
    spandrel = _spandrel()
    model = random_span(seed=14, dtype=torch.float32, num_feat=16, num_block=6, norm=norm)
    path = tmp_path / f'span{suffix}'
    rtsr_arch.save_model(model, path)
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == 'SPAN' and descriptor.scale == 4
    assert descriptor.model.is_norm is norm
    x = photos(24, 32, torch.float32)
    with torch.no_grad():
        ours = model(x)
        fused = rtsr_arch.reparameterize(copy.deepcopy(model))(x)
    theirs = _spandrel_output(descriptor.model, x)
    d_train, d_fused = (theirs - ours).abs().max().item(), (theirs - fused).abs().max().item()
    print(f'spandrel (eval, re-fused in float32) vs ours {suffix} norm={norm}: training form {d_train:.2e}, '
          f'fused {d_fused:.2e}, output scale {ours.abs().max():.3g}')
    assert max(d_train, d_fused) <= 1e-5 * ours.abs().max()
    # the same through load_from_state_dict on the state dict itself
    again = spandrel.ModelLoader().load_from_state_dict(model.state_dict())
    assert torch.equal(_spandrel_output(again.model, x), theirs)


def test_spandrel_state_dict_loads_here(tmp_path):
    """A state dict of spandrel's SPAN (random weights; its stored eval_conv is whatever its
    constructor left, never used) saved as a bare .pth: auto-detected by rtsr_arch.load_model,
    output equal to spandrel's on real photographs, in both forms; norm=False via no_norm."""
    _spandrel()
    from spandrel.architectures.SPAN import SPAN as SpandrelSPAN

    x = photos(24, 32, torch.float32)
    for norm in (True, False):
        theirs = randomize(SpandrelSPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=3, norm=norm),
                           seed=15, std=0.5, fan_in=True)
        path = tmp_path / f'spandrel_{norm}.pth'
        torch.save(theirs.state_dict(), path)
        ref = _spandrel_output(theirs, x)
        ours = rtsr_arch.load_model(path)
        assert ours.network_opt['norm'] is norm and ours.upscale == 3 and ours.network_opt['num_feat'] == 16
        train = rtsr_arch.load_model(path, deploy=False)
        with torch.no_grad():
            d_fused, d_train = (ours(x) - ref).abs().max().item(), (train(x) - ref).abs().max().item()
        theirs.train()
        with torch.no_grad():
            d_train_mode = (theirs(x) - train(x)).abs().max().item()
        print(f'spandrel SPAN state dict (norm={norm}) -> load_model vs spandrel eval: fused {d_fused:.2e}, '
              f'training form {d_train:.2e}; vs spandrel train mode {d_train_mode:.2e}; scale {ref.abs().max():.3g}')
        assert max(d_fused, d_train, d_train_mode) <= 1e-5 * ref.abs().max()


def test_spandrel_loads_our_deploy_checkpoint_through_the_official_layout(tmp_path):
    """spandrel (like the official class) needs the training keys; a fused SPAN expanded with
    :func:`span_official_training_layout` loads there and gives the deploy output."""
    spandrel = _spandrel()
    fused = rtsr_arch.reparameterize(random_span(seed=16, dtype=torch.float32, num_feat=16, num_block=6))
    with pytest.raises(Exception):  # the deploy form alone is not a SPAN to spandrel
        spandrel.ModelLoader().load_from_state_dict(fused.state_dict())
    descriptor = spandrel.ModelLoader().load_from_state_dict(span_official_training_layout(fused.state_dict()))
    x = photos(24, 32, torch.float32)
    with torch.no_grad():
        ours = fused(x)
    diff = (_spandrel_output(descriptor.model, x) - ours).abs().max().item()
    print(f'spandrel on the expanded deploy checkpoint vs our deploy network: {diff:.2e}')
    assert diff <= 1e-6 * ours.abs().max()


def test_reference_matches_spandrels_copy_of_the_official_class():
    """The independent reference against spandrel's SPAN (a copy of hongyuanyu/SPAN's class, the
    in-place SiLU included), float64: training mode equal, eval mode (its own re-fusion) to
    rounding; the pre-activation reading of the concatenation does not match."""
    _spandrel()
    from spandrel.architectures.SPAN import SPAN as SpandrelSPAN

    theirs = randomize(SpandrelSPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4), seed=18, std=0.5,
                       fan_in=True).double()
    x = photos(12, 16, torch.float64)
    with torch.no_grad():
        y_train = theirs.train()(x)
        y_eval = theirs.eval()(x)
    sd = theirs.state_dict()
    d_train = (span_reference(sd, x) - y_train).abs().max().item()
    d_eval = (span_reference(sd, x, 'probed') - y_eval).abs().max().item()
    d_wrong = (span_reference(sd, x, pre_activation_cat=True) - y_train).abs().max().item()
    print(f'reference vs spandrel SPAN (float64): train mode {d_train:.2e}, eval mode {d_eval:.2e}; '
          f'pre-activation reading {d_wrong:.2e}')
    assert d_train <= 1e-12 * y_train.abs().max() and d_eval <= 1e-10 * y_train.abs().max()
    assert d_wrong > 1e-4 * y_train.abs().max()

def test_spandrel_refuses_other_depths():
    """spandrel's SPAN (like the official class) has exactly 6 blocks: a 2-SPAB (AIS 2024) state
    dict is detected as SPAN but refused by its strict load, never loaded partially."""
    spandrel = _spandrel()
    with pytest.raises(RuntimeError, match='block_3'):
        spandrel.ModelLoader().load_from_state_dict(SPAN(preset='ais24').state_dict())


def test_conv3xc_matches_spandrels_conv3xc():
    """The block alone against spandrel's copy of the official Conv3XC (training and eval mode)."""
    _spandrel()
    from spandrel.architectures.SPAN.__arch.span import Conv3XC as SpandrelConv3XC

    ours = randomize(Conv3XC(5, 7, gain=2), seed=17, std=0.5, fan_in=True).eval()
    theirs = SpandrelConv3XC(5, 7, gain1=2, s=1)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = photo('coffee', 9, 11).repeat(1, 2, 1, 1)[:, :5]
    with torch.no_grad():
        y = ours(x)
        assert (theirs.train()(x) - y).abs().max() <= 1e-6 * y.abs().max()
        assert (theirs.eval()(x) - y).abs().max() <= 1e-5 * y.abs().max()
    # spandrel's eval forward wrote its own re-fusion into eval_conv: ours (float64 merge) agrees
    assert (theirs.eval_conv.weight - ours.state_dict()['eval_conv.weight']).abs().max() <= 1e-6


# ======================================================================= recipes

def test_ais24_recipes_follow_the_report():
    """options/train/SPAN: XiaomiMM's two steps (AIS 2024 RTSR report §3.8): L1 + Grad for 500k
    iterations, then MSE + Grad for 250k from step 1, Adam 1e-4, on the AVIF QPs 31..63, the
    2-SPAB network; the *_KD variants add output distillation from a frozen teacher."""
    from helpers import ROOT
    from rtsr_arch.utils.options import load_options

    folder = ROOT / 'options/train/SPAN'
    for kd in ('', '_KD'):
        s1 = load_options(folder / f'train_SPAN_x4_AIS24_stage1_L1_grad{kd}.yml')
        s2 = load_options(folder / f'train_SPAN_x4_AIS24_stage2_MSE_grad{kd}.yml')
        assert s2['path']['pretrain_network_g'].startswith(f"experiments/{s1['name']}/models/")
        assert s1['network_g'] == s2['network_g'] and SPAN(**{k: v for k, v in s1['network_g'].items()
                                                               if k != 'type'}).network_opt['num_block'] == 2
        assert [[loss['type'] for loss in s['train']['losses']] for s in (s1, s2)] == [
            ['L1Loss', 'GradientMapLoss'], ['MSELoss', 'GradientMapLoss']]
        assert [s['train']['total_iter'] for s in (s1, s2)] == [500_000, 250_000]
        for s in (s1, s2):
            assert s['train']['optim_g']['type'] == 'Adam' and s['train']['optim_g']['lr'] == 1e-4
            assert sorted(s['datasets']['train']['dataroots_lq']) == [f'qp{q}' for q in (31, 39, 47, 55, 63)]
            assert s['model_type'] == ('KDModel' if kd else 'RTSRModel') and s['val']['deploy'] is True
        if kd:
            assert [s['train']['kd']['output']['criterion'] for s in (s1, s2)] == ['l1', 'l2']
