"""RFDN specifics (Liu, Tang, Wu, ECCV Workshops 2020; the NTIRE 2023 Efficient SR baseline,
official code and weights ofsoundof/NTIRE2023_ESR ``models/team00_RFDN.py``,
``model_zoo/team00_rfdn.pth``): the official state-dict layout; the independent functional forward
written on the official keys (``reference.rfdn_forward``, from the published description: RFDN
paper Fig. 2-3, NTIRE 2023 ESR report §2.2), computing on [0, 255] images as the official
``test_demo.py`` does (data_range 255), against which the official checkpoint, loaded by
``rtsr_arch.load_model`` with auto-detection, is compared on real photographs; RFDN's ESA (conv_max
/ conv3_, one ReLU module called twice); the legacy torch file format; what the importer infers.
Fusion, keyword errors, parameter counts, fp16, padding and ONNX export are checked for every
architecture by test_contract.py; the NTIRE counters by test_ntire23_counts.py."""
import zipfile

import pytest
import torch

import rtsr_arch  # noqa: F401  (first: its compatibility shims let basicsr import)
from helpers import check_official_weights, official_fixture, photo, photos, randomize, state_layout
from reference import rfdn_forward
from rtsr_arch.archs.layers import ESA
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.rfdn_arch import RFDN, import_official_rfdn
from rtsr_arch.loader import load_model, resolve_checkpoint
from rtsr_arch.export import export_onnx
from rtsr_arch.utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')


def rfdn_reference(sd, x):
    """The official forward on ``x`` in [0, 1]: computed on 255 x, divided by 255."""
    return rfdn_forward(sd, 255 * x) / 255


# ----------------------------------------------------------------------------- layout

def test_rfdn_state_dict_layout_is_official():
    """Keys and shapes of ofsoundof/NTIRE2023_ESR ``team00_rfdn.pth`` (ARCHITECTURES C.1): 128
    tensors, 433,448 parameters; each ESA 6,650 parameters in 7 convs."""
    sd = RFDN().state_dict()
    expected = {'fea_conv.weight': (50, 3, 3, 3), 'c.0.weight': (50, 200, 1, 1), 'LR_conv.weight': (50, 50, 3, 3),
                'upsampler.0.weight': (48, 50, 3, 3)}
    for i in range(1, 5):
        for j in (1, 2, 3):
            expected[f'B{i}.c{j}_d.weight'] = (25, 50, 1, 1)
            expected[f'B{i}.c{j}_r.weight'] = (50, 50, 3, 3)
        expected[f'B{i}.c4.weight'] = (25, 50, 3, 3)
        expected[f'B{i}.c5.weight'] = (50, 100, 1, 1)
        expected.update({f'B{i}.esa.conv1.weight': (12, 50, 1, 1), f'B{i}.esa.conv_f.weight': (12, 12, 1, 1),
                         f'B{i}.esa.conv4.weight': (50, 12, 1, 1)})
        expected.update({f'B{i}.esa.{n}.weight': (12, 12, 3, 3) for n in ('conv_max', 'conv2', 'conv3', 'conv3_')})
    expected.update({k.replace('.weight', '.bias'): (v[0],) for k, v in list(expected.items())})
    assert state_layout(sd) == expected
    assert len(sd) == 128 and sum(v.numel() for v in sd.values()) == 433_448
    esa = RFDN().B1.esa
    assert sum(p.numel() for p in esa.parameters()) == 6_650
    assert sum(isinstance(m, torch.nn.Conv2d) for m in esa.modules()) == 7
    assert list(dict(esa.named_children())) == ['conv1', 'conv_f', 'conv_max', 'conv2', 'conv3', 'conv3_', 'relu',
                                                'conv4']


def test_rfdn_esa_calls_one_relu_module_twice():
    """The official ESA's two ReLUs are one ``nn.ReLU`` called twice (the NTIRE counter counts both)."""
    esa = RFDN(num_feat=8, num_block=1).B1.esa
    calls = []
    esa.relu.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    esa(photo('coffee', 20, 23).repeat(1, 3, 1, 1)[:, :8])
    assert len(calls) == 2 and calls[0] == calls[1] == (1, 2, 1, 2)  # 20x23 -> 9x11 -> 1x2


# ----------------------------------------------------------------------------- the reference forward

def test_rfdn_equals_reference_forward_random_weights():
    """Random weights (every parameter), float64: the network on [0, 1] equals the reference on
    [0, 255] divided by 255 (no fixture needed). Also at the smallest valid input, 15x15."""
    model = randomize(RFDN(num_feat=16, num_block=3, upscale=3), seed=3, std=1.0, fan_in=True).double().eval()
    sd = model.state_dict()
    for h, w in ((15, 15), (23, 37)):
        x = photos(h, w, torch.float64)
        with torch.no_grad():
            err = (model(x) - rfdn_reference(sd, x)).abs().max().item()
        assert err <= 1e-12, (h, w, err)


def test_rfdn_official_checkpoint_reproduces_the_reference():
    """``team00_rfdn.pth`` through ``load_model`` (auto-detected, no arch given) equals the
    reference forward on two photographs (LR of the NTIRE degradation, 32x48): float32 to rounding,
    float64 to ~1e-12; and the output is a super-resolved image, far closer to the photo than
    bicubic upscaling."""
    path = official_fixture('rfdn.pth')
    assert resolve_checkpoint(path).how == 'official RFDN checkpoint'
    model = check_official_weights(path, rfdn_reference, load_checkpoint(path), RFDN, tol32=1e-5, min_gain=2)
    assert model.upscale == 4


def test_rfdn_checkpoint_is_a_legacy_torch_file_read_with_weights_only():
    """``team00_rfdn.pth`` is the pre-1.6 (non-zip) torch format; ``load_checkpoint`` reads it with
    ``weights_only=True`` (its default)."""
    path = official_fixture('rfdn.pth')
    assert not zipfile.is_zipfile(path)
    sd = load_checkpoint(path)  # weights_only=True
    assert len(sd) == 128 and sum(v.numel() for v in sd.values()) == 433_448


# ----------------------------------------------------------------------------- importer

def test_rfdn_importer_infers_the_shapes():
    """Width, blocks and scale come from the shapes; the activation (and the form, for a network
    without reparameterizable blocks) is assumed. RFDN's keys with an ESA width other than C // 4
    (PRFDN, NTIRE 2023 team SEU_CNII: C 60, f 14) are left to PRFDN's importer."""
    for kwargs in (dict(upscale=2), dict(num_feat=20, num_block=3, upscale=3)):
        sd = RFDN(**kwargs).state_dict()
        assert [imp.arch for imp, _ in find_importers(sd)] == ['RFDN']
        result = import_official_rfdn(sd, {})
        assert {k: result.network_opt[k] for k in kwargs} == kwargs
        assert set(result.assumed) == {'act_type', 'deploy'} and result.network_opt['act_type'] == 'lrelu'
    prfdn = RFDN(num_feat=60).state_dict()
    for key in [k for k in prfdn if '.esa.' in k]:  # ESA width 14 instead of 15
        w = prfdn[key]
        prfdn[key] = w[:14] if key.endswith(('conv1.weight', 'conv1.bias')) else \
            w[:, :14] if key.endswith('conv4.weight') else w if key.endswith('conv4.bias') else \
            w[:14, :14] if w.dim() == 4 else w[:14]
    assert sum(v.numel() for v in prfdn.values()) == 616_312
    assert 'RFDN' not in [imp.arch for imp, _ in find_importers(prfdn)]


def test_rfdn_importer_refuses_another_distilled_width():
    sd = RFDN(num_feat=8, num_block=1).state_dict()
    sd['B1.c1_d.weight'] = torch.zeros(3, 8, 1, 1)
    with pytest.raises(ValueError, match='distilled width 3'):
        import_official_rfdn(sd, {})


# ----------------------------------------------------------------------------- ESA requirements

def test_rfdn_minimum_input_and_size_dependent_attention():
    """15x15 is the smallest input (conv2 then the 7x7 pool need it); the bilinear resize of ESA's
    coarse map makes the output depend on the image size: the same pixels inside a larger image
    come out differently (hence ``tile_exact = False``)."""
    model = randomize(RFDN(num_feat=8, num_block=1), seed=1, std=1.0, fan_in=True).double().eval()
    assert model.min_input_size == 15 and not model.tile_exact and model.receptive_radius is None
    big = photo('astronaut', 40, 40, dtype=torch.float64)
    with torch.no_grad():
        assert model(big[..., :15, :15]).shape == (1, 3, 60, 60)
        with pytest.raises(RuntimeError):
            model(big[..., :14, :14])
        inner = model(big[..., 10:30, 10:30])[..., 24:56, 24:56]
        whole = model(big)[..., 64:96, 64:96]
    assert (inner - whole).abs().max() > 1e-3


def test_rfdn_official_checkpoint_exports_to_onnx(tmp_path):
    """Dynamic sizes through ESA's max pool and bilinear resize: onnxruntime reproduces PyTorch
    within the generic 1e-4 of the output on the official weights."""
    model = load_model(official_fixture('rfdn.pth'))
    report = export_onnx(model, tmp_path / 'rfdn.onnx')
    print(f'RFDN ONNX vs PyTorch: max |diff| {report.max_abs_diff:.3g}')
    assert report.max_abs_diff <= 1e-4 * max(c.peak for c in report.checks)
    assert tuple(report.output_dims[-2:]) == ('4*height', '4*width')


def test_esa_layer_arguments():
    """The shared ESA layer (rtsr_arch.archs.layers): official keys per variant, bias-free form,
    one-line errors."""
    assert [k for k in ESA(8, 4, 'rfdn').state_dict() if k.endswith('weight')] == \
        [f'{n}.weight' for n in ('conv1', 'conv_f', 'conv_max', 'conv2', 'conv3', 'conv3_', 'conv4')]
    assert [k for k in ESA(8, 4).state_dict() if k.endswith('weight')] == \
        [f'{n}.weight' for n in ('conv1', 'conv_f', 'conv2', 'conv3', 'conv4')]
    assert not any(k.endswith('bias') for k in ESA(8, 4, bias=False).state_dict())
    for args, match in (((8, 0), 'esa_channels=0'), ((8, 4, 'wide'), "variant='wide'"), ((True, 4), 'num_feat')):
        with pytest.raises(ValueError, match=match):
            ESA(*args)
