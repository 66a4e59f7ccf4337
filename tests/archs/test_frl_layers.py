"""The layers shared by the Fried Rice Lab entries of the NTIRE 2023 Efficient SR challenge (LGTT,
GateFormer, EXnet, HCAN; Li et al., CVPRW 2023, §4.27-4.30; the teams' common helper code in
Jinchen2028/, LiuYLong/, Zhang9317112/, TIANLE233/NTIRE2023_ESR): the DF2K mean shift (functional and
stored), the shift 1x1 conv, the layer norm with float32 statistics for half inputs."""
import pytest
import torch
from torch import nn

from helpers import photo, randomize
from reference import DF2K_MEAN, mean_shift, shift_conv1x1
from rtsr_arch.archs.layers import LayerNorm2d, MeanShift, MeanShiftConv, ShiftConv2d1x1
from rtsr_arch.utils.efficiency import count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')


def test_mean_shift_is_parameter_free_and_matches_the_official_shift():
    """x -/+ 255 x DF2K mean per channel, no state-dict entry, follows the module's dtype; the
    float64 shift is the float32-rounded mean as in the official code (bias computed in float32)."""
    sub, add = MeanShift(-1), MeanShift(1)
    assert not list(sub.parameters()) and not sub.state_dict()
    x = 255 * photo('coffee', 9, 13, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(sub.double()(x), mean_shift(x, -1)) and torch.equal(add.double()(x), mean_shift(x, 1))
        assert (add(sub(x)) - x).abs().max() <= 1e-12
    assert sub.half().shift.dtype == torch.float16
    with pytest.raises(ValueError, match='sign=0'):
        MeanShift(0)


def test_mean_shift_conv_is_frozen_identity_with_mean_bias():
    """HCAN's stored form: a 1x1 conv, identity kernel, bias sign x 255 x mean, frozen; 12
    parameters counted as one conv by the NTIRE counter."""
    conv = MeanShiftConv(1)
    assert torch.equal(conv.weight.flatten(1), torch.eye(3))
    assert torch.equal(conv.bias, 255 * torch.tensor(DF2K_MEAN))
    assert not any(p.requires_grad for p in conv.parameters()) and sum(p.numel() for p in conv.parameters()) == 12
    x = 255 * photo('chelsea', 7, 5)
    with torch.no_grad():
        assert torch.equal(conv(x), mean_shift(x, 1))
    counts = count_ntire_esr(nn.Sequential(conv), (1, 3, 256, 256))
    assert (counts.params, counts.num_conv, counts.flops) == (12, 1, 9 * 256 * 256)


def test_shift_conv_equals_the_official_one_hot_depthwise_conv():
    """Groups of C // 5 contiguous channels move right/left/down/up by one pixel with zero fill,
    the rest stay (the official depthwise one-hot 3x3 kernel with zero padding), then a 1x1 conv:
    the same values, float64, down to 1x1 inputs; only the 1x1 conv's parameters; one conv for the
    counter."""
    for cin, cout in ((5, 3), (10, 7), (35, 70)):
        layer = randomize(ShiftConv2d1x1(cin, cout), seed=cin).double()
        sd = {f'm.{k}': v for k, v in layer.state_dict().items()}
        for h, w in ((1, 1), (2, 3), (9, 14)):
            x = torch.randn(2, cin, h, w, dtype=torch.float64)
            with torch.no_grad():
                assert torch.equal(layer(x), shift_conv1x1(x, sd, 'm')), (cin, h, w)
        assert [k for k, _ in layer.named_parameters()] == ['weight', 'bias']
    x = torch.zeros(1, 5, 3, 3)
    x[:, :, 1, 1] = 1  # a centre impulse in every channel
    layer = ShiftConv2d1x1(5, 5)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(5).view(5, 5, 1, 1))
        layer.bias.zero_()
        y = layer(x)[0]
    assert y[0, 1, 0] == 1 and y[1, 1, 2] == 1 and y[2, 0, 1] == 1 and y[3, 2, 1] == 1 and y[4, 1, 1] == 1
    counts = count_ntire_esr(nn.Sequential(ShiftConv2d1x1(10, 20)), (1, 10, 8, 8))
    assert (counts.num_conv, counts.flops, counts.activations) == (1, 10 * 20 * 64, 20 * 64)
    with pytest.raises(ValueError, match='multiple of 5'):
        ShiftConv2d1x1(12, 4)


def test_layer_norm_float32_statistics_for_half_inputs():
    """``float32_stats``: float32/float64 results unchanged (bit for bit); a float16 input with
    deviations beyond 256 (squares beyond 65504) stays finite and close to float32, where the plain
    form returns zeros."""
    plain, robust = LayerNorm2d(6, eps=1e-5), LayerNorm2d(6, eps=1e-5, float32_stats=True)
    randomize(plain, seed=3)
    robust.load_state_dict(plain.state_dict())
    x = 600 * torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        assert torch.equal(plain(x), robust(x)) and torch.equal(plain.double()(x.double()), robust.double()(x.double()))
        ref = robust.float()(x)
        half_plain, half_robust = plain.half()(x.half()), robust.half()(x.half())
    assert half_robust.dtype == torch.float16 and torch.isfinite(half_robust).all()
    assert (half_robust.float() - ref).abs().max() <= 1e-2 * ref.abs().max()
    assert (half_plain.float() - ref).abs().max() > 0.1 * ref.abs().max()  # the overflow of the plain form
