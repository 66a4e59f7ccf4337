"""rtsr_arch.utils.efficiency: NTIRE 2023 RTSR score (eduardzamfir/NTIRE23-RTSR calc_scoring.ipynb),
NTIRE 2023 ESR counters (ofsoundof/NTIRE2023_ESR) checked against hand-computed counts, and the
fp16 memory-traffic bound."""
import pytest
import torch
from torch import nn

import rtsr_arch  # noqa: F401  (first: its compatibility shims let basicsr import; registers the archs)
from basicsr.utils.registry import ARCH_REGISTRY
from rtsr_arch.utils.efficiency import (EfficiencyCounts, count_ntire_esr, memory_traffic, ntire23_rtsr_score,
                                        summarize_traffic, traffic_bound_ms)

FOUR_K_X2 = (1, 3, 1080, 1920)


# ------------------------------------------------------------------------------------- score

@pytest.mark.parametrize('psnr, runtime, expected', [
    (32, 27.86, 4.6726), (32, 10, 7.7991), (32.1, 10, 8.3589), (32, 9, 8.2210)])
def test_score_reference_values(psnr, runtime, expected):
    assert round(ntire23_rtsr_score(psnr, runtime), 4) == expected


def test_score_zero_at_or_below_interp_and_monotonic():
    assert ntire23_rtsr_score(31.697655, 10) == 0
    assert ntire23_rtsr_score(31.0, 10) == 0
    assert ntire23_rtsr_score(31.0, 10, psnr_interp=30.0) > 0
    by_psnr = [ntire23_rtsr_score(p, 10) for p in (31.8, 32.0, 32.5, 33.0, 34.0)]
    assert all(a < b for a, b in zip(by_psnr, by_psnr[1:]))
    by_runtime = [ntire23_rtsr_score(32.0, t) for t in (1, 5, 10, 20, 40)]
    assert all(a > b for a, b in zip(by_runtime, by_runtime[1:]))


# ------------------------------------------------------------------------------------ counters

def lrsrn_x2_deploy():
    return ARCH_REGISTRY.get('LRSRN')(upscale=2, deploy=True)


def rt4ksr_x2_deploy():
    return ARCH_REGISTRY.get('RT4KSR')(upscale=2, deploy=True)


def expected_lrsrn_x2(h, w):
    """C32, m4, ReLU, plain: head 3->32, 4 x 32->32, transition 32->12 (3 * 2**2), all 3x3 at h x w."""
    p = h * w
    convs = [(3, 32)] + [(32, 32)] * 4 + [(32, 12)]
    macs = sum(9 * cin * cout * p for cin, cout in convs)
    relu = 5 * 32 * p  # after the head and each backbone conv
    return EfficiencyCounts(
        params=sum(9 * cin * cout + cout for cin, cout in convs),
        flops=macs + relu,
        activations=sum(cout * p for _, cout in convs),  # = 5 * 32 * p + 12 * p
        num_conv=len(convs))


def expected_rt4ksr_x2(h, w):
    """C24, B4, GELU, hf_gate False: PixelUnshuffle(2) -> head 12->24, 4 body + 1 tail rep conv
    24->24, upsample 24->48 (3 * 4**2), all 3x3 at h/2 x w/2. GELU, LayerNorm2d, PixelShuffle count
    0; the HF branch is not executed, but its RRRB (deploy: one 24->24 conv) and gamma are
    registered parameters."""
    p = (h // 2) * (w // 2)
    convs = [(12, 24)] + [(24, 24)] * 5 + [(24, 48)]
    conv_params = sum(9 * cin * cout + cout for cin, cout in convs)
    hfb_params = 9 * 24 * 24 + 24
    layernorm_params = 5 * 2 * 24  # 4 body + tail
    gamma = 1
    return EfficiencyCounts(
        params=conv_params + hfb_params + layernorm_params + gamma,
        flops=sum(9 * cin * cout * p for cin, cout in convs),
        activations=sum(cout * p for _, cout in convs),
        num_conv=len(convs))


def test_lrsrn_x2_deploy_counts():
    counts = count_ntire_esr(lrsrn_x2_deploy())
    assert counts == expected_lrsrn_x2(256, 256)
    assert counts.params == 41356
    assert counts.flops == 9 * 3 * 32 * 256**2 + 4 * 9 * 32 * 32 * 256**2 + 9 * 32 * 12 * 256**2 + 5 * 32 * 256**2
    assert counts.activations == 5 * 32 * 256**2 + 12 * 256**2


def test_rt4ksr_x2_deploy_counts():
    counts = count_ntire_esr(rt4ksr_x2_deploy())
    assert counts == expected_rt4ksr_x2(256, 256)
    assert counts.params == 44521
    assert counts.flops == 9 * 12 * 24 * 128**2 + 5 * 9 * 24 * 24 * 128**2 + 9 * 24 * 48 * 128**2
    assert counts.num_conv == 7


def test_training_form_counts_more():
    train = ARCH_REGISTRY.get('LRSRN')(upscale=2)
    deploy_counts, train_counts = count_ntire_esr(lrsrn_x2_deploy()), count_ntire_esr(train)
    p = 256 * 256
    # each backbone block: 3x3 32->256 then 1x1 256->32 instead of one 3x3 32->32
    extra = 4 * (9 * 32 * 256 * p + 256 * 32 * p - 9 * 32 * 32 * p)
    assert train_counts.flops == deploy_counts.flops + extra
    assert train_counts.num_conv == deploy_counts.num_conv + 4
    assert train_counts.params > deploy_counts.params


def test_reused_relu_counts_each_call():
    class TwiceReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.act = nn.ReLU()

        def forward(self, x):
            y = self.act(self.conv(x))
            return self.act(y - 1)

    counts = count_ntire_esr(TwiceReLU(), (1, 3, 16, 16))
    assert counts == EfficiencyCounts(params=8 * 3 * 9, flops=9 * 3 * 8 * 256 + 2 * 8 * 256,
                                      activations=8 * 256, num_conv=1)


def test_other_modules_count_zero_and_counted_ones():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(8), nn.GELU(),
                          nn.SiLU(), nn.PixelShuffle(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 5))
    counts = count_ntire_esr(model, (1, 4, 6, 6))
    p = 6 * 6
    conv = 9 * 4 * (8 // 2) * p
    assert counts.flops == conv + 2 * 8 * p + 2 * 5
    assert counts.num_conv == 1 and counts.activations == 8 * p


@pytest.mark.parametrize('build', [lrsrn_x2_deploy, rt4ksr_x2_deploy])
def test_counts_at_4k_scale_by_pixels(build):
    model = build()
    small, big = count_ntire_esr(model), count_ntire_esr(model, FOUR_K_X2)
    h, w = FOUR_K_X2[2:]
    assert big.params == small.params and big.num_conv == small.num_conv
    assert big.flops * 256 * 256 == small.flops * h * w
    assert big.activations * 256 * 256 == small.activations * h * w


def test_counter_leaves_model_untouched():
    model = lrsrn_x2_deploy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_ntire_esr(model, FOUR_K_X2)
    assert all(not m._forward_hooks for m in model.modules())
    assert all(v.device.type == 'cpu' and torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------- traffic

def test_single_conv_traffic():
    h, w = 40, 24
    ops = memory_traffic(nn.Conv2d(32, 32, 3, padding=1), (1, 32, h, w), dtype=torch.float16)
    assert len(ops) == 1
    op = ops[0]
    assert op.op.startswith('aten.convolution')
    assert op.bytes_read == 2 * (32 * h * w + 32 * 32 * 9 + 32)
    assert op.bytes_written == 2 * 32 * h * w
    assert op.flops == 2 * 9 * 32 * 32 * h * w
    bw, peak = 1000.0, 100.0
    assert traffic_bound_ms(ops, bw, peak) == pytest.approx(
        1e3 * max((op.bytes_read + op.bytes_written) / (bw * 1e9), op.flops / (peak * 1e12)))


def test_lrsrn_x2_deploy_traffic():
    model = lrsrn_x2_deploy()
    h, w = 64, 96
    ops = memory_traffic(model, (1, 3, h, w))
    totals = summarize_traffic(ops)
    conv_outputs = 2 * (5 * 32 * h * w + 12 * h * w)  # fp16 bytes
    assert totals['bytes_written'] >= conv_outputs
    assert totals['bytes'] == totals['bytes_read'] + totals['bytes_written']
    assert totals['flops'] == 2 * (9 * 3 * 32 + 4 * 9 * 32 * 32 + 9 * 32 * 12) * h * w
    names = [op.op.split('.')[1] for op in ops]
    assert names.count('convolution') == 6
    assert names.count('relu_') + names.count('relu') == 5
    assert 'add' in names and names[-1] == 'pixel_shuffle'
    assert [op.name for op in ops if op.op.startswith('aten.convolution')][0] == 'head.conv3x3'
    bw, peak = 3350.0, 989.0
    hand = sum(max((o.bytes_read + o.bytes_written) / (bw * 1e9), o.flops / (peak * 1e12)) for o in ops) * 1e3
    assert traffic_bound_ms(ops, bw, peak) == pytest.approx(hand)
    # the model passed in is not modified
    assert all(p.device.type == 'cpu' and p.dtype == torch.float32 for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
