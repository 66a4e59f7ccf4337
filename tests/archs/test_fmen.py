"""FMEN specifics (Du et al., "Fast and Memory-Efficient Network Towards Efficient Image
Super-Resolution", CVPRW 2022; official code NJU-Jet/FMEN@a1def16 ``train_fmen.py``,
``test_fmen.py``, ``reparameterize.py``, Apache-2.0): the official state-dict layouts (training
and deploy), an independent functional reference written on the official keys (both forms), the
released ``test_weights.pt`` loaded through ``rtsr_arch.load_model`` against it on real
photographs, the [0, 255] computing range, the HFAB training form with BatchNorm (BN-value padding,
the official train-mode quirk, exact fusion on border pixels), the ``up_blocks`` keyword, the
importer and the counts. Fusion, keyword errors and the generic checks are in test_contract.py.
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import bicubic, check_official_weights, load_official, lr_photos, module_names, n_params, \
    official_fixture, output_peaks, photo, psnr, randomize
from reference import conv, count_blocks, erb, hfab, upsample
from rtsr_arch.archs.fmen_arch import FMEN, import_official_fmen
from rtsr_arch.archs.rep import HFAB
from rtsr_arch.archs.official import find_importers
from rtsr_arch.utils.efficiency import EfficiencyCounts, count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')


# ======================================================================= independent reference
# NJU-Jet/FMEN TEST_FMEN (deploy keys) and TRAIN_FMEN (training keys), torch.nn.functional only:
# the ERB (RRRB -> LeakyReLU(0.1) -> RRRB) and the HFAB (BatchNorm-value padding in training form)
# of reference.py.

@torch.no_grad()
def fmen_reference(sd, x, rgb_range=255.0, batch_stats=False):
    """Official FMEN forward on RGB ``x`` in [0, 1]: the EDSR framework feeds [0, rgb_range] (255)
    and the output is read back in that range; the scale is ``tail.0``'s pixel-shuffle factor.
    ``batch_stats``: the BatchNorms in train mode (batch statistics)."""
    channels = x.shape[1]
    x = conv(x * rgb_range, sd, 'head', padding=1)
    h = hfab(conv(x, sd, 'warmup.0', padding=1), sd, 'warmup.1', batch_stats)
    for i in range(count_blocks(sd, 'ERBs.')):
        h = hfab(erb(h, sd, f'ERBs.{i}'), sd, f'HFABs.{i}', batch_stats)
    h = conv(h, sd, 'lr_conv', padding=1) + x
    return upsample(h, sd, 'tail.0', channels) / rgb_range


# ======================================================================= layouts

def test_fmen_deploy_layout_is_test_fmen():
    """test_fmen.py TEST_FMEN(n_feats 50, mid_feats 16, down_blocks 4, up_blocks [2,1,1,1,1], x4):
    68 tensors, 341,066 parameters, warm-up HFAB 50 -> 12, main HFABs 50 -> 16."""
    erb = ('conv1.rep_conv', 'conv2.rep_conv')
    expected = {'head', 'warmup.0', 'warmup.1.squeeze', 'warmup.1.excitate', 'lr_conv', 'tail.0'}
    expected |= {f'warmup.1.convs.{j}.{c}' for j in range(2) for c in erb}
    expected |= {f'ERBs.{i}.{c}' for i in range(4) for c in erb}
    expected |= {f'HFABs.{i}.{m}' for i in range(4) for m in ('squeeze', 'excitate', *(f'convs.0.{c}' for c in erb))}
    deploy = FMEN(deploy=True)
    assert module_names(deploy) == expected and len(deploy.state_dict()) == 68 and n_params(deploy) == 341_066
    assert module_names(rtsr_arch.reparameterize(FMEN())) == expected
    sd = deploy.state_dict()
    assert sd['warmup.1.squeeze.weight'].shape == (12, 50, 3, 3)
    assert sd['HFABs.0.squeeze.weight'].shape == (16, 50, 3, 3)
    assert sd['tail.0.weight'].shape == (48, 50, 3, 3) and sd['head.weight'].shape == (50, 3, 3, 3)


def test_fmen_training_layout_is_train_fmen():
    """train_fmen.py TRAIN_FMEN: RRRBs (expand_conv, fea_conv, reduce_conv; ratio 2) and the HFABs'
    bn1, bn2, bn3 (with running statistics and num_batches_tracked)."""
    rrrb = ('expand_conv', 'fea_conv', 'reduce_conv')
    erb = tuple(f'conv{i}.{c}' for i in (1, 2) for c in rrrb)
    bns = ('bn1', 'bn2', 'bn3')
    expected = {'head', 'warmup.0', 'lr_conv', 'tail.0'}
    expected |= {f'warmup.1.{m}' for m in ('squeeze', 'excitate', *bns)}
    expected |= {f'warmup.1.convs.{j}.{c}' for j in range(2) for c in erb}
    expected |= {f'ERBs.{i}.{c}' for i in range(4) for c in erb}
    expected |= {f'HFABs.{i}.{m}' for i in range(4)
                 for m in ('squeeze', 'excitate', *bns, *(f'convs.0.{c}' for c in erb))}
    model = FMEN()
    assert module_names(model) == expected and n_params(model) == 1_045_866
    sd = model.state_dict()
    assert sd['ERBs.0.conv1.expand_conv.weight'].shape == (100, 50, 1, 1)
    assert sd['HFABs.0.convs.0.conv1.fea_conv.weight'].shape == (32, 32, 3, 3)
    assert sd['HFABs.0.squeeze.weight'].shape == (16, 50, 3, 3) and sd['HFABs.0.bn1.weight'].shape == (50,)
    assert sd['HFABs.0.bn2.running_var'].shape == (16,) and 'HFABs.0.bn3.num_batches_tracked' in sd
    assert not any('bn' in k for k in FMEN(attention_bn=False).state_dict())


# ======================================================================= the released weights

def test_fmen_official_weights_match_the_reference():
    """``test_weights.pt`` through load_model (auto-detected, no architecture given) reproduces the
    independent reference on photographs to float32 rounding (float64: ~1e-13), and beats bicubic."""
    check_official_weights(official_fixture('fmen_test_weights.pt'), fmen_reference,
                           load_official('fmen_test_weights.pt'), FMEN, 341_066,
                           {'type': 'FMEN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 50, 'num_block': 4,
                            'mid_feat': 16, 'up_blocks': '2+1+1+1+1', 'upscale': 4, 'backbone_ratio': 2,
                            'attention_ratio': 2, 'attention_bn': True, 'deploy': True})


def test_fmen_computes_in_0_255():
    """The official networks are trained in the EDSR framework with rgb_range = 255 and no mean
    shift: the released weights super-resolve [0, 255] inputs; fed [0, 1] they are worse than bicubic.
    FMEN converts inside (value_range), so its inputs and outputs are [0, 1]."""
    official = load_official('fmen_test_weights.pt', torch.float64)
    hr, lr = lr_photos(dtype=torch.float64)
    reference = psnr(bicubic(lr), hr)
    right = psnr(fmen_reference(official, lr, rgb_range=255.0), hr)
    wrong = psnr(fmen_reference(official, lr, rgb_range=1.0), hr)
    print(f'FMEN PSNR: [0, 255] {right:.2f} dB, [0, 1] {wrong:.2f} dB, bicubic {reference:.2f} dB')
    assert right > reference + 1.0 > wrong + 1.0
    assert FMEN.value_range == (0.0, 255.0)


def test_fmen_is_declared_float16_unsafe():
    """In [0, 255] the released weights' attention path (warm-up HFAB ERBs, before the sigmoid
    saturates) reaches ~2e7 on photographs: float16 (max 65504) overflows, hence fp16_safe = False.
    bfloat16 keeps float32's range and stays finite, at bfloat16 accuracy."""
    path = official_fixture('fmen_test_weights.pt')
    lr = lr_photos()[1]
    model = rtsr_arch.load_model(path)
    with torch.no_grad():
        with output_peaks([m for m in model.modules() if isinstance(m, nn.Conv2d)]) as peak:
            y32 = model(lr)
        y16 = rtsr_arch.load_model(path, dtype=torch.float16)(lr.half()).float()
        ybf = rtsr_arch.load_model(path, dtype=torch.bfloat16)(lr.bfloat16()).float()
    print(f'FMEN: peak |conv output| {max(peak):.3g}; bfloat16 max |diff| {(ybf - y32).abs().max():.3g}')
    assert max(peak) > 65504 and not torch.isfinite(y16).all()
    assert torch.isfinite(ybf).all() and (ybf - y32).abs().max() <= 0.1
    assert FMEN.fp16_safe is False


# ======================================================================= training form

def _random_fmen(seed=0, **kwargs):
    """Random training form: every weight, BN affine and running statistic drawn (fan-in scaled,
    std 0.5: the [0, 255] range makes random networks' sigmoid inputs large, and std 1 amplifies
    rounding needlessly)."""
    return randomize(FMEN(**kwargs), seed=seed, std=0.5, fan_in=True).double()


@pytest.mark.parametrize('kwargs', [{}, dict(num_feat=8, num_block=2, mid_feat=6, up_blocks='1+2+1', upscale=3),
                                    dict(num_feat=8, num_block=1, mid_feat=6, up_blocks='2+1', attention_bn=False,
                                         upscale=2, backbone_ratio=3)])
def test_fmen_training_form_matches_train_fmen(kwargs):
    """Eval mode: the reference of TRAIN_FMEN on the same keys; train mode too (BatchNorm with batch
    statistics, while the padding stays the running-statistics value, as the official
    ``get_bn_bias`` pads)."""
    model = _random_fmen(seed=1, **kwargs).eval()
    x = photo('chelsea', 11, 13, dtype=torch.float64, batch=2)
    sd = model.state_dict()
    with torch.no_grad():
        y = model(x)
    ref = fmen_reference(sd, x)
    assert (y - ref).abs().max() <= 1e-12 * max(1.0, y.abs().max().item())
    model.train()
    with torch.no_grad():
        y_train = model(x)
    ref_train = fmen_reference(sd, x, batch_stats=True)
    assert (y_train - ref_train).abs().max() <= 1e-12 * max(1.0, y_train.abs().max().item())
    if model.network_opt['attention_bn']:
        assert (y_train - y).abs().max() > 1e-6  # batch statistics do differ from the running ones


def test_fmen_reparameterization_equals_the_official_merge_formula():
    """The fused weights equal reparameterize.py's merge written out: RRRB (K1 + I, W2 K1' W0, the
    bias through a 3x3 map of b0, + I) and merge_bn (bn1 before squeeze; bn2 before and bn3 after
    excitate)."""
    model = _random_fmen(seed=2, num_feat=6, num_block=1, mid_feat=6, up_blocks='1+1').eval()
    sd = model.state_dict()
    fused = rtsr_arch.reparameterize(copy.deepcopy(model)).state_dict()

    def rrrb(p):
        k0, k1, k2 = (sd[f'{p}.{c}.weight'] for c in ('expand_conv', 'fea_conv', 'reduce_conv'))
        b0, b1, b2 = (sd[f'{p}.{c}.bias'] for c in ('expand_conv', 'fea_conv', 'reduce_conv'))
        k1 = k1.clone()
        k1[range(k1.shape[0]), range(k1.shape[0]), 1, 1] += 1.0
        w = F.conv2d(k1, k0.permute(1, 0, 2, 3))
        b = F.conv2d(b0.view(1, -1, 1, 1) * torch.ones(1, k0.shape[0], 3, 3, dtype=k0.dtype), k1, b1)
        w = F.conv2d(w.permute(1, 0, 2, 3), k2).permute(1, 0, 2, 3)
        b = F.conv2d(b, k2, b2).view(-1)
        w[range(w.shape[0]), range(w.shape[0]), 1, 1] += 1.0
        return w, b

    def merge_bn(w, b, p, before):
        std = torch.sqrt(sd[f'{p}.running_var'] + 1e-5)
        scale = sd[f'{p}.weight'] / std
        bias = sd[f'{p}.bias'] - sd[f'{p}.running_mean'] * scale
        if before:
            return w * scale.view(1, -1, 1, 1), w.sum((2, 3)) @ bias + b
        return w * scale.view(-1, 1, 1, 1), b * scale + bias

    for p in ('ERBs.0.conv1', 'HFABs.0.convs.0.conv2', 'warmup.1.convs.0.conv1'):
        w, b = rrrb(p)
        assert (fused[f'{p}.rep_conv.weight'] - w).abs().max() <= 1e-12
        assert (fused[f'{p}.rep_conv.bias'] - b).abs().max() <= 1e-12
    for h in ('warmup.1', 'HFABs.0'):
        w, b = merge_bn(sd[f'{h}.squeeze.weight'], sd[f'{h}.squeeze.bias'], f'{h}.bn1', True)
        assert (fused[f'{h}.squeeze.weight'] - w).abs().max() <= 1e-12
        assert (fused[f'{h}.squeeze.bias'] - b).abs().max() <= 1e-12
        w, b = merge_bn(sd[f'{h}.excitate.weight'], sd[f'{h}.excitate.bias'], f'{h}.bn2', True)
        w, b = merge_bn(w, b, f'{h}.bn3', False)
        assert (fused[f'{h}.excitate.weight'] - w).abs().max() <= 1e-12
        assert (fused[f'{h}.excitate.bias'] - b).abs().max() <= 1e-12


# ======================================================================= HFAB with BatchNorm: borders

@pytest.mark.parametrize('num_blocks', [0, 1, 2])
def test_hfab_with_bn_fuses_exactly_on_border_pixels(num_blocks):
    """HFAB's training form (BN before squeeze and excitate, BN-value padding) equals its fused form
    on every pixel in float64, including inputs where every pixel is a border pixel (1x1, 2x2,
    1xN); the deploy build has the official keys and loads the fused weights strictly."""
    block = randomize(HFAB(6, 5, num_blocks), seed=3 + num_blocks, std=1.0, fan_in=True).double().eval()
    fused = rtsr_arch.reparameterize(copy.deepcopy(block))
    assert fused.deploy and not fused.use_bn and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    built = HFAB(6, 5, num_blocks, deploy=True).double()
    assert list(built.state_dict()) == list(fused.state_dict())
    built.load_state_dict(fused.state_dict(), strict=True)
    assert {k.rsplit('.', 1)[0] for k in built.state_dict()} == {'squeeze', 'excitate'} | {
        f'convs.{j}.conv{i}.rep_conv' for j in range(num_blocks) for i in (1, 2)}
    assert built.squeeze.padding == built.excitate.padding == (1, 1)
    for h, w in [(1, 1), (2, 2), (1, 7), (6, 1), (2, 3), (9, 8)]:
        x = torch.randn(2, 6, h, w, generator=torch.Generator().manual_seed(h * 10 + w), dtype=torch.float64)
        with torch.no_grad():
            y = block(x)
            assert (fused(x) - y).abs().max() <= 1e-12, (h, w)
            assert torch.equal(built(x), fused(x))
    assert block.receptive_radius == fused.receptive_radius == 2 + 2 * num_blocks


class ZeroPaddedHFAB(HFAB):
    """The naive training form: BatchNorm output zero-padded instead of BN-value padded."""

    def _bn_padded(self, bn, t):
        return F.pad(bn(t), (1, 1, 1, 1))


def test_negative_control_zero_padding_after_bn_breaks_the_border_only():
    block = randomize(HFAB(6, 5, 1), seed=7, std=1.0, fan_in=True).double().eval()
    naive = ZeroPaddedHFAB(6, 5, 1).double().eval()
    naive.load_state_dict(block.state_dict())
    fused = rtsr_arch.reparameterize(copy.deepcopy(block))
    x = torch.randn(1, 6, 12, 13, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        diff = (naive(x) - fused(x)).abs()
    r = block.receptive_radius  # pixels farther than this from the border never see the padding
    assert diff[..., r:-r, r:-r].max() <= 1e-12
    assert diff.max() > 1e-3


def test_hfab_refuses_bad_arguments_in_one_line():
    for kwargs, arg in [(dict(channels=0, mid_channels=4), 'channels'), (dict(channels=4, mid_channels=True), 'mid'),
                        (dict(channels=4, mid_channels=4, num_blocks=-1), 'num_blocks'),
                        (dict(channels=4, mid_channels=4, use_bn='yes'), 'use_bn'),
                        (dict(channels=4, mid_channels=4, slope='x'), 'slope')]:
        with pytest.raises(ValueError) as info:
            HFAB(**kwargs)
        assert '\n' not in str(info.value) and arg in str(info.value) and str(info.value).startswith('HFAB:')


# ======================================================================= keywords, importer, counts

@pytest.mark.parametrize('value, words', [('2+1+1+1', 'expected 5 entries'), ('2+1+x+1+1', "ints >= 1 joined by '+'"),
                                          ('2+0+1+1+1', "ints >= 1"), ('', "ints >= 1")])
def test_fmen_up_blocks_errors_are_one_line(value, words):
    with pytest.raises(ValueError) as info:
        FMEN(up_blocks=value)
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'FMEN: up_blocks={value!r}') and words in message


def test_fmen_up_blocks_and_widths_are_honoured():
    model = FMEN(num_block=2, mid_feat=10, up_blocks='3+1+2', deploy=True)
    assert [len(h.convs) for h in (model.warmup[1], *model.HFABs)] == [3, 1, 2]
    assert model.warmup[1].squeeze.out_channels == 6 and model.HFABs[1].squeeze.out_channels == 10
    assert model.receptive_radius == 4 + (2 + 6) + (2 + 4) + (2 + 6)


def test_fmen_importer_reads_training_checkpoints():
    """A TRAIN_FMEN state dict (e.g. saved by the official EDSR-framework training) is detected and
    its ratios and BatchNorms are inferred; a deploy one says what it assumes."""
    model = FMEN(num_feat=8, num_block=2, mid_feat=7, up_blocks='1+2+1', backbone_ratio=3, attention_ratio=1)
    assert [imp.arch for imp, _ in find_importers({'params': model.state_dict()})] == ['FMEN']
    opt = import_official_fmen(model.state_dict(), {}).network_opt
    assert {k: opt[k] for k in ('backbone_ratio', 'attention_ratio', 'attention_bn', 'deploy', 'up_blocks')} == {
        'backbone_ratio': 3, 'attention_ratio': 1, 'attention_bn': True, 'deploy': False, 'up_blocks': '1+2+1'}
    assert import_official_fmen(FMEN(attention_bn=False).state_dict(), {}).network_opt['attention_bn'] is False
    result = import_official_fmen(FMEN(deploy=True).state_dict(), {})
    assert set(result.assumed) == {'backbone_ratio', 'attention_ratio', 'attention_bn'} and result.notes


def test_fmen_counts_with_the_ntire_esr_conventions():
    """The NTIRE ESR counter (hooks on registered modules) on the deploy network at 3x256x256: the
    0.1-slope LeakyReLUs are functional, as the official module-level ``act``, and not counted
    (as for the official network); conv MACs, 34 conv calls, conv outputs. Measured here: the
    NTIRE 2022 ESR report's figures were not available to check against."""
    counts = count_ntire_esr(FMEN(deploy=True))
    assert counts == EfficiencyCounts(params=341_066, flops=22_280_011_776, activations=72_089_600, num_conv=34)
    assert not any(isinstance(m, nn.LeakyReLU) for m in FMEN().modules())
