"""RepRFN specifics (team CUC_SR, NTIRE 2023 ESR report §4.16; Deng et al., CVPRW 2023; official code
laonafahaodange/NTIRE2023-ESR-RepRFN@4ddbab8 ``models/team07_RepRFN.py``, MIT): the official
state-dict layout in both forms, an independent functional reference written on the official keys
(deploy ``rbr_reparam`` and the RepBlock training formula with ECB's explicit bias padding), the
released ``team07_reprfn.pth`` loaded through ``rtsr_arch.load_model`` against it on real
photographs, the training form against the formula and fused through the deploy reference, the
parameter counts (the official module registers the fixed edge masks as frozen parameters), half
precision, the importer and the recipe. Fusion, keyword errors and the generic checks are in
test_contract.py; the NTIRE 2023 ESR counts in test_ntire23_counts.py.
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from helpers import check_half_precision, check_official_weights, check_recipe_network, check_reference_and_fusion, \
    conv_shapes, esa_light_shapes, load_official, load_recipe, lr_photos, n_params, official_fixture, photo, randomize, state_layout
from reference import conv, count_blocks, esa_light, pad_with, upsample
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.reprfn_arch import RepRFB, RepRFN, import_official_reprfn
from rtsr_arch.loader import read_checkpoint
from rtsr_arch.utils.efficiency import count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')

SLOPE = 0.05  # the official ``activation('lrelu')``: nn.LeakyReLU(0.05)
# ECB's fixed edge filters (official ``SeqConv3x3`` masks; ECBSR, Zhang et al., ACM MM 2021)
EDGE_MASKS = {'sbx': [[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]],
              'sby': [[1., 2., 1.], [0., 0., 0.], [-1., -2., -1.]],
              'lpl': [[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]]}


# ======================================================================= independent reference
# team07_RepRFN.py, written on the official keys with torch.nn.functional only; the attention is
# RLFN's light ESA (official ``ESA(16, feature_nums, nn.Conv2d)``; reference.esa_light).

def _edge_branch(t, sd, name, edge):
    """Official ``SeqConv3x3``: y0 = 1x1 conv (k0, b0); y0 padded by one pixel whose value is b0
    (explicit assignment of the four borders); depthwise 3x3 with ``scale * mask`` and ``bias``."""
    y0 = pad_with(F.conv2d(t, sd[f'{name}.k0'], sd[f'{name}.b0']), sd[f'{name}.b0'])
    channels = y0.shape[1]
    mask = torch.tensor(EDGE_MASKS[edge], dtype=t.dtype).expand(channels, 1, 3, 3)
    return F.conv2d(y0, sd[f'{name}.scale'] * mask, sd[f'{name}.bias'], groups=channels)


def _repblock(t, sd, name):
    """Deploy: ``rbr_reparam`` (3x3, padding 1). Training: the sum of the official branches, + t.
    Then LeakyReLU(0.05)."""
    if f'{name}.rbr_reparam.weight' in sd:
        y = conv(t, sd, f'{name}.rbr_reparam', padding=1)
    else:
        y = (conv(t, sd, f'{name}.rbr_3x3_branch', padding=1) + conv(t, sd, f'{name}.rbr_3x1_branch', padding=(1, 0))
             + conv(t, sd, f'{name}.rbr_1x3_branch', padding=(0, 1)) + conv(t, sd, f'{name}.rbr_1x1_branch')
             + conv(conv(t, sd, f'{name}.rbr_1x1_3x3_branch_1x1'), sd, f'{name}.rbr_1x1_3x3_branch_3x3', padding=1)
             + t)
        for edge in EDGE_MASKS:
            y = y + _edge_branch(t, sd, f'{name}.rbr_conv1x1_{edge}_branch', edge)
    return F.leaky_relu(y, SLOPE)


def reprfn_reference(sd, x):
    """The official RepRFN forward on RGB ``x`` in [0, 1] (data range 1.0), either form, any block count."""
    fea = conv(x, sd, 'fea_conv', padding=1)
    out = fea
    for i in range(1, count_blocks(sd, 'reprfb') + 1):
        t = out
        for j in (1, 2, 3):
            t = _repblock(t, sd, f'reprfb{i}.repblock{j}')
        t = F.leaky_relu(conv(t, sd, f'reprfb{i}.conv3', padding=1), SLOPE)
        out = esa_light(out + t, sd, f'reprfb{i}.esa')
    return upsample(conv(out, sd, 'lr_conv', padding=1) + fea, sd, 'upsampler.conv', x.shape[1])


# ======================================================================= layouts

def _official_deploy_layout(c=48, blocks=4, esa=16, out=48):
    keys = conv_shapes([('fea_conv', (c, 3, 3, 3)), ('lr_conv', (c, c, 3, 3)), ('upsampler.conv', (out, c, 3, 3))])
    for i in range(1, blocks + 1):
        keys.update(conv_shapes([(f'repblock{j}.rbr_reparam', (c, c, 3, 3)) for j in (1, 2, 3)] +
                                [('conv3', (c, c, 3, 3))], f'reprfb{i}.'))
        keys.update(conv_shapes(esa_light_shapes(c, esa), f'reprfb{i}.esa.'))
    return keys


def test_reprfn_deploy_layout_is_the_official_one():
    """team07_RepRFN.py RepRFN(deploy=True): 78 tensors, 401,504 parameters; built deployed or
    reparameterized from the training form."""
    expected = _official_deploy_layout()
    assert len(expected) == 78
    assert state_layout(RepRFN(deploy=True)) == expected
    assert state_layout(rtsr_arch.reparameterize(RepRFN())) == expected
    assert n_params(RepRFN(deploy=True)) == 401_504


def test_reprfn_training_layout_and_counts():
    """The official RepBlock branch names; the 1x1 -> 3x3 branch 48 -> 96 -> 48 without biases; the
    fixed masks under the official key ``mask``. Here the masks are buffers (not trained, not
    counted); the official module registers them as ``nn.Parameter(requires_grad=False)``, which the
    counter counts: 1,237,856 + 12 RepBlocks x 3 masks x 48 x 9 = 1,253,408 (official training form)."""
    model = RepRFN()
    layout = state_layout(model)
    p = 'reprfb1.repblock1'
    assert layout[f'{p}.rbr_3x3_branch.weight'] == (48, 48, 3, 3) and f'{p}.rbr_3x3_branch.bias' in layout
    assert layout[f'{p}.rbr_3x1_branch.weight'] == (48, 48, 3, 1)
    assert layout[f'{p}.rbr_1x3_branch.weight'] == (48, 48, 1, 3)
    assert layout[f'{p}.rbr_1x1_branch.weight'] == (48, 48, 1, 1)
    assert layout[f'{p}.rbr_1x1_3x3_branch_1x1.weight'] == (96, 48, 1, 1)
    assert layout[f'{p}.rbr_1x1_3x3_branch_3x3.weight'] == (48, 96, 3, 3)
    assert f'{p}.rbr_1x1_3x3_branch_1x1.bias' not in layout and f'{p}.rbr_1x1_3x3_branch_3x3.bias' not in layout
    for edge, mask in EDGE_MASKS.items():
        q = f'{p}.rbr_conv1x1_{edge}_branch'
        expected = {f'{q}.{n}' for n in ('k0', 'b0', 'scale', 'bias', 'mask')}
        assert {k for k in layout if k.startswith(q + '.')} == expected
        assert torch.equal(model.state_dict()[f'{q}.mask'], torch.tensor(mask).expand(48, 1, 3, 3))
    masks = sum(b.numel() for name, b in model.named_buffers() if name.endswith('.mask'))
    assert n_params(model) == 1_237_856 and masks == 12 * 3 * 48 * 9
    assert n_params(model) + masks == 1_253_408


def test_reprfn_activations_are_separate_leaky_relu_modules():
    """Each RepBlock ends in its own LeakyReLU(0.05), and each RepRFB has one more for conv3: 16
    modules, each counted once by the NTIRE counter."""
    acts = [m for m in RepRFN(deploy=True).modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 16 and all(a.negative_slope == SLOPE for a in acts)
    assert isinstance(RepRFN(deploy=True).reprfb1, RepRFB)


# ======================================================================= the released weights

def test_reprfn_official_weights_match_the_reference():
    """``team07_reprfn.pth`` through load_model (auto-detected, no architecture given) reproduces
    the independent reference on photographs to float32 rounding (float64: ~1e-13) and beats
    bicubic by a wide margin."""
    check_official_weights(official_fixture('reprfn.pth'), reprfn_reference, load_official('reprfn.pth'), RepRFN,
                           401_504, {'type': 'RepRFN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 48, 'num_block': 4,
                                     'upscale': 4, 'act_type': 'lrelu', 'esa_channels': 16, 'expand': 2, 'deploy': True})


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_reprfn_official_weights_in_half_precision(dtype, tol):
    """fp16_safe: the [0, 1] features stay far below float16's range (measured on two 32x48 crops:
    2.6e-3 in float16, 2.2e-2 in bfloat16)."""
    check_half_precision(official_fixture('reprfn.pth'), lr_photos()[1], dtype, tol)


def test_reprfn_official_file_is_detected_as_reprfn_only():
    assert [m.arch for m, _ in find_importers(read_checkpoint(official_fixture('reprfn.pth'))[0])] == ['RepRFN']


# ======================================================================= training form

@pytest.mark.parametrize('kwargs', [dict(num_feat=8, num_block=2, esa_channels=4),
                                    dict(num_feat=6, num_block=1, esa_channels=3, expand=3, upscale=2)])
def test_reprfn_training_form_matches_the_official_formula_and_fuses_to_the_official_layout(kwargs):
    """The training form equals the reference written from the official RepBlock (explicit b0
    padding of the edge branches, zero padding of the bias-free 1x1 -> 3x3), and its fused state
    dict, through the deploy reference, gives the same output on every pixel (15x15: the smallest
    valid input). Tolerances relative to the output scale (the randomized 9-branch blocks amplify)."""
    model = randomize(RepRFN(**kwargs), seed=7, std=1.0, fan_in=True).double().eval()
    inputs = [photo('chelsea', h, w, dtype=torch.float64, batch=2) for h, w in ((15, 15), (17, 22))]
    check_reference_and_fusion(model, reprfn_reference, inputs, gone=('branch',))


def test_reprfn_paper_configuration_fuses_exactly_relative_to_its_scale():
    """The full x4 network (C48, 4 blocks) with randomized weights: every one of its twelve RepBlocks,
    fed the features the training form actually produces, fuses to <= 1e-13 of its output scale
    (measured <= 5e-15), although those features reach ~1e7 (nine branches per RepBlock amplify
    random weights). The whole network is compared relative to its output scale (~5e6) at 1e-9
    (measured 4e-11): each ESA gates with a sigmoid of pre-activations of that size, which turns
    float64 rounding of its input into larger relative changes of its output."""
    model = randomize(RepRFN(), seed=3, std=1.0, fan_in=True).double().eval()
    x = photo('coffee', 15, 21, dtype=torch.float64)
    fused = rtsr_arch.reparameterize(copy.deepcopy(model))
    inputs = {}
    blocks = {n: m for n, m in model.named_modules() if type(m).__name__ == 'RepRFNBlock'}
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: inputs.__setitem__(n, (i[0], o)))
               for n, m in blocks.items()]
    with torch.no_grad():
        y = model(x)
        y_fused = fused(x)
    for handle in handles:
        handle.remove()
    assert len(inputs) == 12
    worst = 0.0
    with torch.no_grad():
        for name, (t, out) in inputs.items():
            worst = max(worst, (fused.get_submodule(name)(t) - out).abs().max().item() / out.abs().max().item())
    err = (y_fused - y).abs().max().item() / y.abs().max().item()
    print(f'RepRFN x4 paper configuration: RepBlocks relative fusion error <= {worst:.2g}; network output scale '
          f'{y.abs().max().item():.3g}, relative error {err:.2g}')
    assert worst <= 1e-13 and err <= 1e-9


def test_reprfn_training_form_learns_every_branch():
    """Gradients reach every branch (masks excluded: buffers)."""
    model = randomize(RepRFN(num_feat=6, num_block=1, esa_channels=3), seed=2).train()
    x = photo('astronaut', 16, 16, batch=2)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    assert not any(name.endswith('mask') for name, _ in model.named_parameters())


# ======================================================================= importer

def test_reprfn_importer_reads_training_and_deploy_forms():
    model = RepRFN(num_feat=8, num_block=3, esa_channels=4, expand=3, upscale=3)
    result = import_official_reprfn(model.state_dict(), {})
    assert result.assumed == ('act_type',) and result.network_opt == model.network_opt
    result = import_official_reprfn(rtsr_arch.reparameterize(model).state_dict(), {})
    assert result.assumed == ('expand', 'act_type')
    assert result.network_opt == {**model.network_opt, 'expand': 2, 'deploy': True}
    prelu = RepRFN(num_feat=6, num_block=1, esa_channels=3, act_type='prelu', deploy=True)
    assert import_official_reprfn(prelu.state_dict(), {}).network_opt['act_type'] == 'prelu'


# ======================================================================= counts of the training form

def test_reprfn_training_form_counts():
    """The NTIRE 2023 ESR counter on the training form (not published): every branch conv is a
    module call; the edge branches' depthwise convs are functional (not counted), as officially."""
    counts = count_ntire_esr(RepRFN())
    assert (counts.params, counts.num_conv) == (1_237_856, 99)
    assert round(counts.flops / 1e9, 2) == 74.15 and round(counts.activations / 1e6, 2) == 308.37


# ======================================================================= recipe

def test_reprfn_recipe_follows_the_report():
    """NTIRE 2023 ESR report §4.16: DIV2K + Flickr2K bicubic x4, HR 192, batch 64, Adam (0.9, 0.999,
    1e-8), lr 5e-4 halved every 100 epochs over 1001 epochs (53 iterations an epoch), 0.9 Charbonnier
    (eps^2 = 1e-6) + 0.1 L1 of the FFTs."""
    opt = load_recipe('RepRFN', 'train_RepRFN_x4_scratch_Charbonnier_FFT')
    train = opt['datasets']['train']
    assert train['type'] == 'PairedImageDataset' and 'DF2K' in train['dataroot_gt'] and 'X4' in train['dataroot_lq']
    assert train['gt_size'] == 192 and train['batch_size_per_gpu'] * max(1, opt['num_gpu']) == 64
    assert train['use_hflip'] and train['use_rot']
    optim = opt['train']['optim_g']
    assert (optim['type'], optim['lr'], optim['betas'], optim['eps']) == ('Adam', 5e-4, [0.9, 0.999], 1e-8)
    sched = opt['train']['scheduler']
    assert sched['gamma'] == 0.5 and sched['milestones'] == [5300 * k for k in range(1, 11)]
    assert opt['train']['total_iter'] == 1001 * 53
    losses = {entry['type']: entry for entry in opt['train']['losses']}
    assert losses['CharbonnierLoss']['loss_weight'] == 0.9 and losses['CharbonnierLoss']['eps'] == 1e-6
    assert losses['FFTLoss']['loss_weight'] == 0.1
    model = check_recipe_network(opt['network_g'], RepRFN, params=1_237_856)
    assert not model.deploy
    assert n_params(rtsr_arch.reparameterize(model)) == 401_504
