"""DLFAN specifics (team Sissie_Lab, NTIRE 2023 ESR report §4.18; official code
N1koLiu/NTIRE2023_ESR@66069f0 ``models/team17_DLFAN.py``, MIT): the official state-dict layouts
(deploy ``dbb_reparam``; training LEDBB branches with BatchNorm statistics), an independent functional
reference written on the official keys for both forms, each released file loaded through
``rtsr_arch.load_model`` against the reference of its own form on real photographs
(``team17_dlfan.pth``: deploy; ``team17_beforerep_dlfan.pth``: training form, and fused by us), the
measured disagreement between our exact fusion of the training file and the published deploy file
(the authors fused with TF32 convolutions: a TF32-emulated fusion reproduces the published kernels
~100x more closely), the archway connections, the training-mode BN-value padding, the ESCA
variant, the counts of both forms, the importer and the recipes. Fusion, keyword errors and the
generic checks are in test_contract.py; the NTIRE 2023 ESR deploy counts in test_ntire23_counts.py.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import check_half_precision, check_official_weights, check_recipe_network, check_reference_and_fusion, \
    conv_shapes, esa_light_shapes, load_official, load_recipe, lr_photos, n_params, official_fixture, photo, \
    randomize, reference_errors, state_layout
from reference import batch_norm, bn_pad_value, conv, count_blocks, esa_light_gate, pad_with, tf32_round, upsample
from rtsr_arch.archs.dlfan_arch import DALFB, DLFAN, archway_sources, import_official_dlfan
from rtsr_arch.archs.official import OfficialImportError, find_importers
from rtsr_arch.archs.rep import LEDBB
from rtsr_arch.loader import read_checkpoint
from rtsr_arch.utils.efficiency import count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')

SLOPE = 0.02  # the official DALFB's ``activation('lrelu', neg_slope=0.02)``
EPS = 1e-5  # BatchNorm eps of every official LEDBB branch
LEDBBS = [f'block_{i}.c{c}_r' for i in range(1, 6) for c in (1, 2, 3)]


def official(name, dtype=torch.float32):
    """An official file (saved from CUDA tensors: cuda:1 / cuda:0) as a CPU state dict."""
    return load_official(name, dtype)


# ======================================================================= independent reference
# team17_DLFAN.py, written on the official keys with torch.nn.functional only; the attention is
# RLFN's light ESA (official ``ESA(16, C, nn.Conv2d)``; reference.esa_light_gate).

def _ledbb(t, sd, name, training=False):
    """Deploy: ``dbb_reparam`` (3x3, padding 1). Training form (official ``forward``):
    dbb_origin (3x3 + BN) + dbb_1x1 (1x1 + BN) + dbb_1x1_kxk_1 (identity-based 1x1 -> BN -> one
    pixel of the BN's zero-input value around it -> 3x3 valid -> BN). ``training``: train-mode
    BatchNorms (batch statistics, the running ones of ``sd`` updated in place)."""
    if f'{name}.dbb_reparam.weight' in sd:
        return conv(t, sd, f'{name}.dbb_reparam', padding=1)
    y = batch_norm(F.conv2d(t, sd[f'{name}.dbb_origin.conv.weight'], padding=1), sd, f'{name}.dbb_origin.bn',
                   training, eps=EPS)
    y = y + batch_norm(F.conv2d(t, sd[f'{name}.dbb_1x1.conv.weight']), sd, f'{name}.dbb_1x1.bn', training, eps=EPS)
    q = f'{name}.dbb_1x1_kxk_1'
    w = sd[f'{q}.idconv1.weight']
    c = w.shape[0]
    u = batch_norm(F.conv2d(t, w + torch.eye(c, dtype=w.dtype).view(c, c, 1, 1)), sd, f'{q}.bn1.bn', training, eps=EPS)
    # official ``BNAndPadLayer``: the pad value from the running statistics (just updated) and the
    # detached affine parameters
    u = pad_with(u, bn_pad_value(sd, f'{q}.bn1.bn', EPS, detach=True))
    return y + batch_norm(F.conv2d(u, sd[f'{q}.conv2.weight']), sd, f'{q}.bn2', training, eps=EPS)


def _esa(x, sd, name):
    """RLFN's light ESA; with ``se`` keys the official ``ESCA``: x * (m + z),
    z = sigmoid(fc2(relu(fc1(mean_hw(x)))))."""
    m = esa_light_gate(x, sd, name)
    if f'{name}.se.excitation.0.weight' not in sd:
        return x * m
    s = x.mean((2, 3))
    s = F.relu(F.linear(s, sd[f'{name}.se.excitation.0.weight'], sd[f'{name}.se.excitation.0.bias']))
    z = torch.sigmoid(F.linear(s, sd[f'{name}.se.excitation.2.weight'], sd[f'{name}.se.excitation.2.bias']))
    return x * (m + z[:, :, None, None])


def _dalfb(x, sd, name, training=False):
    r = x
    for c in (1, 2, 3):
        r = F.leaky_relu(_ledbb(r, sd, f'{name}.c{c}_r', training), SLOPE)
    return _esa(conv(r + x, sd, f'{name}.c5'), sd, f'{name}.esa')


def dlfan_reference(sd, x, training=False):
    """The official DLFAN forward on RGB ``x`` in [0, 1] (data range 1.0), either form. The
    official network has 5 blocks: b4 = B4(b3 + b2), b5 = B5(b4 + b1); other block counts follow the
    same mirror rule (block j also reads block n + 1 - j when that one is earlier and not adjacent)."""
    n = count_blocks(sd, 'block_')
    fea = conv(x, sd, 'conv_1', padding=1)
    outs = [fea]
    for j in range(1, n + 1):
        inp = outs[j - 1] + outs[n + 1 - j] if 2 * j >= n + 3 else outs[j - 1]
        outs.append(_dalfb(inp, sd, f'block_{j}', training))
    return upsample(conv(outs[-1], sd, 'conv_2', padding=1) + fea, sd, 'upsampler.0', x.shape[1])


# ======================================================================= the official fusion, and TF32

def official_fusion(sd, name, rounding=None):
    """``get_equivalent_kernel_bias`` of the official LEDBB on float32 tensors: transI (BN folding) on
    every branch, transVI (1x1 padded to 3x3), transIII (``F.conv2d(k2, k1.permute(1, 0, 2, 3))`` and
    ``(k2 * b1).sum``), transII (sum). ``rounding`` is applied to the two operands of the transIII
    convolution (what TF32 convolutions do to them on an Ampere GPU); the convolution itself then
    accumulates exactly (float64) and is rounded once to float32."""
    def trans_i(kernel, bn):
        std = (sd[f'{bn}.running_var'] + EPS).sqrt()
        t = sd[f'{bn}.weight'] / std
        return kernel * t.reshape(-1, 1, 1, 1), sd[f'{bn}.bias'] - sd[f'{bn}.running_mean'] * sd[f'{bn}.weight'] / std

    k_origin, b_origin = trans_i(sd[f'{name}.dbb_origin.conv.weight'], f'{name}.dbb_origin.bn')
    k_1x1, b_1x1 = trans_i(sd[f'{name}.dbb_1x1.conv.weight'], f'{name}.dbb_1x1.bn')
    q = f'{name}.dbb_1x1_kxk_1'
    w = sd[f'{q}.idconv1.weight']
    c = w.shape[0]
    k1, b1 = trans_i(w + torch.eye(c).view(c, c, 1, 1), f'{q}.bn1.bn')
    k2, b2 = trans_i(sd[f'{q}.conv2.weight'], f'{q}.bn2')
    a, b = k2, k1.permute(1, 0, 2, 3)
    if rounding is not None:
        a, b = rounding(a), rounding(b)
    k_merged = F.conv2d(a.double(), b.double()).float()
    b_merged = (k2 * b1.reshape(1, -1, 1, 1)).sum((1, 2, 3)) + b2
    return k_origin + F.pad(k_1x1, [1, 1, 1, 1]) + k_merged, b_origin + b_1x1 + b_merged


# ======================================================================= layouts

def _official_deploy_layout(c=52, blocks=5, esa=16, out=48):
    keys = conv_shapes([('conv_1', (c, 3, 3, 3)), ('conv_2', (c, c, 3, 3)), ('upsampler.0', (out, c, 3, 3))])
    for i in range(1, blocks + 1):
        keys.update(conv_shapes([(f'c{j}_r.dbb_reparam', (c, c, 3, 3)) for j in (1, 2, 3)] + [('c5', (c, c, 1, 1))],
                                f'block_{i}.'))
        keys.update(conv_shapes(esa_light_shapes(c, esa), f'block_{i}.esa.'))
    return keys


def test_dlfan_deploy_layout_is_the_official_one():
    """team17_DLFAN.py DLFAN() after switch_to_deploy(): 96 tensors, 461,176 parameters; built
    deployed or reparameterized from the training form."""
    expected = _official_deploy_layout()
    assert len(expected) == 96
    assert state_layout(DLFAN(deploy=True)) == expected
    assert state_layout(rtsr_arch.reparameterize(DLFAN())) == expected
    assert n_params(DLFAN(deploy=True)) == 461_176


def test_dlfan_training_layout_is_the_official_one():
    """DLFAN(): 426 tensors, 912,796 parameters + 6,300 BatchNorm buffer elements (919,096); per
    LEDBB ``dbb_origin.{conv,bn}``, ``dbb_1x1.{conv,bn}``, ``dbb_1x1_kxk_1.{idconv1, bn1.bn, conv2,
    bn2}``; no pooling branch; the identity of idconv1 is not stored."""
    model = DLFAN()
    sd = model.state_dict()
    assert len(sd) == 426 and n_params(model) == 912_796 and sum(v.numel() for v in sd.values()) == 919_096
    ledbb = {k[len('block_1.c1_r.'):] for k in sd if k.startswith('block_1.c1_r.')}
    bn = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
    assert ledbb == {'dbb_origin.conv.weight', 'dbb_1x1.conv.weight', 'dbb_1x1_kxk_1.idconv1.weight',
                     'dbb_1x1_kxk_1.conv2.weight'} | {f'{p}.{b}' for p in ('dbb_origin.bn', 'dbb_1x1.bn',
                                                                         'dbb_1x1_kxk_1.bn1.bn', 'dbb_1x1_kxk_1.bn2')
                                                    for b in bn}
    assert isinstance(model.block_1.c1_r, LEDBB) and isinstance(model.block_1, DALFB)
    assert torch.equal(model.block_1.c1_r.dbb_1x1_kxk_1.idconv1.weight, torch.zeros(52, 52, 1, 1))  # DBB init


def test_dlfan_block_activation_is_one_leaky_relu_with_slope_002():
    block = DLFAN(deploy=True).block_1
    acts = [m for m in block.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 1 and acts[0].negative_slope == SLOPE


def test_dlfan_archway_connections():
    """The official b4 = B4(b3 + b2), b5 = B5(b4 + b1); the network computes exactly that."""
    assert archway_sources(5) == {4: 2, 5: 1}
    assert archway_sources(3) == {3: 1} and archway_sources(2) == {} and archway_sources(6) == {5: 2, 6: 1}
    model = randomize(DLFAN(num_feat=6, esa_channels=3, deploy=True), seed=4, std=1.0, fan_in=True).double().eval()
    seen = {}
    for j in range(1, 6):
        getattr(model, f'block_{j}').register_forward_hook(
            lambda m, i, o, j=j: seen.__setitem__(j, (i[0], o)))
    with torch.no_grad():
        model(photo('coffee', 16, 17, dtype=torch.float64))
    assert torch.equal(seen[4][0], seen[3][1] + seen[2][1])
    assert torch.equal(seen[5][0], seen[4][1] + seen[1][1])
    assert torch.equal(seen[3][0], seen[2][1]) and torch.equal(seen[2][0], seen[1][1])


# ======================================================================= the released weights

def test_dlfan_official_deploy_weights_match_the_reference():
    """``team17_dlfan.pth`` through load_model (auto-detected, no architecture given) reproduces the
    deploy reference on photographs to float32 rounding (float64: ~1e-13) and beats bicubic."""
    check_official_weights(official_fixture('dlfan.pth'), dlfan_reference, official('dlfan.pth'), DLFAN, 461_176,
                           {'type': 'DLFAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 52, 'num_block': 5,
                            'upscale': 4, 'act_type': 'lrelu', 'mid_channels': None, 'esa_channels': 16,
                            'esa_mode': 'esa', 'deploy': True})


def test_dlfan_official_training_weights_match_the_training_reference():
    """``team17_beforerep_dlfan.pth`` through load_model: kept in training form (``deploy=None``)
    it reproduces the training-form reference (eval BatchNorms, BN-value padding) to float32
    rounding; fused by us (``load_model``'s default) it reproduces the same reference to float32
    rounding too (float64: ~1e-12), i.e. our fusion is exact."""
    path = official_fixture('dlfan_beforerep.pth')
    sd = official('dlfan_beforerep.pth')
    train = rtsr_arch.load_model(path, deploy=None)
    assert type(train) is DLFAN and not train.deploy and n_params(train) == 912_796
    fused = rtsr_arch.load_model(path)
    assert fused.deploy and n_params(fused) == 461_176
    _, lr = lr_photos()
    _, _, diff_fused, diff64 = reference_errors(path, dlfan_reference, sd, lr, model=fused)
    with torch.no_grad():
        diff_train = (train(lr) - dlfan_reference(sd, lr)).abs().max().item()
    print(f'team17_beforerep_dlfan.pth: max |training form - reference| {diff_train:.2e}')
    assert diff_train <= 2e-6 and diff_fused <= 3e-6 and diff64 <= 1e-12


def test_dlfan_published_deploy_file_is_not_an_exact_fusion_of_the_training_file():
    """Measured disagreement between our exact fusion of ``team17_beforerep_dlfan.pth`` and the
    published ``team17_dlfan.pth``: every non-fused tensor is identical and the fused biases agree
    to float32 rounding, but the fused 3x3 kernels differ by up to 2.3e-3 (relative ~2e-4 of the
    kernels' range), so the published deploy network differs from the training network it came from
    by up to ~2e-4 on the outputs, while ours reproduces it to float32 rounding."""
    published = official('dlfan.pth')
    ours = rtsr_arch.load_model(official_fixture('dlfan_beforerep.pth')).state_dict()
    assert set(ours) == set(published)
    fused_keys = {k for k in published if '.dbb_reparam.' in k}
    assert len(fused_keys) == 30
    for k in set(published) - fused_keys:
        assert torch.equal(ours[k], published[k]), k
    kernel_gap = max((ours[k] - published[k]).abs().max().item() for k in fused_keys if k.endswith('weight'))
    bias_gap = max((ours[k] - published[k]).abs().max().item() for k in fused_keys if k.endswith('bias'))
    _, lr = lr_photos()
    with torch.no_grad():
        ref = dlfan_reference(official('dlfan_beforerep.pth'), lr)
        out_gap_published = (dlfan_reference(published, lr) - ref).abs().max().item()
        out_gap_ours = (dlfan_reference(ours, lr) - ref).abs().max().item()
    print(f'published dlfan.pth vs our exact fusion of dlfan_beforerep.pth: kernels max |diff| {kernel_gap:.2e}, '
          f'biases {bias_gap:.2e}; outputs vs the training form: published {out_gap_published:.2e}, '
          f'ours {out_gap_ours:.2e}')
    assert 1e-3 <= kernel_gap <= 3e-3 and bias_gap <= 2e-6
    assert 5e-5 <= out_gap_published <= 3e-4 and out_gap_ours <= 3e-6


def test_dlfan_published_kernels_are_a_tf32_fusion():
    """The official fusion with the operands of its one convolution (transIII) rounded to TF32 —
    what PyTorch 1.13 does on the team's RTX 3090s (``torch.backends.cudnn.allow_tf32`` defaults to
    True) — reproduces the published kernels to <= 5e-5 (measured 2.4e-5, mean 2e-8) instead of the
    2.3e-3 (mean 2.4e-5) of an exact fusion: the authors fused on a GPU with TF32 convolutions."""
    train = official('dlfan_beforerep.pth')
    published = official('dlfan.pth')
    gaps = {'exact': [], 'tf32': []}
    for name in LEDBBS:
        target_w, target_b = published[f'{name}.dbb_reparam.weight'], published[f'{name}.dbb_reparam.bias']
        for label, rounding in (('exact', None), ('tf32', tf32_round)):
            w, b = official_fusion(train, name, rounding)
            gaps[label].append(((w - target_w).abs(), (b - target_b).abs().max().item()))
    stats = {label: (max(d.max().item() for d, _ in g), sum(d.sum().item() for d, _ in g) /
                     sum(d.numel() for d, _ in g), max(b for _, b in g)) for label, g in gaps.items()}
    print('fusion vs published kernels (max, mean |diff|; max bias |diff|): ' +
          ', '.join(f'{k} {v[0]:.2e} / {v[1]:.2e} / {v[2]:.1e}' for k, v in stats.items()))
    assert stats['exact'][0] >= 1e-3 and stats['exact'][1] >= 1e-5
    assert stats['tf32'][0] <= 5e-5 and stats['tf32'][1] <= 1e-7
    assert stats['tf32'][0] <= stats['exact'][0] / 50 and stats['tf32'][2] <= 2e-6
    # the TF32-fused network reproduces the published one's outputs closely too
    fused = dict(published)
    for name in LEDBBS:
        w, b = official_fusion(train, name, tf32_round)
        fused[f'{name}.dbb_reparam.weight'], fused[f'{name}.dbb_reparam.bias'] = w, b
    _, lr = lr_photos()
    with torch.no_grad():
        gap = (dlfan_reference(fused, lr) - dlfan_reference(published, lr)).abs().max().item()
    print(f'TF32-emulated fusion vs published deploy file: outputs max |diff| {gap:.2e}')
    assert gap <= 1e-5


def test_tf32_round_keeps_ten_mantissa_bits_and_rounds_ties_away():
    x = torch.tensor([1.0, 1.0 + 2 ** -10, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, -(1.0 + 2 ** -11), 1.0 + 2 ** -12])
    assert tf32_round(x).tolist() == [1.0, 1.0 + 2 ** -10, 1.0 + 2 ** -10, 1.0 + 2 ** -9, -(1.0 + 2 ** -10), 1.0]


@pytest.mark.parametrize('name', ['dlfan.pth', 'dlfan_beforerep.pth'])
def test_dlfan_official_files_are_detected_as_dlfan_only(name):
    assert [m.arch for m, _ in find_importers(read_checkpoint(official_fixture(name))[0])] == ['DLFAN']


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_dlfan_official_weights_in_half_precision(dtype, tol):
    """fp16_safe: measured 2.3e-3 in float16, 2.6e-2 in bfloat16 (deploy file, two 32x48 crops)."""
    check_half_precision(official_fixture('dlfan.pth'), lr_photos()[1], dtype, tol)


# ======================================================================= training form

@pytest.mark.parametrize('kwargs', [dict(num_feat=8, num_block=5, esa_channels=4),
                                    dict(num_feat=8, num_block=3, mid_channels=5, esa_channels=3, upscale=2,
                                         esa_mode='esca')])
def test_dlfan_training_form_matches_the_official_formula_and_fuses_to_the_official_layout(kwargs):
    """The LEDBB training form (eval BatchNorms) equals the reference written from the official
    code, and its fused state dict, through the deploy reference, gives the same output on every
    pixel (15x15: the smallest valid input)."""
    model = randomize(DLFAN(**kwargs), seed=7, std=1.0, fan_in=True).double().eval()
    inputs = [photo('chelsea', h, w, dtype=torch.float64, batch=2) for h, w in ((15, 15), (17, 22))]
    check_reference_and_fusion(model, dlfan_reference, inputs, gone=('dbb_origin',))


def test_dlfan_training_mode_pads_with_running_statistics_and_detached_affine():
    """In training mode the BatchNorms normalize with batch statistics, but ``bn1`` pads with the
    value from its running statistics (just updated by that forward) and *detached* affine
    parameters (official ``BNAndPadLayer``): our forward, every parameter gradient and the updated
    running statistics equal the reference's."""
    model = randomize(DLFAN(num_feat=6, num_block=2, esa_channels=3), seed=9, std=0.5, fan_in=True).double().train()
    x = photo('astronaut', 16, 18, dtype=torch.float64, batch=2)
    params = {k: v.detach().clone().requires_grad_(v.is_floating_point() and 'running' not in k)
              for k, v in model.state_dict().items()}
    y_ref = dlfan_reference(params, x, training=True)
    weight = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (y_ref * weight).sum().backward()
    y = model(x)
    (y * weight).sum().backward()
    assert (y - y_ref).abs().max() <= 1e-12 * y.abs().max()
    for k, p in model.named_parameters():
        assert (p.grad - params[k].grad).abs().max() <= 1e-10 * max(1.0, p.grad.abs().max().item()), k
    for k, v in model.state_dict().items():
        if 'running' in k:
            assert (v - params[k]).abs().max() <= 1e-12, k


def test_dlfan_training_form_counts():
    """The NTIRE 2023 ESR counter on the training form (ARCHITECTURES C.8 row "DLFAN train"):
    912,796 parameters, 58.50 G FLOPs (BatchNorms count 2 x numel), 260.42 M activations, 93 convs
    (idconv1 is an ``nn.Conv2d`` and counted, as the official ``IdentityBasedConv1x1``)."""
    counts = count_ntire_esr(DLFAN())
    assert (counts.params, round(counts.flops / 1e9, 2), round(counts.activations / 1e6, 2), counts.num_conv) == \
        (912_796, 58.50, 260.42, 93)


# ======================================================================= importer

def test_dlfan_importer_reads_both_forms_and_esca():
    model = DLFAN(num_feat=8, num_block=4, mid_channels=6, esa_channels=4, upscale=3, esa_mode='esca')
    result = import_official_dlfan(model.state_dict(), {})
    assert result.assumed == ('act_type',) and result.network_opt == model.network_opt
    result = import_official_dlfan(rtsr_arch.reparameterize(model).state_dict(), {})
    assert result.network_opt == {**model.network_opt, 'deploy': True}


def test_dlfan_importer_refuses_a_dbb_with_a_pooling_branch():
    from rtsr_arch.archs.rep import DiverseBranchBlock

    model = DLFAN(num_feat=6, num_block=1, esa_channels=3)
    sd = dict(model.state_dict())
    dbb = DiverseBranchBlock(6, 6, 3).state_dict()
    sd.update({f'block_1.c1_r.{k}': v for k, v in dbb.items() if k.startswith('dbb_avg.')})
    with pytest.raises(OfficialImportError, match='average-pooling'):
        import_official_dlfan(sd, {})


def test_dlfan_esca_needs_eight_features():
    with pytest.raises(ValueError, match=r"^DLFAN: esa_mode='esca' needs num_feat >= 8"):
        DLFAN(num_feat=6, esa_mode='esca')


# ======================================================================= recipes

STAGES = ('stage1_L1_p256', 'stage2_L2_p512', 'stage2_L2_p840')


def test_dlfan_recipes_chain():
    """NTIRE 2023 ESR report §4.18: HR 256, batch 64, L1, 5e-4 cosine to 1e-5, 5000 epochs (53
    iterations each) -> HR 512 (batch 32) then 840 (batch 16), L2, 5e-5 decaying to 1e-6 over 3000
    epochs; DIV2K + Flickr2K bicubic x4; Adam defaults; 2 GPUs; each stage starts from the previous."""
    stages = [load_recipe('DLFAN', f'train_DLFAN_x4_{s}') for s in STAGES]
    for previous, stage in zip(stages, stages[1:]):
        assert stage['path']['pretrain_network_g'] == f"experiments/{previous['name']}/models/net_g_latest.pth"
        assert stage['network_g'] == previous['network_g']
    assert stages[0]['path']['pretrain_network_g'] is None
    train_sets = [s['datasets']['train'] for s in stages]
    assert [t['gt_size'] for t in train_sets] == [256, 512, 840]
    assert [t['batch_size_per_gpu'] * s['num_gpu'] for t, s in zip(train_sets, stages)] == [64, 32, 16]
    assert all(t['type'] == 'PairedImageDataset' and 'DF2K' in t['dataroot_gt'] for t in train_sets)
    assert [s['train']['losses'][0]['type'] for s in stages] == ['L1Loss', 'MSELoss', 'MSELoss']
    assert [s['train']['optim_g']['lr'] for s in stages] == [5e-4, 5e-5, 2.55e-5]
    assert [s['train']['scheduler']['eta_min'] for s in stages] == [1e-5, 1e-6, 1e-6]
    assert [s['train']['total_iter'] for s in stages] == [5000 * 53, 1500 * 107, 1500 * 215]
    # the fine-tuning decay: one cosine over 3000 epochs, cut at 1500 (the second file starts where the first ends)
    s2 = stages[1]['train']['scheduler']
    end = 1e-6 + (5e-5 - 1e-6) * (1 + math.cos(math.pi * stages[1]['train']['total_iter'] / s2['T_max'])) / 2
    assert s2['T_max'] == 3000 * 107 and math.isclose(end, 2.55e-5)
    check_recipe_network(stages[0]['network_g'], DLFAN, 912_796, 461_176)
