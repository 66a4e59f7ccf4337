"""LMRLFN specifics (team SeaOuter, NTIRE 2023 Challenge on Efficient Super-Resolution, report
§4.10, Figs. 16-17, Table 1; official code HeaseoChung/LMRLFN@ddb2081 ``models/team33_LMRLFN.py``,
MIT): the official state-dict layout, an independent functional reference written on the
official keys, ``team33_LMRLFN.pt`` loaded through ``rtsr_arch.load_model`` against it on real
photographs, the [0, 1] range, the training form (FMEN's HFAB with BatchNorm and RRRB-based ERBs,
Fig. 17), the official NTIRE 2023 ESR counts and the module-level LeakyReLU quirk behind them, the
importer. Fusion, keyword errors and the generic checks are in test_contract.py.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

import rtsr_arch
from helpers import OFFICIAL_FIXTURES, bicubic, check_official_weights, load_official, lr_photos, module_names, \
    n_params, official_fixture, output_peaks, photo, psnr, randomize
from reference import conv, count_blocks, hfab, rlfb, upsample
from rtsr_arch.archs.lmrlfn_arch import LMRLFN, import_official_lmrlfn
from rtsr_arch.archs.official import find_importers
from rtsr_arch.utils.efficiency import EfficiencyCounts, count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')


# ======================================================================= independent reference
# team33_LMRLFN.py (deploy keys) and the training form of Fig. 17 (FMEN's train_fmen.py HFAB and
# RRRB), torch.nn.functional only: RLFN's block (reference.rlfb) with FMEN's HFAB (reference.hfab)
# in place of the ESA.

@torch.no_grad()
def lmrlfn_reference(sd, x, data_range=1.0):
    """Official LMRLFN forward on ``x`` in [0, 1] (``test_demo.py``: data_range 1.0): head ->
    warmup (conv, HFAB) -> LMRLFBs (three 3x3 convs + lrelu(0.05), + input, 1x1 c5, HFAB) ->
    lr_conv + head -> tail conv + PixelShuffle."""
    channels = x.shape[1]
    x = conv(x * data_range, sd, 'head', padding=1)
    h = hfab(conv(x, sd, 'warmup.0', padding=1), sd, 'warmup.1')
    for i in range(1, 1 + count_blocks(sd, 'block_')):
        h = rlfb(h, sd, f'block_{i}', slope=0.05, attention=lambda t, p=f'block_{i}.hfab': hfab(t, sd, p))
    return upsample(conv(h, sd, 'lr_conv', padding=1) + x, sd, 'tail.0', channels) / data_range


# ======================================================================= layouts

def _hfab_layout(prefix, blocks, train):
    conv = ('expand_conv', 'fea_conv', 'reduce_conv') if train else ('rep_conv',)
    keys = {f'{prefix}.squeeze', f'{prefix}.excitate'} | {
        f'{prefix}.convs.{j}.conv{i}.{c}' for j in range(blocks) for i in (1, 2) for c in conv}
    return keys | ({f'{prefix}.bn{i}' for i in (1, 2, 3)} if train else set())


@pytest.mark.parametrize('train', [False, True])
def test_lmrlfn_layout_is_official(train):
    """Deploy: team33_LMRLFN.py (88 tensors, 285,016 parameters; HFAB widths 12 / 16, ERB counts
    2 (warm-up), 2, 1, 1, 1). Training: the same with FMEN's HFAB training form (Fig. 17)."""
    expected = {'head', 'warmup.0', 'lr_conv', 'tail.0'} | _hfab_layout('warmup.1', 2, train)
    for i, blocks in zip(range(1, 5), (2, 1, 1, 1)):
        expected |= {f'block_{i}.{c}' for c in ('c1_r', 'c2_r', 'c3_r', 'c5')} | _hfab_layout(f'block_{i}.hfab', blocks,
                                                                                              train)
    model = LMRLFN(deploy=not train)
    assert module_names(model) == expected
    if train:
        assert n_params(model) == 383_936
        assert module_names(rtsr_arch.reparameterize(model)) == module_names(LMRLFN(deploy=True))
    else:
        assert len(model.state_dict()) == 88 and n_params(model) == 285_016
    sd = model.state_dict()
    assert sd['head.weight'].shape == (36, 3, 3, 3) and sd['block_1.c1_r.weight'].shape == (40, 36, 3, 3)
    assert sd['block_1.c5.weight'].shape == (36, 36, 1, 1) and sd['tail.0.weight'].shape == (48, 36, 3, 3)
    assert sd['warmup.1.squeeze.weight'].shape == (12, 36, 3, 3)
    assert sd['block_4.hfab.excitate.weight'].shape == (36, 16, 3, 3)


# ======================================================================= the released weights

def test_lmrlfn_official_weights_match_the_reference():
    """``team33_LMRLFN.pt`` through load_model (auto-detected) reproduces the independent reference
    on photographs to float32 rounding (float64: ~1e-13) and beats bicubic; in [0, 255] it would not."""
    official = load_official('lmrlfn.pt')
    check_official_weights(official_fixture('lmrlfn.pt'), lmrlfn_reference, official, LMRLFN, 285_016,
                           {'type': 'LMRLFN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 36, 'num_block': 4,
                            'mid_feat': 40, 'hfab_feat': 16, 'up_blocks': '2+2+1+1+1', 'upscale': 4,
                            'attention_ratio': 2, 'attention_bn': True, 'deploy': True})
    hr, lr = lr_photos(dtype=torch.float64)
    reference = psnr(bicubic(lr), hr)
    wrong = psnr(lmrlfn_reference({k: v.double() for k, v in official.items()}, lr, data_range=255.0), hr)
    print(f'LMRLFN team33_LMRLFN.pt: bicubic {reference:.2f} dB, in [0, 255] {wrong:.2f} dB')
    assert reference > wrong
    assert LMRLFN.value_range == (0.0, 1.0)


def test_lmrlfn_official_checkpoints_are_told_apart_from_rlfn():
    """LMRLFN (``block_{i}.hfab``) and RLFN (``block_{i}.esa``, conv_1/conv_2/upsampler) share
    the ``block_{i}.c{1,2,3}_r/c5`` trunk; each official file is claimed by its own importer only."""
    assert [imp.arch for imp, _ in find_importers(load_official('lmrlfn.pt'))] == ['LMRLFN']
    if (OFFICIAL_FIXTURES / 'rlfn_ntire_x4.pth').is_file():
        assert 'LMRLFN' not in [imp.arch for imp, _ in find_importers(load_official('rlfn_ntire_x4.pth'))]


def test_lmrlfn_is_declared_float16_unsafe():
    """The released weights' attention path peaks at ~3e4 on photographs (float16 works there) but
    passes float16's 65504 on high-contrast inputs (1-pixel stripes): NaN, hence fp16_safe = False.
    bfloat16 keeps float32's range."""
    path = official_fixture('lmrlfn.pt')
    model, half = rtsr_arch.load_model(path), rtsr_arch.load_model(path, dtype=torch.float16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    lr = lr_photos()[1]
    stripes = torch.zeros(1, 3, 32, 32)
    stripes[..., ::2, :] = 1
    with torch.no_grad():
        with output_peaks(convs) as peak:
            y = model(lr)
        y16 = half(lr.half()).float()
        with output_peaks(convs) as stripe_peak:
            s32 = model(stripes)
        s16 = half(stripes.half()).float()
        sbf = rtsr_arch.load_model(path, dtype=torch.bfloat16)(stripes.bfloat16()).float()
    print(f'LMRLFN: peak |conv output| {max(peak):.3g} on photographs, {max(stripe_peak):.3g} on 1-pixel stripes')
    assert torch.isfinite(y16).all() and (y16 - y).abs().max() <= 2e-2 and max(peak) < 65504
    assert max(stripe_peak) > 65504 and not torch.isfinite(s16).all()
    assert torch.isfinite(sbf).all() and torch.isfinite(s32).all()
    assert LMRLFN.fp16_safe is False


# ======================================================================= counts and the quirk

class LeakyReLUCalls(TorchFunctionMode):
    """Output numel of every functional ``leaky_relu`` call, by slope."""

    def __init__(self):
        super().__init__()
        self.numel = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (F.leaky_relu, torch._C._nn.leaky_relu, torch._C._nn.leaky_relu_):
            slope = kwargs.get('negative_slope', args[1] if len(args) > 1 else 0.01)
            self.numel[slope] = self.numel.get(slope, 0) + out.numel()
        return out


def test_lmrlfn_counts_equal_the_official_table():
    """NTIRE 2023 ESR Table 1, SeaOuter: 0.285 M parameters, 18.63 G FLOPs, 80.48 M activations,
    44 convs (ofsoundof/NTIRE2023_ESR counter conventions at 3x256x256)."""
    counts = count_ntire_esr(LMRLFN(deploy=True))
    assert counts == EfficiencyCounts(params=285_016, flops=18_628_739_072, activations=80_478_208, num_conv=44)
    assert (round(counts.flops / 1e9, 2), round(counts.activations / 1e6, 2)) == (18.63, 80.48)


def test_lmrlfn_module_level_leaky_relu_is_not_counted_but_computed():
    """The quirk behind the official 18.63 G: team33_LMRLFN.py applies its HFAB / BasicBlock
    LeakyReLU(0.1) through a module-level global (``act``), not a registered submodule, so the
    hook-based counter misses it, while the LMRLFBs' registered LeakyReLU(0.05) (``self.act``,
    3 calls per block) is counted. Here the 0.1 activation is applied functionally: the same
    computation (the forward equals the reference above), equally invisible to the counter.
    FLOPs = conv MACs + the 0.05 LeakyReLU outputs exactly; counting the 0.1 ones too would add
    16,777,216 (18.65 G)."""
    model = LMRLFN(deploy=True)
    assert [type(m) for m in model.modules() if isinstance(m, nn.LeakyReLU)] == [nn.LeakyReLU] * 4
    assert all(b.act.negative_slope == 0.05 for b in model.blocks())
    calls = LeakyReLUCalls()
    with torch.no_grad(), calls:
        model(torch.zeros(1, 3, 256, 256))
    hw = 256 * 256
    hfab_numel = hw * (12 * (2 + 2) + 16 * (2 + 2) + 3 * 16 * (2 + 1))  # squeeze + ERBs + after the ERBs
    lrelu05_numel = hw * 4 * (40 + 40 + 36)  # c1_r, c2_r, c3_r outputs of the 4 blocks
    assert calls.numel == {0.1: hfab_numel, 0.05: lrelu05_numel}
    assert hfab_numel == 16_777_216
    conv_macs = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            conv_macs += m.in_channels * m.out_channels * math.prod(m.kernel_size) * hw
    counts = count_ntire_esr(model)
    assert counts.flops == conv_macs + lrelu05_numel
    print(f'LMRLFN: counted {counts.flops / 1e9:.2f} G (official 18.63 G); with the module-level LeakyReLU(0.1) '
          f'counted it would be {(counts.flops + hfab_numel) / 1e9:.2f} G')


# ======================================================================= training form, importer

@pytest.mark.parametrize('kwargs', [{}, dict(num_feat=8, num_block=2, mid_feat=6, hfab_feat=6, up_blocks='1+2+1'),
                                    dict(num_feat=8, num_block=1, mid_feat=5, hfab_feat=7, up_blocks='2+1',
                                         attention_bn=False, attention_ratio=3, upscale=2)])
def test_lmrlfn_training_form_matches_fig17(kwargs):
    """The training form (HFAB: BN -> squeeze -> LReLU -> ERBs -> BN -> excitate -> BN -> sigmoid,
    ERB = RRRB -> LReLU -> RRRB, BN-value and bias padding) equals the reference written on its keys,
    and its reparameterization the reference on the fused keys (eval-mode BatchNorm)."""
    model = randomize(LMRLFN(**kwargs), seed=11, std=0.5, fan_in=True).double().eval()
    x = photo('coffee', 9, 14, dtype=torch.float64, batch=2)
    with torch.no_grad():
        y = model(x)
        fused = rtsr_arch.reparameterize(model)
        y_fused = fused(x)
    ref = lmrlfn_reference(model.state_dict(), x)
    assert (y_fused - ref).abs().max() <= 1e-12 * max(1.0, y.abs().max().item())
    assert (y - y_fused).abs().max() <= 1e-10


def test_lmrlfn_importer_reads_training_checkpoints_and_assumes_the_rest():
    model = LMRLFN(num_feat=8, num_block=3, mid_feat=5, hfab_feat=6, up_blocks='1+2+1+3', attention_ratio=3)
    assert [imp.arch for imp, _ in find_importers({'params_ema': model.state_dict()})] == ['LMRLFN']
    opt = import_official_lmrlfn(model.state_dict(), {}).network_opt
    assert {k: opt[k] for k in ('num_block', 'mid_feat', 'hfab_feat', 'up_blocks', 'attention_ratio', 'attention_bn',
                                'deploy')} == dict(num_block=3, mid_feat=5, hfab_feat=6, up_blocks='1+2+1+3',
                                                   attention_ratio=3, attention_bn=True, deploy=False)
    result = import_official_lmrlfn(LMRLFN(deploy=True).state_dict(), {})
    assert set(result.assumed) == {'attention_ratio', 'attention_bn'} and result.notes


@pytest.mark.parametrize('value, words', [('2+1+1+1', 'expected 5 entries'), ('2,1,1,1,1', "joined by '+'")])
def test_lmrlfn_up_blocks_errors_are_one_line(value, words):
    with pytest.raises(ValueError) as info:
        LMRLFN(up_blocks=value)
    assert '\n' not in str(info.value) and str(info.value).startswith(f'LMRLFN: up_blocks={value!r}')
    assert words in str(info.value)


def test_lmrlfn_receptive_radius_and_widths():
    """head, warm-up conv, lr_conv, tail: 1 each; warm-up HFAB 2 + 2*2; an LMRLFB 3 + its HFAB."""
    model = LMRLFN()
    assert model.receptive_radius == 4 + 6 + (3 + 6) + 3 * (3 + 4) == 40
    assert [len(b.hfab.convs) for b in model.blocks()] == [2, 1, 1, 1] and len(model.warmup[1].convs) == 2
    assert model.warmup[1].squeeze.out_channels == 12
