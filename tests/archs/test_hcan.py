"""HCAN specifics (NTIRE 2023 ESR, FRL Team 3; Li et al., CVPRW 2023, §4.28, Fig. 45; official code
and weights TIANLE233/NTIRE2023_ESR ``models/team06_HCAN.py``, ``model_zoo/team06_hcan.pth``): the
official state-dict layout with its stored mean-shift convs; an independent functional forward on
the official keys computing on [0, 255] images, against which the official checkpoint, loaded by
``rtsr_arch.load_model`` with auto-detection, is compared on real photographs; the focal levels.
Fusion, keyword errors, counts, padding, tiling, fp16 and ONNX export: test_contract.py; NTIRE
counters: test_ntire23_counts.py."""
import pytest
import torch
from torch.nn import functional as F

from helpers import check_official_weights, official_fixture, photos, randomize, state_layout
from reference import DF2K_MEAN, conv_same, frl_skeleton
from rtsr_arch.archs.hcan_arch import HCAN, import_official_hcan
from rtsr_arch.loader import resolve_checkpoint
from rtsr_arch.utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')


# ----------------------------------------------------------------------------- reference forward
# From the report (§4.28: normalization-free transformer blocks; HCAA = PWconv, cascaded depthwise
# convs of growing size each followed by GELU, their sum, PWconv, sigmoid, times the unprocessed
# features, PWconv) and the official key names.

@torch.no_grad()
def hcan_reference(sd, x255, act=F.gelu):
    """Official HCAN on an image in [0, 255]; returns the [0, 255] output (the mean shifts are the
    checkpoint's 1x1 convs)."""
    groups = sorted({int(k.split('.')[1]) for k in sd if k.startswith('body.')})

    def body(x):
        for g in groups:
            blocks = sorted({int(k.split('.')[3]) for k in sd if k.startswith(f'body.{g}.sa_list.')})
            for i in blocks:
                p = f'body.{g}.sa_list.{i}'
                q, ctx = conv_same(x, sd, f'{p}.f').chunk(2, dim=1)
                total = torch.zeros_like(ctx)
                level = 0
                while f'{p}.focal_layers.{level}.0.weight' in sd:
                    ctx = act(conv_same(ctx, sd, f'{p}.focal_layers.{level}.0', groups=ctx.shape[1], bias=False))
                    total = total + ctx
                    level += 1
                x = x + conv_same(q * torch.sigmoid(conv_same(total, sd, f'{p}.h')), sd, f'{p}.proj')
                m = f'body.{g}.mlp_list.{i}'
                x = x + conv_same(act(conv_same(x, sd, f'{m}.fc1')), sd, f'{m}.fc2')
        return x
    return frl_skeleton(sd, x255, body, stored_mean=True)


# ----------------------------------------------------------------------------- layout

def test_hcan_state_dict_layout_is_official():
    """TIANLE233/NTIRE2023_ESR ``team06_hcan.pth``: 176 tensors, 178,760 parameters including the
    two mean-shift 1x1 convs (identity kernels, biases -/+ 255 x DF2K mean), which are frozen."""
    model = HCAN()
    sd = model.state_dict()
    expected = {'sub_mean.weight': (3, 3, 1, 1), 'sub_mean.bias': (3,), 'add_mean.weight': (3, 3, 1, 1),
                'add_mean.bias': (3,), 'head.weight': (32, 3, 3, 3), 'head.bias': (32,),
                'tail.0.weight': (48, 32, 3, 3), 'tail.0.bias': (48,)}
    for i in range(12):
        p = f'body.0.sa_list.{i}'
        expected.update({f'{p}.f.weight': (64, 32, 1, 1), f'{p}.f.bias': (64,), f'{p}.h.weight': (32, 32, 1, 1),
                         f'{p}.h.bias': (32,), f'{p}.proj.weight': (32, 32, 1, 1), f'{p}.proj.bias': (32,)})
        expected.update({f'{p}.focal_layers.{level}.0.weight': (32, 1, k, k) for level, k in enumerate((3, 5, 7, 9))})
        m = f'body.0.mlp_list.{i}'
        expected.update({f'{m}.fc1.weight': (64, 32, 1, 1), f'{m}.fc1.bias': (64,), f'{m}.fc2.weight': (32, 64, 1, 1),
                         f'{m}.fc2.bias': (32,)})
    assert state_layout(sd) == expected
    assert len(sd) == 176 and sum(v.numel() for v in sd.values()) == 178_760
    assert torch.equal(sd['sub_mean.weight'].flatten(1), torch.eye(3))
    assert torch.allclose(sd['add_mean.bias'], 255 * torch.tensor(DF2K_MEAN)) and torch.equal(sd['sub_mean.bias'],
                                                                                             -sd['add_mean.bias'])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {'sub_mean.weight', 'sub_mean.bias', 'add_mean.weight', 'add_mean.bias'}
    assert model.receptive_radius == 2 + 12 * (1 + 2 + 3 + 4)


def test_hcan_equals_reference_forward_random_weights():
    """Random weights (the mean-shift convs included), float64, three configurations (two groups,
    other focal windows, ReLU): the network on [0, 1] equals the reference on [0, 255] / 255."""
    for kwargs, act in ((dict(num_feat=8, num_block=2), F.gelu),
                        (dict(num_feat=6, num_block=1, num_group=2, focal_level=3, focal_window=1, upscale=2), F.gelu),
                        (dict(num_feat=4, num_block=2, focal_level=2, focal_window=5, focal_factor=4, mlp_ratio=3,
                              upscale=3, act_type='relu'), F.relu)):
        model = randomize(HCAN(**kwargs), seed=6, std=1.0, fan_in=True).double().eval()
        sd = model.state_dict()
        for h, w in ((1, 1), (11, 19)):
            x = photos(h, w, torch.float64)
            with torch.no_grad():
                err = (model(x) - hcan_reference(sd, 255 * x, act) / 255).abs().max().item()
            assert err <= 1e-12, (kwargs, h, w, err)
        opt = import_official_hcan(sd, {}).network_opt
        assert all(opt[k] == model.network_opt[k] for k in kwargs if k != 'act_type'), opt


def test_hcan_official_checkpoint_reproduces_the_reference():
    """``team06_hcan.pth`` through ``load_model`` (auto-detected) equals the reference on two
    photographs (LR of the NTIRE degradation, 32x48): float32 to rounding, float64 to ~1e-12; and it
    super-resolves (well above bicubic), which confirms the [0, 255] range. Its stored mean shifts
    are the identity and -/+ 255 x DF2K mean in float32."""
    path = official_fixture('hcan.pth')
    assert resolve_checkpoint(path).how == 'official HCAN checkpoint'
    sd = load_checkpoint(path)['params']
    assert torch.equal(sd['add_mean.bias'], 255 * torch.tensor(DF2K_MEAN))
    model = check_official_weights(path, lambda sd, x: hcan_reference(sd, 255 * x) / 255, sd, HCAN, tol32=1e-5,
                                   min_gain=2)
    assert model.upscale == 4


# ----------------------------------------------------------------------------- specifics

def test_hcan_focal_kernels_must_be_odd():
    with pytest.raises(ValueError, match='even kernel sizes'):
        HCAN(focal_window=4)
    with pytest.raises(ValueError, match='even kernel sizes'):
        HCAN(focal_factor=1)
    assert [layer[0].kernel_size for layer in HCAN(focal_level=3, focal_window=1, focal_factor=4).body[0].sa_list[0]
            .focal_layers] == [(1, 1), (5, 5), (9, 9)]


def test_hcan_focal_levels_share_one_activation_module():
    """As the official FocalModulation, one activation module follows every focal level (the NTIRE
    counter counts a ReLU-family module per call)."""
    block = HCAN(num_feat=4, num_block=1, act_type='relu').body[0].sa_list[0]
    assert all(layer[1] is block.act for layer in block.focal_layers)
