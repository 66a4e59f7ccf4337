"""LRSRN specifics (Gankhuyag, Yoon et al., CVPRW 2023; official code Ganzooo/LRSRN): the official
state-dict layout, the paper's equations recomputed by hand, CASR's bias-free stage. Fusion,
parameter counts and keyword errors are checked for every architecture by test_contract.py."""
import copy

import pytest
import torch
from torch import nn

import rtsr_arch
from helpers import photo, randomize
from rtsr_arch.archs.lrsrn_arch import LRSRN, LRSRN_VARIANTS

pytestmark = pytest.mark.usefixtures('torch_single_thread')

SMALL_LRSRN = dict(num_feat=6, num_block=2, feature_size=10)


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
    """Ganzooo/LRSRN ``plainRepConv.py`` keys (minus the w0/b0/w1/b1 alias keys, handled by the importer)."""
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
        assert (model(x) - ref).abs().max() <= 1e-10
    assert isinstance(model.transition[0].act, nn.Identity)  # the transition is linear
