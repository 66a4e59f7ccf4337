"""LRSRN and RT4KSR: fused == training on every pixel, deploy checkpoints load strictly, the papers'
parameter counts and state-dict layouts, RT4KSR's high-frequency branch, and argument errors."""
import copy
import re
import zlib

import pytest
import torch
from torch import nn

import rtsr_arch
from conftest import photo, randomize
from rtsr_arch.archs.layers import ACTIVATIONS, GaussianBlur
from rtsr_arch.archs.lrsrn_arch import LRSRN, LRSRN_VARIANTS
from rtsr_arch.archs.rep import ReparamBlock
from rtsr_arch.archs.rt4ksr_arch import RT4KSR, RT4KSR_SIZES

pytestmark = pytest.mark.usefixtures('torch_single_thread')

TOL64 = 1e-10  # absolute, float64 (weights drawn with fan-in scaling keep outputs O(1))
TOL32 = 1e-5  # relative to max |y|, float32


def n_params(model):
    return sum(p.numel() for p in model.parameters())  # parameters() de-duplicates shared tensors


def seed_of(*key):
    return zlib.crc32(repr(key).encode())


def check_fused(model, x):
    """Reparameterize a copy of ``model`` (random weights, eval) and compare on ``x``, all pixels.

    Returns the training-form output and the fused model."""
    model.eval()
    fused = rtsr_arch.reparameterize(copy.deepcopy(model))
    blocks = [m for m in fused.modules() if isinstance(m, ReparamBlock)]
    assert blocks and all(m.deploy for m in blocks)
    with torch.no_grad():
        y, y_fused = model(x), fused(x)
    assert y.shape == y_fused.shape
    err = (y - y_fused).abs().max().item()
    scale = y.abs().max().item()
    if x.dtype == torch.float64:
        assert err <= TOL64, f'float64: max |diff| {err:.3g}'
    else:
        assert err <= TOL32 * scale, f'float32: max |diff| {err:.3g} vs scale {scale:.3g}'
    return y, fused


def check_deploy_build(fused, build_deploy, x):
    """A network built with deploy=True loads the fused state dict strictly and gives the same output."""
    built = build_deploy().to(x.dtype).eval()
    sd = fused.state_dict()
    assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in sd.items()]
    built.load_state_dict(sd, strict=True)
    with torch.no_grad():
        assert torch.equal(built(x), fused(x))
    assert rtsr_arch.reparameterize(built) is built
    return built


def assert_not_clamped(y):
    assert (y < 0).any() and (y > 1).any(), (y.min().item(), y.max().item())


def assert_lists_names(excinfo, names):
    msg = str(excinfo.value)
    assert '\n' not in msg
    for name in names:
        assert re.search(rf'(?<![\w]){re.escape(name)}(?![\w])', msg), f'{name!r} missing from: {msg}'


# ======================================================================= LRSRN

SMALL_LRSRN = dict(num_feat=6, num_block=2, feature_size=10)


@pytest.mark.parametrize('act', ['relu', 'gelu', 'prelu', 'linear'])
@pytest.mark.parametrize('upscale', [2, 3, 4])
@pytest.mark.parametrize('variant', list(LRSRN_VARIANTS))
def test_lrsrn_fused_equals_training(variant, upscale, act):
    kwargs = dict(SMALL_LRSRN, upscale=upscale, act_type=act, variant=variant)
    model = randomize(LRSRN(**kwargs), seed=seed_of(variant, upscale, act), std=1.0, fan_in=True)
    for dtype in (torch.float64, torch.float32):
        x = photo('astronaut', 7, 9, dtype=dtype, batch=2)
        y, fused = check_fused(model.to(dtype), x)
        assert y.shape == (2, 3, 7 * upscale, 9 * upscale)
        assert_not_clamped(y)
        check_deploy_build(fused, lambda: LRSRN(**kwargs, deploy=True), x)


LRSRN_PAPER = [  # (kwargs, deploy params, unique train params): ARCHITECTURES.md B.1
    (dict(upscale=2, num_feat=32, num_block=4, variant='plain'), 41_356, 333_196),
    (dict(upscale=2, num_feat=32, num_block=4, variant='blockv2'), 41_356, 421_816),
    (dict(upscale=3, num_feat=32, num_block=4, variant='blockv2'), 45_691, 426_166),
    (dict(upscale=3, num_feat=48, num_block=4, variant='blockv2'), 96_171, 631_542),
    (dict(upscale=4, num_feat=64, num_block=10, variant='blockv2', act_type='gelu'), 398_768, 1_828_640),
]


@pytest.mark.parametrize('kwargs, deploy_count, train_count', LRSRN_PAPER,
                         ids=['x2_m4c32_plain', 'x2_m4c32_blockv2', 'x3_m4c32_blockv2', 'x3_m4c48_blockv2',
                              'x4_m10c64_gelu_blockv2'])
def test_lrsrn_paper_configs(kwargs, deploy_count, train_count):
    model = LRSRN(**kwargs)  # feature_size 256, relu by default: the paper's defaults
    assert n_params(model) == train_count
    assert n_params(LRSRN(**kwargs, deploy=True)) == deploy_count
    randomize(model, seed=seed_of(kwargs), std=1.0, fan_in=True)
    for dtype in (torch.float64, torch.float32):
        x = photo('rocket', 6, 5, dtype=dtype)
        y, fused = check_fused(model.to(dtype), x)
        assert n_params(fused) == deploy_count
        assert y.shape[-2:] == (6 * kwargs['upscale'], 5 * kwargs['upscale'])
    check_deploy_build(fused, lambda: LRSRN(**kwargs, deploy=True), x)


@pytest.mark.parametrize('variant', sorted(LRSRN_VARIANTS))
def test_lrsrn_bias_free_fuses_exactly_and_loads_from_biased_weights(variant):
    """CASR's final stage (AIS 2024 RTSR report §3.4): no bias anywhere, before and after fusion;
    a biased checkpoint loads non-strictly (its biases dropped, every weight kept)."""
    kwargs = dict(num_feat=8, num_block=2, feature_size=16, upscale=4, act_type='gelu', variant=variant)
    biased, free = LRSRN(**kwargs), LRSRN(**kwargs, bias=False)
    randomize(biased, fan_in=True)
    result = free.load_state_dict(biased.state_dict(), strict=False)
    assert not result.missing_keys and result.unexpected_keys and all(k.endswith('.bias') for k in result.unexpected_keys)
    assert not any(n.endswith('bias') for n, _ in free.named_parameters())
    assert all(torch.equal(p, biased.state_dict()[n]) for n, p in free.state_dict().items())
    x = photo('coffee', 20, 24, dtype=torch.float64)
    free = free.double().eval()
    with torch.no_grad():
        y = free(x)
        fused = rtsr_arch.reparameterize(copy.deepcopy(free))
        assert all(m.bias is None for m in fused.modules() if isinstance(m, nn.Conv2d))
        assert (fused(x) - y).abs().max() <= 1e-10 * y.abs().max()
        deployed = LRSRN(**kwargs, bias=False, deploy=True).double()
        deployed.load_state_dict(fused.state_dict())
        assert torch.equal(deployed(x), fused(x))


def test_lrsrn_state_dict_layout_is_official():
    """ARCHITECTURES.md B.1 (minus the w0/b0/w1/b1 alias keys, handled by the checkpoint importer)."""
    def layout(model):
        return {k.rsplit('.', 1)[0] for k in model.state_dict()}

    backbone_train = {f'backbone.{i}.{c}' for i in range(4) for c in ('conv0', 'conv1')}
    assert layout(LRSRN(variant='plain')) == {'head.conv3x3', 'transition.0.conv3x3'} | backbone_train
    assert layout(LRSRN(variant='blockv2')) == backbone_train | {
        f'{m}.{c}' for m in ('head', 'transition.0') for c in ('conv0', 'conv1', 'conv1_res')}
    deploy = {'head.conv3x3', 'transition.0.conv3x3'} | {f'backbone.{i}.conv3x3' for i in range(4)}
    for variant in LRSRN_VARIANTS:
        assert layout(LRSRN(variant=variant, deploy=True)) == deploy
        assert layout(rtsr_arch.reparameterize(LRSRN(variant=variant))) == deploy
    prelu = layout(LRSRN(act_type='prelu', deploy=True))
    assert prelu == deploy | {'head.act', 'backbone.0.act', 'backbone.1.act', 'backbone.2.act', 'backbone.3.act'}


def test_lrsrn_structure_matches_paper_equations():
    """y0 = head(x); y = transition(backbone(y0) + y0); PixelShuffle — recomputed by hand."""
    model = randomize(LRSRN(**SMALL_LRSRN, upscale=3, variant='blockv2', act_type='prelu'), seed=5,
                      std=1.0, fan_in=True).double().eval()
    x = photo('chelsea', 5, 6, dtype=torch.float64)
    with torch.no_grad():
        y0 = model.head.act(model.head.forward_train(x))
        y = y0
        for block in model.backbone:
            y = block.act(block.conv1(block.conv0(y)) + y)
        t = model.transition[0]
        out = t.conv1(t.conv0(y + y0)) + t.conv1_res(y + y0)
        ref = nn.functional.pixel_shuffle(out, 3)
        assert (model(x) - ref).abs().max() <= TOL64
    assert isinstance(model.transition[0].act, nn.Identity)  # the transition is linear


# ======================================================================= RT4KSR

@pytest.mark.parametrize('hf_gate', [False, True], ids=['nohf', 'hf'])
@pytest.mark.parametrize('upscale', [2, 3, 4])
@pytest.mark.parametrize('size', list(RT4KSR_SIZES))
def test_rt4ksr_fused_equals_training(size, upscale, hf_gate):
    kwargs = dict(size=size, upscale=upscale, hf_gate=hf_gate)
    model = randomize(RT4KSR(**kwargs), seed=seed_of(size, upscale, hf_gate), std=1.0, fan_in=True)
    for dtype in (torch.float64, torch.float32):
        x = photo('coffee', 6, 10, dtype=dtype, batch=2)
        y, fused = check_fused(model.to(dtype), x)
        assert y.shape == (2, 3, 6 * upscale, 10 * upscale)
        assert_not_clamped(y)
        check_deploy_build(fused, lambda: RT4KSR(**kwargs, deploy=True), x)


@pytest.mark.parametrize('upscale, deploy_count, train_count', [(2, 44_521, 152_233), (3, 57_541, 165_253)])
def test_rt4ksr_paper_parameter_counts(upscale, deploy_count, train_count):
    """ARCHITECTURES.md B.2: the released S model (C24, B4); deploy still holds head, hfb and gamma."""
    for model in (RT4KSR(upscale=upscale), RT4KSR(upscale=upscale, size='S')):
        assert n_params(model) == train_count
        assert n_params(rtsr_arch.reparameterize(model)) == deploy_count
    assert n_params(RT4KSR(upscale=upscale, deploy=True)) == deploy_count
    assert n_params(RT4KSR(upscale=upscale, hf_gate=True, deploy=True)) == deploy_count


def test_rt4ksr_state_dict_layout_is_official():
    """ARCHITECTURES.md B.2 key layout (without DataParallel's ``module.``); no blur kernel."""
    rrrb_train = ('expand_conv', 'fea_conv', 'reduce_conv')
    train = {'gamma', 'head.0', 'tail.0', 'upsample.0'} | {f'hfb.0.{c}' for c in rrrb_train}
    train |= {f'body.{i}.{m}' for i in range(4) for m in ('norm',) + tuple(f'conv1.{c}' for c in rrrb_train)}
    deploy = {'gamma', 'head.0', 'tail.0', 'upsample.0', 'hfb.0.rep_conv', 'tail.1.rep_conv'}
    deploy |= {f'body.{i}.{m}' for i in range(4) for m in ('norm', 'conv1.rep_conv')}
    train |= {f'tail.1.{c}' for c in rrrb_train}

    def layout(model):
        return {k.rsplit('.', 1)[0] if k != 'gamma' else k for k in model.state_dict()}

    assert layout(RT4KSR()) == train
    assert layout(RT4KSR(deploy=True)) == deploy
    assert layout(rtsr_arch.reparameterize(RT4KSR())) == deploy
    sd = RT4KSR().state_dict()
    assert sd['head.0.weight'].shape == (24, 12, 3, 3) and sd['upsample.0.weight'].shape == (48, 24, 3, 3)
    assert RT4KSR(upscale=3).state_dict()['upsample.0.weight'].shape == (108, 24, 3, 3)
    assert sd['gamma'].shape == (1,)


def _hf_probe(model):
    calls = []
    handles = [m.register_forward_hook(lambda mod, inp, out: calls.append(type(mod).__name__))
               for m in (model.hfb, model.blur)]
    return calls, handles


@pytest.mark.parametrize('deploy', [False, True])
def test_rt4ksr_without_hf_gate_skips_the_hf_branch(deploy):
    model = randomize(RT4KSR(hf_gate=False, deploy=deploy), seed=31, std=1.0, fan_in=True).train()
    calls, _ = _hf_probe(model)
    x = photo('astronaut', 8, 12)
    y = model(x)
    (y * y).mean().backward()
    assert calls == []
    for name, p in model.named_parameters():
        if name.startswith('hfb.') or name == 'gamma':
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().max() > 0, name
    # and its weights do not matter
    with torch.no_grad():
        before = model(x)
        for p in list(model.hfb.parameters()) + [model.gamma]:
            p.add_(1.0)
        assert torch.equal(model(x), before)


@pytest.mark.parametrize('deploy', [False, True])
def test_rt4ksr_with_hf_gate_uses_the_hf_branch(deploy):
    model = randomize(RT4KSR(hf_gate=True, deploy=deploy), seed=32, std=1.0, fan_in=True).train()
    calls, _ = _hf_probe(model)
    x = photo('astronaut', 8, 12)
    y = model(x)
    (y * y).mean().backward()
    assert sorted(calls) == ['GaussianBlur', 'Sequential']
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    with torch.no_grad():
        before = model(x)
        next(model.hfb.parameters()).add_(0.5)
        assert (model(x) - before).abs().max() > 1e-3


def test_rt4ksr_hf_gate_formula_with_torchvision_blur():
    """tail(gamma * body(head(PU(x))) + hfb(head(PU(x - torchvision_blur(x))))) -> conv -> PS."""
    from torchvision.transforms import GaussianBlur as TVBlur

    model = randomize(RT4KSR(hf_gate=True, upscale=3), seed=33, std=1.0, fan_in=True).eval()
    x = photo('chelsea', 10, 14, batch=2)
    with torch.no_grad():
        down = nn.functional.pixel_unshuffle
        deep = model.body(model.head(down(x, 2)))
        hf = model.hfb(model.head(down(x - TVBlur(5, sigma=1.0)(x), 2)))
        ref = model.upsample(model.tail(model.gamma * deep + hf))
        y = model(x)
    assert ref.shape == (2, 3, 30, 42)
    assert (y - ref).abs().max() <= 1e-5 * y.abs().max()


@pytest.mark.parametrize('hw', [(7, 8), (8, 7), (5, 5)])
def test_rt4ksr_odd_input_raises_one_line_error(hw):
    model = RT4KSR()
    with pytest.raises(ValueError) as excinfo:
        model(torch.rand(1, 3, *hw))
    msg = str(excinfo.value)
    assert '\n' not in msg and ('even' in msg or 'divisible by 2' in msg), msg
    assert f'{hw[0]}x{hw[1]}' in msg


@pytest.mark.parametrize('size', list(RT4KSR_SIZES))
def test_rt4ksr_sizes(size):
    num_block, num_feat = RT4KSR_SIZES[size]
    model = RT4KSR(size=size)
    assert len(model.body) == num_block and model.head[0].out_channels == num_feat
    assert model.tail[1].expand_conv.out_channels == 2 * num_feat


def test_rt4ksr_size_table():
    assert RT4KSR_SIZES == {'XXS': (2, 24), 'XS': (2, 32), 'S': (4, 24), 'M': (4, 32),
                            'L': (6, 24), 'XL': (6, 32), 'XXL': (8, 24), 'XXXL': (8, 32)}
    xl = RT4KSR(size='XL')
    assert len(xl.body) == 6 and xl.head[0].out_channels == 32
    default = RT4KSR()
    assert len(default.body) == 4 and default.head[0].out_channels == 24


@pytest.mark.parametrize('build, names', [
    (lambda: LRSRN(variant='plainv3'), LRSRN_VARIANTS),
    (lambda: LRSRN(act_type='swish'), ACTIVATIONS),
    (lambda: LRSRN(upscale=5), None),
    (lambda: RT4KSR(size='XXXXL'), RT4KSR_SIZES),
    (lambda: RT4KSR(act_type='swish'), ACTIVATIONS),
    (lambda: RT4KSR(size='XL', num_feat=32), None),
    (lambda: RT4KSR(size='S', num_block=4), None),
    (lambda: RT4KSR(upscale=8), None),
], ids=['lrsrn_variant', 'lrsrn_act', 'lrsrn_upscale', 'rt4ksr_size', 'rt4ksr_act', 'rt4ksr_size_vs_feat',
        'rt4ksr_size_vs_block', 'rt4ksr_upscale'])
def test_bad_options_raise_and_list_valid_names(build, names):
    with pytest.raises(ValueError) as excinfo:
        build()
    if names is not None:
        assert_lists_names(excinfo, names)


# ======================================================================= GaussianBlur

def test_gaussian_blur_equals_torchvision_on_a_photo():
    from torchvision.transforms import GaussianBlur as TVBlur

    x = photo('astronaut', 64, 80, batch=2)
    ours = GaussianBlur(5, 1.0)
    y, ref = ours(x), TVBlur(5, sigma=1.0)(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert (y - ref).abs().max() <= 1e-6
    assert (y - x).abs().max() > 0.05  # it really blurs
    assert torch.equal(ours.high_frequencies(x), x - y)
    assert list(ours.state_dict()) == []  # the kernel is not checkpointed
    # float64 input stays float64 and agrees too
    x64 = x.double()
    assert ours(x64).dtype == torch.float64 and (ours(x64) - ref.double()).abs().max() <= 1e-6
