"""GateFormer specifics (NTIRE 2023 ESR, FRL Team 1; Li et al., CVPRW 2023, Table 1; official code
and weights LiuYLong/NTIRE2023_ESR ``models/team04_GateFormer.py``, ``model_zoo/team04_gateformer.pth``):
the official state-dict layout; an independent functional forward on the official keys computing on
[0, 255] images, against which the official checkpoint, loaded by ``rtsr_arch.load_model`` with
auto-detection, is compared on real photographs; the context/basic gate pattern; float16 (the
official LayerNorm4D overflows, this one computes its statistics in float32). Fusion, keyword
errors, counts, padding, tiling and ONNX export: test_contract.py; NTIRE counters:
test_ntire23_counts.py."""
import pytest
import torch

from helpers import check_official_weights, lr_photos, official_fixture, photos, randomize, state_layout
from reference import conv_same, frl_skeleton, layer_norm_2d
from rtsr_arch.archs.gateformer_arch import GateFormer, import_official_gateformer
from rtsr_arch.archs.layers import LayerNorm2d
from rtsr_arch.loader import load_model, resolve_checkpoint
from rtsr_arch.utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')


# ----------------------------------------------------------------------------- reference forward
# From the factsheet ("GateFormer is What You Need for SR": basic gates for the MLP, context gates
# with a large depthwise kernel for self-attention) and the official key names.

@torch.no_grad()
def gateformer_reference(sd, x255):
    """Official GateFormer on an image in [0, 255]; returns the [0, 255] output. A layer is
    ``x + tail_conv(main_branch(n) * block(gate_branch(n)))``, n = LayerNorm4D(x), with ``block``
    the bias-free depthwise conv_same(s) stored for that layer, or nothing."""
    layers = sorted({int(k.split('.')[1]) for k in sd if k.startswith('body.')})

    def body(x):
        for i in layers:
            p = f'body.{i}'
            n = layer_norm_2d(x, sd, f'{p}.norm', eps=1e-5)
            gate = conv_same(n, sd, f'{p}.gate_module.gate_branch')
            blocks = sorted(k for k in sd if k.startswith(f'{p}.gate_module.block.'))
            for key in blocks:  # 'block.weight' or 'block.0.weight', 'block.1.weight'
                gate = conv_same(gate, sd, key[:-len('.weight')], groups=gate.shape[1], bias=False)
            x = x + conv_same(conv_same(n, sd, f'{p}.gate_module.main_branch') * gate, sd, f'{p}.gate_module.tail_conv')
        return x
    return frl_skeleton(sd, x255, body)


# ----------------------------------------------------------------------------- layout

def test_gateformer_state_dict_layout_is_official():
    """LiuYLong/NTIRE2023_ESR ``team04_gateformer.pth``: 242 tensors, 199,922 parameters; 11x11
    bias-free depthwise blocks at the 14 even layers."""
    sd = GateFormer().state_dict()
    expected = {'head.weight': (37, 3, 3, 3), 'head.bias': (37,), 'tail.0.weight': (48, 37, 3, 3), 'tail.0.bias': (48,)}
    for i in range(28):
        p = f'body.{i}'
        for name in ('main_branch', 'gate_branch', 'tail_conv'):
            expected.update({f'{p}.gate_module.{name}.weight': (37, 37, 1, 1), f'{p}.gate_module.{name}.bias': (37,)})
        if i % 2 == 0:
            expected[f'{p}.gate_module.block.weight'] = (37, 1, 11, 11)
        expected.update({f'{p}.norm.weight': (37,), f'{p}.norm.bias': (37,)})
    assert state_layout(sd) == expected
    assert len(sd) == 242 and sum(v.numel() for v in sd.values()) == 199_922
    assert GateFormer().receptive_radius == 2 + 14 * 5


def test_gateformer_equals_reference_forward_random_weights():
    """Random weights, float64, three configurations (11x11, 5x5 then 7x7, inter_rate 3, x2/x3):
    the network on [0, 1] equals the reference on [0, 255] divided by 255, down to 1x1 inputs."""
    for kwargs in (dict(num_feat=8, num_block=4), dict(num_feat=6, num_block=5, block_type='5577conv', inter_rate=3,
                                                      upscale=2), dict(num_feat=5, num_block=2, upscale=3)):
        model = randomize(GateFormer(**kwargs), seed=2, std=1.0, fan_in=True).double().eval()
        sd = model.state_dict()
        for h, w in ((1, 1), (13, 22)):
            x = photos(h, w, torch.float64)
            with torch.no_grad():
                err = (model(x) - gateformer_reference(sd, 255 * x) / 255).abs().max().item()
            assert err <= 1e-12, (kwargs, h, w, err)


def test_gateformer_official_checkpoint_reproduces_the_reference():
    """``team04_gateformer.pth`` through ``load_model`` (auto-detected) equals the reference on
    two photographs (LR of the NTIRE degradation, 32x48): float32 to rounding, float64 to ~1e-12;
    and it super-resolves (well above bicubic), which confirms the [0, 255] range."""
    path = official_fixture('gateformer.pth')
    assert resolve_checkpoint(path).how == 'official GateFormer checkpoint'
    model = check_official_weights(path, lambda sd, x: gateformer_reference(sd, 255 * x) / 255,
                                   load_checkpoint(path)['params'], GateFormer, tol32=1e-5, min_gain=2)
    assert model.upscale == 4 and model.network_opt['inter_rate'] == 2


# ----------------------------------------------------------------------------- specifics

def test_gateformer_gate_pattern_and_importer():
    """Layer i has a context gate iff (i + 1) % inter_rate != 0; the importer reads the pattern,
    the block type and the width back from the weights."""
    model = GateFormer(num_feat=5, num_block=7, inter_rate=3, block_type='5577conv')
    assert [not isinstance(layer.gate_module.block, torch.nn.Identity) for layer in model.body] == \
        [True, True, False, True, True, False, True]
    opt = import_official_gateformer(model.state_dict(), {}).network_opt
    assert (opt['inter_rate'], opt['block_type'], opt['num_feat'], opt['num_block']) == (3, '5577conv', 5, 7)
    sd = model.state_dict()
    del sd['body.0.gate_module.block.0.weight'], sd['body.0.gate_module.block.1.weight']
    with pytest.raises(ValueError, match='inter_rate pattern'):
        import_official_gateformer(sd, {})


def test_gateformer_float16_layer_norm_statistics():
    """On the 255-scale features the official LayerNorm4D overflows in float16 (squared deviations
    above 65504: inf variance, zero output); GateFormer's LayerNorm2d computes its statistics in
    float32 for half inputs, so the official weights run in float16 within 2e-3 of float32 (the
    float32 forward is the official one, unchanged)."""
    path = official_fixture('gateformer.pth')
    model = load_model(path)
    x = lr_photos()[1]
    plain = LayerNorm2d(37, eps=1e-5).half()
    captured = []
    handle = model.body[27].norm.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    with torch.no_grad():
        y32 = model(x)
        handle.remove()
        feats = captured[0]  # the input of the last layer norm, float32
        assert not torch.isfinite((feats - feats.mean(1, keepdim=True)).half().pow(2)).all()  # the overflow
        assert (plain(feats.half()) == 0).any()
        y16 = model.half()(x.half()).float()
    err = (y16 - y32).abs().max().item()
    print(f'GateFormer official weights, float16 vs float32: max |diff| {err:.3g}')
    assert torch.isfinite(y16).all() and err <= 5e-3
