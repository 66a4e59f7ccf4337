"""EXnet / SRneXt specifics (NTIRE 2023 ESR, FRL Team 2; Li et al., CVPRW 2023, §4.30; official code
and weights Zhang9317112/NTIRE2023_ESR ``models/team05_exnet.py``, ``model_zoo/team05_exnet.pth``): the
official state-dict layout; an independent functional forward on the official keys computing on
[0, 255] images, against which the official checkpoint, loaded by ``rtsr_arch.load_model`` with
auto-detection, is compared on real photographs; the separable receptive field; float16 (the
official LayerNorm4D overflows, this one computes its statistics in float32). Fusion, keyword
errors, counts, padding, tiling and ONNX export: test_contract.py; NTIRE counters:
test_ntire23_counts.py; the shift conv itself: test_frl_layers.py."""
import pytest
import torch

from helpers import check_half_precision, check_official_weights, lr_photos, official_fixture, photos, randomize, \
    state_layout
from reference import conv_same, frl_skeleton, layer_norm_2d, shift_conv1x1, swish
from rtsr_arch.archs.exnet_arch import EXnet, import_official_exnet
from rtsr_arch.loader import resolve_checkpoint
from rtsr_arch.utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')


# ----------------------------------------------------------------------------- reference forward
# From the report (§4.30: residual block with LayerNorm, dimensional separable block multiplying
# the H and W mixers, then the channel mixer) and the official key names.

@torch.no_grad()
def exnet_reference(sd, x255, act=swish):
    """Official EXnet on an image in [0, 255]; returns the [0, 255] output."""
    layers = sorted({int(k.split('.')[1]) for k in sd if k.startswith('body.')})

    def body(x):
        for i in layers:
            p = f'body.{i}'
            n = layer_norm_2d(x, sd, f'{p}.norm1', eps=1e-5)
            c = n.shape[1]
            hw = n + conv_same(n, sd, f'{p}.sg.h_mixer', groups=c) * conv_same(n, sd, f'{p}.sg.w_mixer', groups=c)
            x = x + conv_same(hw + hw * conv_same(hw, sd, f'{p}.sg.c_mixer'), sd, f'{p}.sg.proj')
            n = layer_norm_2d(x, sd, f'{p}.norm2', eps=1e-5)
            x = x + shift_conv1x1(act(shift_conv1x1(n, sd, f'{p}.mlp.fc1')), sd, f'{p}.mlp.fc2')
        return x
    return frl_skeleton(sd, x255, body, head='head.0')


# ----------------------------------------------------------------------------- layout

def test_exnet_state_dict_layout_is_official():
    """Zhang9317112/NTIRE2023_ESR ``team05_exnet.pth``: 420 tensors, 244,558 parameters."""
    sd = EXnet().state_dict()
    expected = {'head.0.weight': (35, 3, 3, 3), 'head.0.bias': (35,), 'tail.0.weight': (48, 35, 3, 3),
                'tail.0.bias': (48,)}
    for i in range(26):
        p = f'body.{i}'
        expected.update({f'{p}.sg.h_mixer.weight': (35, 1, 15, 1), f'{p}.sg.w_mixer.weight': (35, 1, 1, 15),
                         f'{p}.sg.c_mixer.weight': (35, 35, 1, 1), f'{p}.sg.proj.weight': (35, 35, 1, 1),
                         f'{p}.mlp.fc1.weight': (70, 35, 1, 1), f'{p}.mlp.fc2.weight': (35, 70, 1, 1)})
        expected.update({f'{p}.sg.{n}.bias': (35,) for n in ('h_mixer', 'w_mixer', 'c_mixer', 'proj')})
        expected.update({f'{p}.mlp.fc1.bias': (70,), f'{p}.mlp.fc2.bias': (35,)})
        expected.update({f'{p}.norm{j}.{n}': (35,) for j in (1, 2) for n in ('weight', 'bias')})
    assert state_layout(sd) == expected
    assert len(sd) == 420 and sum(v.numel() for v in sd.values()) == 244_558
    assert EXnet().receptive_radius == 2 + 26 * (7 + 2)


def test_exnet_equals_reference_forward_random_weights():
    """Random weights, float64, three configurations: the network on [0, 1] equals the reference
    on [0, 255] divided by 255, down to 1x1 inputs."""
    for kwargs, act in ((dict(num_feat=10, num_block=3, kernel_size=5), None),
                        (dict(num_feat=5, num_block=2, kernel_size=3, mlp_ratio=1, upscale=2), None),
                        (dict(num_feat=15, num_block=1, kernel_size=9, upscale=3, act_type='gelu'),
                         torch.nn.functional.gelu)):
        model = randomize(EXnet(**kwargs), seed=5, std=1.0, fan_in=True).double().eval()
        sd = model.state_dict()
        for h, w in ((1, 1), (2, 5), (14, 23)):
            x = photos(h, w, torch.float64)
            with torch.no_grad():
                ref = exnet_reference(sd, 255 * x, **({'act': act} if act else {})) / 255
                err = (model(x) - ref).abs().max().item()
            assert err <= 1e-12 * max(1.0, ref.abs().max().item()), (kwargs, h, w, err)


def test_exnet_official_checkpoint_reproduces_the_reference():
    """``team05_exnet.pth`` through ``load_model`` (auto-detected) equals the reference on two
    photographs (LR of the NTIRE degradation, 32x48): float32 to rounding, float64 to ~1e-12; and it
    super-resolves (well above bicubic), which confirms the [0, 255] range."""
    path = official_fixture('exnet.pth')
    assert resolve_checkpoint(path).how == 'official EXnet checkpoint'
    model = check_official_weights(path, lambda sd, x: exnet_reference(sd, 255 * x) / 255,
                                   load_checkpoint(path)['params'], EXnet, tol32=1e-5, min_gain=2)
    assert model.upscale == 4
    assert {k: model.network_opt[k] for k in ('num_feat', 'num_block', 'kernel_size', 'mlp_ratio')} == \
        dict(num_feat=35, num_block=26, kernel_size=15, mlp_ratio=2)


# ----------------------------------------------------------------------------- specifics

def test_exnet_receptive_field_is_separable():
    """One layer reaches k // 2 rows (h_mixer) and columns (w_mixer) and one more of each through
    each shift conv, but not the corners: the gradient of a centre output pixel w.r.t. the head
    output is a thickened cross."""
    model = randomize(EXnet(num_feat=5, num_block=1, kernel_size=7, mlp_ratio=1), seed=1, std=1.0,
                      fan_in=True).double().eval()
    feats = torch.randn(1, 5, 21, 21, dtype=torch.float64, requires_grad=True)
    out = model.body(feats)
    grad, = torch.autograd.grad(out[0, :, 10, 10].sum(), feats)
    support = grad[0].abs().sum(0) > 0
    rows, cols = torch.nonzero(support, as_tuple=True)
    assert (rows - 10).abs().max() == 3 + 2 and (cols - 10).abs().max() == 3 + 2
    assert not support[10 - 5, 10 - 5] and not support[10 - 3, 10 - 3]


def test_exnet_importer_reads_the_shapes():
    opt = import_official_exnet(EXnet(num_feat=15, num_block=3, kernel_size=11, mlp_ratio=3, upscale=2).state_dict(),
                                {}).network_opt
    assert (opt['num_feat'], opt['num_block'], opt['kernel_size'], opt['mlp_ratio'], opt['upscale']) == \
        (15, 3, 11, 3, 2)
    with pytest.raises(ValueError, match='multiple of 5'):
        EXnet(num_feat=12)
    with pytest.raises(ValueError, match='odd'):
        EXnet(kernel_size=14)


def test_exnet_float16_layer_norm_statistics():
    """The official weights in float16: finite and within 5e-3 of float32 (without float32
    layer-norm statistics the official LayerNorm4D overflows on these 255-scale features and the
    error reaches 0.03; see test_gateformer.py for the overflow itself)."""
    check_half_precision(official_fixture('exnet.pth'), lr_photos()[1], torch.float16, 5e-3)
