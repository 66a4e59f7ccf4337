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
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import check_half_precision, check_official_weights, check_recipe_network, check_reference_and_fusion, \
    conv_shapes, esa_light_shapes, load_official, load_recipe, lr_photos, n_params, official_fixture, photo, randomize, state_layout
from reference import conv, count_blocks, esa_light, rrrb, upsample
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.pfdn_arch import PFDB, PFDN, import_official_pfdn
from rtsr_arch.loader import read_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')

SLOPE = 0.05  # the official ``nn.LeakyReLU(0.05, True)``


# ======================================================================= independent reference
# icandle/PlainUSR 2023_PFDN_NTIRE/models/team08_PFDN.py (deploy keys ``convN.rep_conv``) and the
# RRRB training form (NJU-Jet/FMEN train_fmen.py formula, reference.rrrb); the attention is RLFN's
# light ESA (official ``ESA`` of team08_PFDN.py, f = 16; reference.esa_light).

def pfdn_reference(sd, x, in_place=True):
    """The official PFDN forward on RGB ``x`` in [0, 1] (data range 1.0). ``in_place``: the partial
    step written as the official ``x[:, :p] = relu(conv3(x[:, :p]))`` (with the official in-place
    LeakyReLU); else out of place (``torch.cat``). Not under no_grad (the in-place test needs autograd)."""
    channels = x.shape[1]
    x = conv(x, sd, 'conv_first', padding=1)
    res0 = x
    for i in range(1, count_blocks(sd, 'block') + 1):
        p = f'block{i}'
        x = esa_light(x, sd, f'{p}.attn')
        res = x
        x = F.leaky_relu(rrrb(x, sd, f'{p}.conv1'), SLOPE, inplace=in_place)
        c = sd[f'{p}.conv3.rep_conv.weight' if f'{p}.conv3.rep_conv.weight' in sd else f'{p}.conv3.expand_conv.weight']
        c = c.shape[0] if f'{p}.conv3.rep_conv.weight' in sd else c.shape[1]
        if in_place:
            x[:, :c] = F.leaky_relu(rrrb(x[:, :c], sd, f'{p}.conv3'), SLOPE, inplace=True)
        else:
            x = torch.cat([F.leaky_relu(rrrb(x[:, :c], sd, f'{p}.conv3'), SLOPE), x[:, c:]], 1)
        x = F.leaky_relu(rrrb(x, sd, f'{p}.conv2'), SLOPE, inplace=in_place)
        x = x + res
    return upsample(conv(x, sd, 'conv_last', padding=1) + res0, sd, 'tail.0', channels)


# ======================================================================= layouts

def _official_layout(c=48, p=32, blocks=4, esa=16, out=48):
    keys = conv_shapes([('conv_first', (c, 3, 3, 3)), ('conv_last', (c, c, 3, 3)), ('tail.0', (out, c, 3, 3))])
    for i in range(1, blocks + 1):
        keys.update(conv_shapes(esa_light_shapes(c, esa), f'block{i}.attn.'))
        keys.update(conv_shapes([('conv1.rep_conv', (c, c, 3, 3)), ('conv2.rep_conv', (c, c, 3, 3)),
                                 ('conv3.rep_conv', (p, p, 3, 3))], f'block{i}.'))
    return keys


def test_pfdn_deploy_layout_is_the_official_one():
    """team08_PFDN.py Net(): 70 tensors, 272,224 parameters; ``convN.rep_conv`` (the deployed RRRBs),
    the partial conv 32 -> 32; built deployed or reparameterized from the training form."""
    expected = _official_layout()
    assert state_layout(PFDN(deploy=True)) == expected and len(expected) == 70
    assert state_layout(rtsr_arch.reparameterize(PFDN())) == expected
    assert n_params(PFDN(deploy=True)) == 272_224


def test_pfdn_training_layout():
    """Every block conv is an RRRB (FMEN's expand_conv, fea_conv, reduce_conv; ratio 2), with biases."""
    layout = state_layout(PFDN())
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
    check_official_weights(official_fixture('pfdn.pth'), pfdn_reference, load_official('pfdn.pth'), PFDN, 272_224,
                           {'type': 'PFDN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 48, 'num_block': 4,
                            'upscale': 4, 'act_type': 'lrelu', 'partial_channels': 32, 'esa_channels': 16,
                            'rep_ratio': 2, 'deploy': True})


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_pfdn_official_weights_in_half_precision(dtype, tol):
    """fp16_safe: [0, 1] features stay far below float16's range; bfloat16 keeps 8 mantissa bits."""
    check_half_precision(official_fixture('pfdn.pth'), lr_photos()[1], dtype, tol)


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
    inputs = [photo('chelsea', h, w, dtype=torch.float64, batch=2) for h, w in ((15, 15), (17, 22))]
    check_reference_and_fusion(model, lambda sd, x: pfdn_reference(sd, x, in_place=False), inputs,
                               gone=('expand_conv',), deploy_reference=pfdn_reference)


# ======================================================================= importer

def test_pfdn_importer_reads_training_and_deploy_forms():
    model = PFDN(num_feat=8, num_block=3, partial_channels=5, esa_channels=4, rep_ratio=3, upscale=3)
    result = import_official_pfdn(model.state_dict(), {})
    assert result.assumed == ('act_type',) and result.network_opt == model.network_opt
    result = import_official_pfdn(rtsr_arch.reparameterize(model).state_dict(), {})
    assert result.assumed == ('rep_ratio', 'act_type')
    assert result.network_opt == {**model.network_opt, 'rep_ratio': 2, 'deploy': True}


def test_pfdn_official_file_is_detected_as_pfdn_only():
    assert [m.arch for m, _ in find_importers(read_checkpoint(official_fixture('pfdn.pth'))[0])] == ['PFDN']


# ======================================================================= recipes

STAGES = ('stage1_scratch_p64_L1', 'stage2_p128_L1', 'stage2_p160_L1', 'stage2_p180_deploy_L1',
          'stage3_p240_deploy_L2')


def test_pfdn_recipes_chain():
    """NTIRE 2023 ESR report §4.7 / factsheet: LR patches 64 (batch 96, L1, Adam 5e-4 halved at
    250k/400k/450k/475k of 500k) -> 128 -> 160 -> 180 (2e-4; reparameterized before 180) -> 240
    (batch 128, L2, 1e-5); DIV2K + Flickr2K bicubic x4; each stage starts from the previous one, the
    180 stage from the rtsr-reparam output of the 160 stage."""
    stages = [load_recipe('PFDN', f'train_PFDN_x4_{s}') for s in STAGES]
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
    check_recipe_network(stages[0]['network_g'], PFDN, deploy_params=272_224)
    assert len(set(names)) == 5 and all(s['scale'] == 4 for s in stages)
