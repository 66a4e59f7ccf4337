"""CASR specifics (Yoon, Gankhuyag et al., CVPRW 2024; AIS 2024 RTSR report §3.4, team Z6; official
code rlghksdbs/CASR@2b0554a): the dual-branch RepBlockV5 formula, the official state-dict layouts
(alias keys, training, deploy and the partially fused ``scratch_22.78`` file), an independent
functional reference of the official forward run against every official checkpoint on real
photographs, our fusion against the committed deploy files, the bias-free last stage and the Table 1
MACs. Fusion, parameter counts, keyword errors, tiling and export are checked for every architecture
by test_contract.py."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import load_official, module_names, official_fixture, photo, photos, randomize
from reference import conv, tf32_round
from rtsr_arch.archs.casr_arch import CASR
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.rep import CollapsibleBlock
from rtsr_arch.loader import load_model, resolve_checkpoint
from rtsr_arch.utils.efficiency import count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')

STAGES = ('final', 'ft', 'scratch')
FILES = [f'casr_{stage}_{form}.pt' for stage in STAGES for form in ('train', 'deploy')]
ALIASES = ('w0', 'b0', 'w1', 'b1', 'w0_b2', 'b0_b2', 'w1_b2', 'b1_b2')
BLOCKS = ('head', 'backbone.0', 'transition.0', 'input_conv2')


def raw(name, dtype=torch.float32):
    """The official file as stored: a raw state dict with the alias keys."""
    return load_official(name, dtype)


def crops(dtype=torch.float32):
    """Real photographs (scikit-image), sizes multiples of 3 as the official network needs."""
    return [photos(48, 60, dtype), photo('rocket', 33, 75, dtype=dtype)]


# ----------------------------------------------------------------------------- independent reference

def repblock_v5(sd, prefix, x, act):
    """Official RepBlockV5 (``source/models/RepConv_block.py``) on the official keys: training form
    act(conv1(conv0 x) + conv1_b2(conv0_b2 x) + (x or conv1_res x)), or deploy form act(conv3x3 x)."""
    def c(name, t, padding=0):
        return conv(t, sd, f'{prefix}.{name}', padding=padding)

    if f'{prefix}.conv3x3.weight' in sd:
        y = c('conv3x3', x, 1)
    else:
        y = c('conv1', c('conv0', x, 1)) + c('conv1_b2', c('conv0_b2', x, 1))
        y = y + (c('conv1_res', x) if f'{prefix}.conv1_res.weight' in sd else x)
    return F.gelu(y) if act else y


@torch.no_grad()
def casr_reference(sd, x):
    """Official ``RepNetwork_V011_BestStruct`` / ``RepNetwork_V010_BestStruct_deploy`` forward
    (``source/models/RepNetworkPlain.py``), GELU: PixelUnshuffle(3) -> head -> backbone ->
    transition -> PixelShuffle(3) -> input_conv2(. + x) -> PixelShuffle(scale). Any mix of block forms."""
    y = repblock_v5(sd, 'head', F.pixel_unshuffle(x, 3), True)
    i = 0
    while f'backbone.{i}.conv3x3.weight' in sd or f'backbone.{i}.conv0.weight' in sd:
        y = repblock_v5(sd, f'backbone.{i}', y, True)
        i += 1
    y = F.pixel_shuffle(repblock_v5(sd, 'transition.0', y, False), 3)
    y = repblock_v5(sd, 'input_conv2', y + x, False)
    return F.pixel_shuffle(y, math.isqrt(y.shape[1] // x.shape[1]))


def official_merge(sd, prefix, rounding=lambda t: t):
    """RepBlockV5.repblock_convert's kernel (float64 sums of ``rounding``-ed operands)."""
    def branch(suffix):
        w0, w1 = sd[f'{prefix}.conv0{suffix}.weight'], sd[f'{prefix}.conv1{suffix}.weight']
        return torch.einsum('om,mikl->oikl', rounding(w1[:, :, 0, 0]).double(), rounding(w0).double())

    w = branch('') + branch('_b2')
    res = sd.get(f'{prefix}.conv1_res.weight')
    w[:, :, 1, 1] += torch.eye(w.shape[0], dtype=w.dtype) if res is None else res[:, :, 0, 0].double()
    return w


def max_diff(a, b):
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------- the block

@pytest.mark.parametrize('cin, cout, bias', [(5, 5, True), (4, 7, True), (5, 5, False), (4, 7, False)])
def test_repblock_v5_is_the_dual_branch_collapsible_block(cin, cout, bias):
    """CollapsibleBlock(feature_size_b2=...) = official RepBlockV5: two 3x3 -> 1x1 branches (widths
    ``feature_size`` and ``feature_size_b2``) + identity (in == out) or ``conv1_res``, then act;
    its fusion equals it on every pixel (float64)."""
    block = randomize(CollapsibleBlock(cin, cout, 12, 'gelu', feature_size_b2=6, bias=bias), seed=cin + cout,
                      fan_in=True).double()
    names = {k.rsplit('.', 1)[0] for k in block.state_dict()}
    assert names == {'conv0', 'conv1', 'conv0_b2', 'conv1_b2'} | ({'conv1_res'} if cin != cout else set())
    assert block.conv0_b2.weight.shape == (6, cin, 3, 3) and block.conv1_b2.weight.shape == (cout, 6, 1, 1)
    assert all((p.bias is not None) == bias for p in block.modules() if isinstance(p, nn.Conv2d))
    x = torch.randn(2, cin, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sd = {f'b.{k}': v for k, v in block.state_dict().items()}
    with torch.no_grad():
        assert max_diff(block(x), repblock_v5(sd, 'b', x, True)) <= 1e-12
        fused = rtsr_arch.reparameterize(copy.deepcopy(block))
        assert set(fused.state_dict()) == ({'conv3x3.weight', 'conv3x3.bias'} if bias else {'conv3x3.weight'})
        assert max_diff(fused(x), block(x)) <= 1e-10
    with pytest.raises(ValueError, match='feature_size_b2'):
        CollapsibleBlock(4, 4, 8, feature_size_b2=0)


def test_network_structure_matches_the_official_forward():
    """The network on random weights equals the functional reference on its own state dict (float64),
    for both forms and a deeper, x2, bias-free configuration."""
    for kwargs in ({}, dict(num_block=3, upscale=2, num_feat=8, feature_size=16, feature_size_b2=8, bias=False)):
        model = randomize(CASR(**kwargs), seed=7, std=1.0, fan_in=True).double().eval()
        x = photo('chelsea', 24, 30, dtype=torch.float64)
        with torch.no_grad():
            y = model(x)
            assert max_diff(y, casr_reference(model.state_dict(), x)) <= 1e-12
            fused = rtsr_arch.reparameterize(copy.deepcopy(model))
            assert max_diff(fused(x), casr_reference(fused.state_dict(), x)) <= 1e-12
    assert isinstance(model.transition[0].act, nn.Identity) and isinstance(model.input_conv2.act, nn.Identity)
    assert model.input_multiple == 3 and model.receptive_radius == 3 * (3 + 3)


def test_state_dict_layout():
    """Official names: training ``conv0/conv1/conv0_b2/conv1_b2`` (+ ``conv1_res`` where in != out),
    deploy ``conv3x3``; the backbone block has the identity."""
    train = {f'{b}.{c}' for b in BLOCKS for c in ('conv0', 'conv1', 'conv0_b2', 'conv1_b2')}
    assert module_names(CASR()) == train | {f'{b}.conv1_res' for b in ('head', 'transition.0', 'input_conv2')}
    deploy = {f'{b}.conv3x3' for b in BLOCKS}
    assert module_names(CASR(deploy=True)) == deploy == module_names(rtsr_arch.reparameterize(CASR()))
    assert module_names(CASR(act_type='prelu', deploy=True)) == deploy | {'head.act', 'backbone.0.act'}


# ----------------------------------------------------------------------------- official checkpoints

@pytest.mark.parametrize('stage', STAGES)
def test_official_layouts(stage):
    """Training files: our keys = the official keys minus the alias keys (which share storage with
    ``conv0.*`` ...); shapes equal. Deploy files (final, ft): exactly our deploy state dict, in order."""
    sd = raw(f'casr_{stage}_train.pt')
    aliases = {k for k in sd if k.rsplit('.', 1)[-1] in ALIASES}
    assert len(aliases) == 4 * 8 and len(sd) == 70
    ours = CASR().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in sd.items() if k not in aliases}
    conv = {'w': 'weight', 'b': 'bias'}
    for key in aliases:
        prefix, alias = key.rsplit('.', 1)
        assert torch.equal(sd[key], sd[f"{prefix}.conv{alias[1]}{alias[2:]}.{conv[alias[0]]}"])
    if stage != 'scratch':
        deploy = raw(f'casr_{stage}_deploy.pt')
        ours = CASR(deploy=True).state_dict()
        assert [(k, v.shape) for k, v in deploy.items()] == [(k, v.shape) for k, v in ours.items()]


@pytest.mark.parametrize('name', FILES)
def test_official_checkpoint_reproduces_the_reference(name):
    """Every official CASR file loads auto-detected (``load_model(path)``), fused, and reproduces the
    independent reference run on the file's own tensors and form: float32 to rounding; float64 ~1e-12
    in the stored form (the partially fused file's ``input_conv2`` is fused on import, and rounded
    to the file's float32 once)."""
    path = official_fixture(name)
    sd = raw(name)
    resolved = resolve_checkpoint(path)
    assert resolved.how == 'official CASR checkpoint'
    model = load_model(path)
    assert sum(p.numel() for p in model.parameters()) == 26_203
    for x in crops():
        ref = casr_reference(sd, x)
        with torch.no_grad():
            err = max_diff(model(x), ref)
        print(f'{name} {tuple(x.shape)}: fused float32 vs reference max |diff| {err:.3g} '
              f'(max |y| {ref.abs().max():.3f})')
        assert err <= 1e-5 * ref.abs().max()
    stored = load_model(path, deploy=None, dtype=torch.float64)
    sd64 = raw(name, torch.float64)
    for x in crops(torch.float64):
        with torch.no_grad():
            err = max_diff(stored(x), casr_reference(sd64, x))
        print(f'{name}: stored form float64 vs reference max |diff| {err:.3g}')
        assert err <= (1e-6 if name == 'casr_scratch_deploy.pt' else 1e-12)


@pytest.mark.parametrize('stage', ['final', 'ft'])
def test_our_fusion_of_the_training_file_reproduces_the_official_deploy_file(stage):
    """``casr_<stage>_train.pt`` loaded in training form and fused by ``rtsr_arch.reparameterize``
    vs the official ``casr_<stage>_deploy.pt`` on real photographs.

    final: the committed deploy file is an exact fp32 fusion; ours matches it to 3e-6 (outputs).
    ft: the committed kernels were merged with TF32 matmuls (an Ampere GPU's default in the official
    ``repblock_convert``: the weight product is a matrix-matrix product, the bias product a
    matrix-vector one, so only weights are affected): they differ from the exact merge by up to
    1e-3 (biases by 1e-7), outputs by ~6e-4. A TF32-emulated merge of the training file reproduces
    the committed kernels to ~1e-5; ours is the exact one (matching the training form to 5e-6)."""
    trained = load_model(official_fixture(f'casr_{stage}_train.pt'), deploy=False)
    fused = rtsr_arch.reparameterize(trained)
    assert fused.network_opt['deploy'] is True and isinstance(fused.head.conv3x3, nn.Conv2d)
    official = load_model(official_fixture(f'casr_{stage}_deploy.pt'))
    train_sd, deploy_sd = raw(f'casr_{stage}_train.pt'), raw(f'casr_{stage}_deploy.pt')
    worst_official = worst_exact = 0.0
    for x in crops():
        with torch.no_grad():
            y_ours, y_official = fused(x), official(x)
        ref = casr_reference(train_sd, x)
        worst_official = max(worst_official, max_diff(y_ours, y_official))
        worst_exact = max(worst_exact, max_diff(y_ours, ref))
    print(f'{stage}: our fusion vs official deploy max |diff| {worst_official:.3g}; '
          f'vs the official training form {worst_exact:.3g}')
    assert worst_exact <= 1e-5
    for block in BLOCKS:
        ours = fused.state_dict()[f'{block}.conv3x3.weight']
        committed = deploy_sd[f'{block}.conv3x3.weight']
        assert max_diff(fused.state_dict()[f'{block}.conv3x3.bias'], deploy_sd[f'{block}.conv3x3.bias']) <= 1e-6
        assert max_diff(official_merge(train_sd, block).float(), ours) <= 1e-6  # the same exact merge
        if stage == 'final':
            assert max_diff(ours, committed) <= 1e-5
        else:
            assert max_diff(official_merge(train_sd, block, tf32_round).float(), committed) <= 2e-5
    if stage == 'final':
        assert worst_official <= 1e-5
    else:
        assert 1e-4 <= worst_official <= 1e-3  # the committed file's TF32 rounding, not ours


def test_partially_fused_scratch_file_equals_the_scratch_training_fusion():
    """``casr_scratch_deploy.pt`` (head, backbone, transition fused; ``input_conv2`` still in training
    form) loads as a deploy network with a note; its ``input_conv2`` is bit-identical to the
    fused scratch training file's, its other kernels are the TF32 merge of the training file's (as
    the ft deploy file), and its outputs equal the training fusion's within that rounding."""
    partial = raw('casr_scratch_deploy.pt')
    train_sd = raw('casr_scratch_train.pt')
    assert {k for k in partial if k.startswith('input_conv2.')} == {k for k in train_sd if k.startswith('input_conv2.')}
    assert all(torch.equal(partial[k], train_sd[k]) for k in partial if k.startswith('input_conv2.'))
    resolved = resolve_checkpoint(official_fixture('casr_scratch_deploy.pt'))
    assert resolved.network_opt['deploy'] is True
    assert any('partially fused' in note and 'input_conv2' in note for note in resolved.notes)
    loaded = load_model(official_fixture('casr_scratch_deploy.pt'))
    fused = rtsr_arch.reparameterize(load_model(official_fixture('casr_scratch_train.pt'), deploy=False))
    for key in ('input_conv2.conv3x3.weight', 'input_conv2.conv3x3.bias'):
        assert torch.equal(loaded.state_dict()[key], fused.state_dict()[key])
    for block in BLOCKS[:3]:
        assert max_diff(official_merge(train_sd, block, tf32_round).float(), partial[f'{block}.conv3x3.weight']) <= 2e-5
        assert torch.allclose(fused.state_dict()[f'{block}.conv3x3.bias'], partial[f'{block}.conv3x3.bias'], atol=1e-6)
    worst = 0.0
    for x in crops():
        with torch.no_grad():
            worst = max(worst, max_diff(loaded(x), fused(x)))
    print(f'scratch: partially fused file vs our fusion of the training file max |diff| {worst:.3g}')
    assert worst <= 1e-3


def test_importer_details():
    """Alias keys must agree; deploy files cannot tell the branch widths (assumed, with a note);
    the LRSRN teacher is not CASR and CASR files are not LRSRN."""
    sd = raw('casr_final_train.pt')
    sd['head.w0'] = sd['head.w0'] + 1
    [(importer, unwrapped)] = find_importers(sd)
    with pytest.raises(ValueError, match="alias key 'head.w0'"):
        importer.convert(unwrapped, {})
    deploy = importer.convert(raw('casr_final_deploy.pt'), {})
    assert set(deploy.assumed) == {'act_type', 'feature_size', 'feature_size_b2'}
    train = importer.convert(raw('casr_final_train.pt'), {})
    assert train.assumed == ('act_type',) and train.network_opt['feature_size_b2'] == 128
    assert [imp.arch for imp, _ in find_importers(raw('casr_final_deploy.pt'))] == ['CASR']
    assert [imp.arch for imp, _ in find_importers(raw('casr_teacher_deploy.pt'))] == ['LRSRN']


# ----------------------------------------------------------------------------- the bias-free last stage

def test_bias_free_stage_loads_biased_weights_and_fuses_exactly():
    """Report §3.4 step (iii): no bias anywhere (26,064 deploy parameters, 139 fewer); the official
    lasttune loads the finetune weights with ``strict=False``: every weight kept, biases dropped."""
    biased, free = randomize(CASR(), seed=3, fan_in=True), CASR(bias=False)
    result = free.load_state_dict(biased.state_dict(), strict=False)
    assert not result.missing_keys and all(k.endswith('.bias') for k in result.unexpected_keys)
    assert len(result.unexpected_keys) == 4 * 5 - 1  # backbone.0 has no conv1_res
    assert all(torch.equal(p, biased.state_dict()[n]) for n, p in free.state_dict().items())
    free = free.double().eval()
    x = photo('coffee', 27, 33, dtype=torch.float64)
    with torch.no_grad():
        fused = rtsr_arch.reparameterize(copy.deepcopy(free))
        assert all(m.bias is None for m in fused.modules() if isinstance(m, nn.Conv2d))
        assert max_diff(fused(x), free(x)) <= 1e-10
    preset = CASR(preset='ais24_nobias', deploy=True)
    assert sum(p.numel() for p in fused.parameters()) == 26_064 == sum(p.numel() for p in preset.parameters())


# ----------------------------------------------------------------------------- efficiency

def test_macs_at_the_4k_input_match_table_1():
    """AIS 2024 report Table 1: CASR 2.10 G MACs for the 960x540 -> 3840x2160 frame. Deploy form:
    three 3x3 convs at 320x180 (27->32, 32->32, 32->27) + one at 960x540 (3->48) = 2.0985 G; the GELUs,
    shuffles and the residual add count 0 with the NTIRE counter's conventions."""
    counts = count_ntire_esr(CASR(deploy=True), (1, 3, 540, 960))
    expected = 9 * (180 * 320 * (27 * 32 + 32 * 32 + 32 * 27) + 540 * 960 * 3 * 48)
    assert counts.flops == expected == 2_098_483_200 and round(counts.flops / 1e9, 2) == 2.10
    assert counts.num_conv == 4 and counts.params == 26_203
