"""The reparameterizable block library: training form == fused form on every pixel, borders included.

Every block is checked on random weights (biases, BN statistics, PReLU slopes included) and random
inputs of odd and degenerate sizes (1x1, 2x2, 1xN: every pixel is a border pixel) in float64
(max |diff| <= 1e-10) and float32 (max |diff| <= 1e-5 of the output scale). Negative controls show
that the comparison catches a zero-padded (instead of bias-padded) RRRB and a wrong merge.
"""
import copy
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import rtsr_arch
from conftest import photo, randomize
from rtsr_arch.archs.layers import ACTIVATIONS
from rtsr_arch.archs.rep import ECB, RRRB, CollapsibleBlock, RepVGGBlock, ReparamBlock, reparameterize
from rtsr_arch.archs.rep.fusion import fuse_1x1_kxk, fuse_kxk_1x1

pytestmark = pytest.mark.usefixtures('torch_single_thread')

TOL64 = 1e-10  # absolute, float64
TOL32 = 1e-5  # relative to the output scale, float32
SIZES = [(7, 9), (3, 5), (1, 1), (2, 2), (1, 7), (6, 1), (2, 3)]  # the last five: every pixel is border

# name -> factory(act_type) of a small block, with its input channel count
CASES = {
    'collapsible_idt': (5, lambda act: CollapsibleBlock(5, 5, 12, act)),
    'collapsible_res': (5, lambda act: CollapsibleBlock(5, 7, 12, act, res_conv=True)),
    'collapsible_nores': (5, lambda act: CollapsibleBlock(5, 3, 12, act, res_conv=False)),
    'collapsible_noidt_res': (5, lambda act: CollapsibleBlock(5, 5, 12, act, with_idt=False, res_conv=True)),
    'collapsible_noidt_nores': (5, lambda act: CollapsibleBlock(5, 5, 12, act, with_idt=False, res_conv=False)),
    'rrrb_2': (6, lambda act: RRRB(6, ratio=2, act_type=act)),
    'rrrb_1.5': (6, lambda act: RRRB(6, ratio=1.5, act_type=act)),
    'repvgg_same': (5, lambda act: RepVGGBlock(5, 5, act)),
    'repvgg_diff': (5, lambda act: RepVGGBlock(5, 8, act)),
    'ecb_idt_dm1': (6, lambda act: ECB(6, 6, 1.0, act, with_idt=True)),
    'ecb_idt_dm2': (6, lambda act: ECB(6, 6, 2.0, act, with_idt=True)),
    'ecb_noidt_dm2': (6, lambda act: ECB(6, 6, 2.0, act, with_idt=False)),
    'ecb_diff_dm2': (4, lambda act: ECB(4, 7, 2.0, act, with_idt=True)),  # identity impossible: dropped
}
DEPLOY_KEYS = {CollapsibleBlock: 'conv3x3', RRRB: 'rep_conv', RepVGGBlock: 'rbr_reparam', ECB: 'rbr_reparam'}


def linear_part(block, x):
    """The block output before its activation, in whichever form the block currently is."""
    return getattr(block, block.deploy_key)(x) if block.deploy else block.forward_train(x)


def assert_fused_close(y, y_fused, scale=None):
    """float64: max |diff| <= 1e-10; float32: max |diff| <= 1e-5 * scale (default max |y|)."""
    assert y.shape == y_fused.shape and y.dtype == y_fused.dtype
    err = (y - y_fused).abs().max().item()
    if y.dtype == torch.float64:
        assert err <= TOL64, f'float64 fused vs training: max |diff| {err:.3g} > {TOL64}'
    else:
        scale = y.abs().max().item() if scale is None else scale
        assert err <= TOL32 * scale, f'float32 fused vs training: max |diff| {err:.3g} > {TOL32} * {scale:.3g}'


def fused_copy(block):
    fused = reparameterize(copy.deepcopy(block))
    assert fused.deploy and isinstance(getattr(fused, fused.deploy_key), nn.Conv2d)
    return fused


def check_fused_equals_training(block, x):
    """Compare a training-form block (eval mode) with its fused copy on ``x``, all pixels."""
    block.eval()
    fused = fused_copy(block).eval()
    with torch.no_grad():
        lin, lin_fused = linear_part(block, x), linear_part(fused, x)
        y, y_fused = block(x), fused(x)
    assert_fused_close(lin, lin_fused)
    # after the activation, relative to the block's output scale (before or after it)
    scale = max(y.abs().max().item(), lin.abs().max().item())
    assert_fused_close(y, y_fused, scale)
    return y


def random_input(batch, channels, h, w, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, h, w, generator=gen, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------- fused == training, every block

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
@pytest.mark.parametrize('act', list(ACTIVATIONS))
@pytest.mark.parametrize('case', list(CASES))
def test_fused_equals_training(case, act, dtype):
    in_ch, factory = CASES[case]
    block = randomize(factory(act), seed=zlib.crc32(f'{case}/{act}'.encode())).to(dtype)
    for i, (h, w) in enumerate(SIZES):
        x = random_input(2, in_ch, h, w, dtype, seed=i)
        y = check_fused_equals_training(block, x)
        assert y.shape[-2:] == (h, w)
    assert not block.deploy  # the original was not touched by fusing its copy


@pytest.mark.parametrize('case', list(CASES))
def test_fused_equals_training_on_photo(case):
    in_ch, factory = CASES[case]
    img = photo('coffee', 11, 13, dtype=torch.float64, batch=2)
    x = img.repeat(1, (in_ch + 2) // 3, 1, 1)[:, :in_ch]
    block = randomize(factory('prelu'), seed=7).double()
    check_fused_equals_training(block, x)
    check_fused_equals_training(block.float(), x.float())


def test_fusion_is_not_trivially_equal():
    """The branches are really different convs: dropping any one changes the output."""
    block = randomize(ECB(4, 4, 2.0, 'linear', with_idt=True), seed=3).double().eval()
    x = random_input(1, 4, 7, 9, torch.float64, seed=0)
    y = block.forward_train(x)
    for name in ('conv3x3', 'conv1x1_3x3', 'conv1x1_sbx', 'conv1x1_sby', 'conv1x1_lpl'):
        ablated = copy.deepcopy(block)
        for p in getattr(ablated, name).parameters():
            p.data.zero_()
        assert (ablated.forward_train(x) - y).abs().max() > 1e-3, name


# ---------------------------------------------------------------- training forms == the papers' formulas

def pad_with(t, value):
    """Pad by one pixel with the per-channel ``value`` (FMEN's ``pad_tensor`` / ECB's b0 padding)."""
    v = value.view(1, -1, 1, 1)
    return F.pad(t - v, [1, 1, 1, 1]) + v


def test_rrrb_training_form_matches_fmen_formula():
    """ARCHITECTURES.md A.3: t = W0 x + b0; u = K1 * pad_b0(t) + b1 + t; y = W2 u + b2 + x."""
    block = randomize(RRRB(4, ratio=2), seed=11).double()
    x = random_input(2, 4, 5, 6, torch.float64, seed=1)
    e, f, r = block.expand_conv, block.fea_conv, block.reduce_conv
    t = F.conv2d(x, e.weight, e.bias)
    u = F.conv2d(pad_with(t, e.bias), f.weight, f.bias) + t
    ref = F.conv2d(u, r.weight, r.bias) + x
    assert (block.forward_train(x) - ref).abs().max() <= TOL64
    assert e.weight.shape == (8, 4, 1, 1) and f.weight.shape == (8, 8, 3, 3) and r.weight.shape == (4, 8, 1, 1)


def test_ecb_training_form_matches_ecbsr_formula():
    """ARCHITECTURES.md A.2: 3x3 + (1x1 -> b0-pad -> 3x3) + 3 x (1x1 -> b0-pad -> scale*mask) [+ x]."""
    masks = {'sbx': [[1, 0, -1], [2, 0, -2], [1, 0, -1]], 'sby': [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
             'lpl': [[0, 1, 0], [1, -4, 1], [0, 1, 0]]}
    block = randomize(ECB(3, 3, 2.0, 'linear', with_idt=True), seed=12).double()
    x = random_input(1, 3, 6, 5, torch.float64, seed=2)
    ref = block.conv3x3(x) + x
    seq = block.conv1x1_3x3
    assert seq.k1.shape == (3, 6, 3, 3)
    ref = ref + F.conv2d(pad_with(F.conv2d(x, seq.k0, seq.b0), seq.b0), seq.k1, seq.b1)
    for name, mask in masks.items():
        br = getattr(block, f'conv1x1_{name}')
        mask = torch.tensor(mask, dtype=torch.float64).expand(3, 1, 3, 3)
        assert torch.equal(br.mask, mask), name
        t = pad_with(F.conv2d(x, br.k0, br.b0), br.b0)
        ref = ref + F.conv2d(t, br.scale * mask, br.bias, groups=3)
    assert (block.forward_train(x) - ref).abs().max() <= TOL64


def test_collapsible_training_form_matches_lrsrn_formula():
    """ARCHITECTURES.md A.1: conv1(conv0(x)) with no activation between, + x or + conv1_res(x)."""
    x = random_input(1, 4, 5, 5, torch.float64, seed=3)
    idt = randomize(CollapsibleBlock(4, 4, 9), seed=13).double()
    assert (idt.forward_train(x) - (idt.conv1(idt.conv0(x)) + x)).abs().max() <= TOL64
    assert idt.conv0.weight.shape == (9, 4, 3, 3) and not hasattr(idt, 'conv1_res')
    res = randomize(CollapsibleBlock(4, 6, 9), seed=14).double()
    assert (res.forward_train(x) - (res.conv1(res.conv0(x)) + res.conv1_res(x))).abs().max() <= TOL64
    nores = randomize(CollapsibleBlock(4, 6, 9, res_conv=False), seed=15).double()
    assert (nores.forward_train(x) - nores.conv1(nores.conv0(x))).abs().max() <= TOL64
    assert not hasattr(nores, 'conv1_res')


def test_repvgg_training_form_matches_eval_bn_formula():
    """ARCHITECTURES.md A.6: BN(conv3x3 x) + BN(conv1x1 x) + BN(x), BN with running statistics."""
    block = randomize(RepVGGBlock(4, 4, 'linear'), seed=16).double().eval()
    x = random_input(2, 4, 5, 4, torch.float64, seed=4)

    def bn(t, m):
        return (t - m.running_mean.view(1, -1, 1, 1)) / (m.running_var.view(1, -1, 1, 1) + m.eps).sqrt() \
            * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)

    ref = bn(F.conv2d(x, block.rbr_dense.conv.weight, padding=1), block.rbr_dense.bn) \
        + bn(F.conv2d(x, block.rbr_1x1.conv.weight), block.rbr_1x1.bn) + bn(x, block.rbr_identity)
    assert (block.forward_train(x) - ref).abs().max() <= TOL64
    assert RepVGGBlock(4, 6).rbr_identity is None


# ---------------------------------------------------------------- negative controls

class ZeroPaddedRRRB(RRRB):
    """A deliberately wrong RRRB: the expanded map is zero-padded instead of bias-padded."""

    def forward_train(self, x):
        t = F.conv2d(x, self.expand_conv.weight, self.expand_conv.bias)
        u = self.fea_conv(F.pad(t, [1, 1, 1, 1])) + t
        return self.reduce_conv(u) + x


def test_negative_control_zero_padding_breaks_the_border():
    block = randomize(ZeroPaddedRRRB(6, ratio=2), seed=21).double().eval()
    x = random_input(2, 6, 7, 9, torch.float64, seed=5)
    fused = fused_copy(block)
    with torch.no_grad():
        diff = (block(x) - fused(x)).abs()
    # the interior agrees (same merge math) ...
    assert diff[..., 1:-1, 1:-1].max() <= TOL64
    # ... the 1-pixel border does not, by orders of magnitude more than the tolerance
    assert diff.max() > 1e6 * TOL64
    assert diff.max() > 1e-2 * block(x).abs().max()
    with pytest.raises(AssertionError):
        check_fused_equals_training(block, x)
    with pytest.raises(AssertionError):
        check_fused_equals_training(block.float(), x.float())


class NoInnerIdentityRRRB(RRRB):
    """A deliberately wrong merge: forgets RRRB's inner identity."""

    def fuse(self):
        w, b = fuse_1x1_kxk(self.expand_conv.weight, self.expand_conv.bias, self.fea_conv.weight, self.fea_conv.bias)
        w, b = fuse_kxk_1x1(w, b, self.reduce_conv.weight, self.reduce_conv.bias)
        w = w.clone()
        w[range(self.out_channels), range(self.out_channels), 1, 1] += 1
        return w, b


def test_negative_control_wrong_merge_is_caught():
    block = randomize(NoInnerIdentityRRRB(4), seed=22).double()
    with pytest.raises(AssertionError):
        check_fused_equals_training(block, random_input(1, 4, 5, 5, torch.float64, seed=6))


# ---------------------------------------------------------------- the deploy switch

@pytest.mark.parametrize('case', list(CASES))
def test_reparameterize_is_idempotent(case):
    in_ch, factory = CASES[case]
    model = nn.Sequential(randomize(factory('prelu'), seed=1), nn.Identity()).double().eval()
    assert rtsr_arch.reparameterize(model) is model
    block = model[0]
    assert block.deploy
    params = {k: v for k, v in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = random_input(1, in_ch, 5, 7, torch.float64, seed=0)
    y = model(x)
    assert rtsr_arch.reparameterize(model) is model
    assert rtsr_arch.reparameterize(block) is block
    assert {k: v for k, v in model.named_parameters()}.keys() == params.keys()
    for k, p in model.named_parameters():
        assert p is params[k], k  # the same Parameter objects: nothing rebuilt
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert torch.equal(model(x), y)


@pytest.mark.parametrize('act', ['linear', 'prelu'])
@pytest.mark.parametrize('case', list(CASES))
def test_deploy_construction_matches_reparameterized_layout(case, act):
    in_ch, factory = CASES[case]
    train = randomize(factory(act), seed=2).double().eval()
    fused = fused_copy(train)
    kwargs = {'deploy': True}
    cls = type(train)
    if cls is CollapsibleBlock:
        built = cls(train.in_channels, train.out_channels, 12, act, with_idt=train.with_idt, **kwargs)
    elif cls is RRRB:
        built = cls(train.in_channels, act_type=act, **kwargs)
    elif cls is RepVGGBlock:
        built = cls(train.in_channels, train.out_channels, act, **kwargs)
    else:
        built = cls(train.in_channels, train.out_channels, 2.0, act, with_idt=train.with_idt, **kwargs)
    built = built.double().eval()
    sd_fused, sd_built = fused.state_dict(), built.state_dict()
    assert list(sd_fused) == list(sd_built)
    assert all(sd_fused[k].shape == sd_built[k].shape for k in sd_fused)
    # the official deploy layout: one conv under the paper's key (+ the PReLU slopes)
    key = DEPLOY_KEYS[cls]
    expected = {f'{key}.weight', f'{key}.bias'} | ({'act.weight'} if act == 'prelu' else set())
    assert set(sd_built) == expected
    assert sd_built[f'{key}.weight'].shape == (train.out_channels, train.in_channels, 3, 3)
    built.load_state_dict(sd_fused, strict=True)
    x = random_input(2, in_ch, 4, 5, torch.float64, seed=1)
    with torch.no_grad():
        assert torch.equal(built(x), fused(x))
        assert_fused_close(train(x), built(x))
    assert rtsr_arch.reparameterize(built) is built and set(built.state_dict()) == expected


def test_deploy_keys_are_the_official_ones():
    assert CollapsibleBlock.deploy_key == 'conv3x3'
    assert RRRB.deploy_key == 'rep_conv'
    assert RepVGGBlock.deploy_key == 'rbr_reparam'
    assert ECB.deploy_key == 'rbr_reparam'
    for cls in DEPLOY_KEYS:
        assert issubclass(cls, ReparamBlock)


def test_training_layout_uses_official_names():
    assert {k.split('.')[0] for k in RRRB(4).state_dict()} == {'expand_conv', 'fea_conv', 'reduce_conv'}
    assert {k.split('.')[0] for k in ECB(4, 4, 2.0).state_dict()} == {
        'conv3x3', 'conv1x1_3x3', 'conv1x1_sbx', 'conv1x1_sby', 'conv1x1_lpl', 'act'}
    assert {k.split('.')[0] for k in RepVGGBlock(4, 4).state_dict()} == {'rbr_dense', 'rbr_1x1', 'rbr_identity'}
    assert set(CollapsibleBlock(3, 8, 16).state_dict()) == {
        'conv0.weight', 'conv0.bias', 'conv1.weight', 'conv1.bias', 'conv1_res.weight', 'conv1_res.bias'}


@pytest.mark.parametrize('case', list(CASES))
def test_gradients_flow_through_training_form(case):
    in_ch, factory = CASES[case]
    block = randomize(factory('prelu'), seed=3).double().train()
    x = random_input(2, in_ch, 5, 6, torch.float64, seed=2).requires_grad_(True)
    weight = random_input(*block(x).shape[:2], 5, 6, torch.float64, seed=9)
    (block(x) * weight).sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0
    named = list(block.named_parameters())
    assert len(named) >= 4
    for name, p in named:
        assert p.grad is not None, f'{name} gets no gradient'
        assert torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, f'{name} has a zero gradient'


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=['f32', 'f64', 'f16', 'bf16'])
@pytest.mark.parametrize('case', ['collapsible_res', 'rrrb_2', 'repvgg_same', 'ecb_idt_dm2'])
def test_fused_block_keeps_dtype_and_device(case, dtype):
    in_ch, factory = CASES[case]
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        block = randomize(factory('prelu'), seed=4).to(device=device, dtype=dtype).eval()
        reference = copy.deepcopy(block).double()
        rtsr_arch.reparameterize(block)
        conv = getattr(block, block.deploy_key)
        tensors = list(block.parameters()) + list(block.buffers())
        assert len(tensors) == 3  # weight, bias, PReLU slopes
        for t in tensors:
            assert t.dtype == dtype and t.device.type == device
        assert conv.weight.requires_grad and block.training is False
        # the merge runs in float64 and is rounded once to the block's dtype
        fused64 = getattr(fused_copy(reference), block.deploy_key)
        assert torch.equal(conv.weight, fused64.weight.to(dtype))
        assert torch.equal(conv.bias, fused64.bias.to(dtype))
        if dtype in (torch.float32, torch.float64):
            x = random_input(1, in_ch, 4, 5, dtype, seed=3).to(device)
            # no TF32 on GPUs: it rounds float32 convs to 10-bit mantissas
            with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                assert_fused_close(reference(x.double()).to(dtype), block(x))


# ---------------------------------------------------------------- property tests

DTYPES = st.sampled_from([torch.float64, torch.float32])
HW = st.tuples(st.integers(1, 12), st.integers(1, 12))
PROPERTY = settings(max_examples=25, deadline=None, database=None, derandomize=True)


def run_property(block, batch, in_ch, hw, dtype, seed):
    block = randomize(block, seed=seed).to(dtype)
    x = random_input(batch, in_ch, *hw, dtype, seed=seed + 1)
    check_fused_equals_training(block, x)


@PROPERTY
@given(cin=st.integers(1, 12), cout=st.integers(1, 12), feat=st.integers(1, 24), hw=HW, batch=st.integers(1, 2),
       with_idt=st.booleans(), res_conv=st.booleans(), act=st.sampled_from(['linear', 'prelu', 'gelu']),
       dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_collapsible(cin, cout, feat, hw, batch, with_idt, res_conv, act, dtype, seed):
    run_property(CollapsibleBlock(cin, cout, feat, act, with_idt, res_conv), batch, cin, hw, dtype, seed)


@PROPERTY
@given(ch=st.integers(1, 12), ratio=st.sampled_from([1, 1.5, 2, 3]), hw=HW, batch=st.integers(1, 2),
       act=st.sampled_from(['linear', 'lrelu', 'silu']), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_rrrb(ch, ratio, hw, batch, act, dtype, seed):
    run_property(RRRB(ch, ratio, act), batch, ch, hw, dtype, seed)


@PROPERTY
@given(cin=st.integers(1, 12), same=st.booleans(), cout=st.integers(1, 12), hw=HW, batch=st.integers(1, 2),
       act=st.sampled_from(['linear', 'relu', 'softplus']), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_repvgg(cin, same, cout, hw, batch, act, dtype, seed):
    run_property(RepVGGBlock(cin, cin if same else cout, act), batch, cin, hw, dtype, seed)


@PROPERTY
@given(cin=st.integers(1, 12), same=st.booleans(), cout=st.integers(1, 12), dm=st.sampled_from([1.0, 2.0, 3.0]),
       with_idt=st.booleans(), hw=HW, batch=st.integers(1, 2), act=st.sampled_from(['prelu', 'linear', 'rrelu']),
       dtype=DTYPES, seed=st.integers(0, 2**16))
def test_property_ecb(cin, same, cout, dm, with_idt, hw, batch, act, dtype, seed):
    run_property(ECB(cin, cin if same else cout, dm, act, with_idt), batch, cin, hw, dtype, seed)


# ---------------------------------------------------------------- the shared helpers themselves

def test_randomize_leaves_no_default_initialization():
    from rtsr_arch.archs.layers import LayerNorm2d

    model = nn.Sequential(RepVGGBlock(4, 4, 'prelu'), LayerNorm2d(4), ECB(4, 4, 2.0, 'prelu'))
    fresh = copy.deepcopy(model)
    randomize(model, seed=0)
    for (name, p), p0 in zip(model.named_parameters(), fresh.parameters()):
        assert not torch.isclose(p, p0).any(), f'{name} kept (part of) its initial value'
    for m, m0 in zip(model.modules(), fresh.modules()):
        if isinstance(m, nn.BatchNorm2d):
            assert (m.running_var > 0).all() and not torch.isclose(m.running_var, m0.running_var).any()
            assert not torch.isclose(m.running_mean, m0.running_mean).any()
    assert torch.equal(model[2].conv1x1_sbx.mask, fresh[2].conv1x1_sbx.mask)  # structure is kept
    again = randomize(copy.deepcopy(fresh), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    other = randomize(copy.deepcopy(fresh), seed=1)
    assert not torch.equal(other[0].rbr_dense.conv.weight, model[0].rbr_dense.conv.weight)


def test_photo_helper():
    x = photo('astronaut', 7, 9, batch=2)
    assert x.shape == (2, 3, 7, 9) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.01 and not torch.equal(x[0], x[1])
    gray = photo('camera', 5, 6, dtype=torch.float64)
    assert gray.dtype == torch.float64 and torch.equal(gray[:, 0], gray[:, 2])
    with pytest.raises(ValueError):
        photo('astronaut', 1000, 10)
