"""RLFN specifics (Kong et al., CVPR Workshops 2022, team ByteESR of NTIRE 2022 ESR; official code
and weights bytedance/RLFN ``model/{block,rlfn,rlfn_s,rlfn_ntire}.py``, ``model_zoo/*.pth``): the
official state-dict layout of the three published forms; the independent functional forward
written on the official keys (``reference.rlfn_forward``, from the published description: RLFN
paper Fig. 2, ARCHITECTURES C.2 / A.10b), computing on [0, 255] images as the official
``test_demo.py`` does, against which each official checkpoint, loaded by ``rtsr_arch.load_model``
with auto-detection, is compared on real photographs; the light ESA (16 channels, no ReLU); how the
importer tells the forms apart and what it does not claim (DIPNet's bias-free trunk, DLFAN's
``dbb_reparam`` keys). Fusion, keyword errors, parameter counts, fp16, padding and ONNX export are
checked for every architecture by test_contract.py; the NTIRE counters by test_ntire23_counts.py."""
import pytest
import torch

import rtsr_arch  # noqa: F401  (first: its compatibility shims let basicsr import)
from checks import build
from helpers import check_official_weights, conv_shapes, esa_light_shapes, official_fixture, photo, photos, randomize, \
    state_layout
from reference import rlfn_forward
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.rlfn_arch import RLFN, RLFN_VARIANTS, import_official_rlfn
from rtsr_arch.loader import load_model, resolve_checkpoint
from rtsr_arch.export import check_images, export_onnx
from rtsr_arch.utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')

# official file -> (form, C, mid, blocks, parameters)
OFFICIAL = {
    'rlfn_ntire_x4.pth': ('RLFN_Prune', 46, 48, 4, 317_218),
    'rlfn_x4.pth': ('RLFN', 52, 52, 6, 543_740),
    'rlfn_s_x4.pth': ('RLFN_S', 48, 48, 6, 470_208),
}


def rlfn_reference(sd, x):
    """The official forward on ``x`` in [0, 1]: computed on 255 x, divided by 255."""
    return rlfn_forward(sd, 255 * x) / 255


# ----------------------------------------------------------------------------- layout

def expected_layout(c, mid, n, scale=4):
    shapes = conv_shapes([('conv_1', (c, 3, 3, 3)), ('conv_2', (c, c, 3, 3)), ('upsampler.0', (3 * scale ** 2, c, 3, 3))])
    for i in range(1, n + 1):
        shapes.update(conv_shapes([('c1_r', (mid, c, 3, 3)), ('c2_r', (mid, mid, 3, 3)), ('c3_r', (c, mid, 3, 3)),
                                   ('c5', (c, c, 1, 1))] + [(f'esa.{k}', v) for k, v in esa_light_shapes(c)],
                                  f'block_{i}.'))
    return shapes


@pytest.mark.parametrize('variant', sorted(RLFN_VARIANTS))
def test_rlfn_state_dict_layout_is_official(variant):
    """bytedance/RLFN keys and shapes for each published form (ARCHITECTURES C.2), its parameter
    count by the closed form, and the light ESA (5 convs, 6,380 / 6,512 / 6,644 parameters for
    C = 44 / 48 / 52 by A.10b's formula)."""
    form = {v[0]: v[1:] for v in OFFICIAL.values()}[variant]
    c, mid, n, params = form
    model = RLFN(variant=variant)
    sd = model.state_dict()
    assert state_layout(sd) == expected_layout(c, mid, n)
    assert len(sd) == 3 * 2 + n * 9 * 2
    esa = lambda ch: ch * 16 + 16 + 16 * 16 + 16 + 2 * (9 * 16 * 16 + 16) + 16 * ch + ch  # noqa: E731
    rlfb = 9 * c * mid + mid + 9 * mid * mid + mid + 9 * mid * c + c + c * c + c + esa(c)
    assert sum(v.numel() for v in sd.values()) == 28 * c + n * rlfb + 9 * c * c + c + 9 * c * 48 + 48 == params
    assert sum(p.numel() for p in model.block_1.esa.parameters()) == esa(c)
    assert [esa(ch) for ch in (44, 48, 52)] == [6_380, 6_512, 6_644]
    assert list(dict(model.block_1.esa.named_children())) == ['conv1', 'conv_f', 'conv2', 'conv3', 'conv4']


# ----------------------------------------------------------------------------- the reference forward

def test_rlfn_equals_reference_forward_random_weights():
    """Random weights (every parameter), float64, x2 and x3, mid != C: the network on [0, 1] equals
    the reference on [0, 255] divided by 255 (no fixture needed); also at 15x15."""
    for kwargs in (dict(num_feat=12, mid_channels=10, num_block=2, upscale=2),
                   dict(num_feat=8, num_block=3, upscale=3)):
        model = randomize(RLFN(**kwargs), seed=7, std=1.0, fan_in=True).double().eval()
        sd = model.state_dict()
        for h, w in ((15, 15), (29, 18)):
            x = photos(h, w, torch.float64)
            with torch.no_grad():
                err = (model(x) - rlfn_reference(sd, x)).abs().max().item()
            assert err <= 1e-12, (kwargs, h, w, err)


@pytest.mark.parametrize('filename', sorted(OFFICIAL))
def test_rlfn_official_checkpoint_reproduces_the_reference(filename):
    """Each official file through ``load_model`` (auto-detected, no arch given; the form told from
    the shapes) equals the reference forward on two photographs (LR of the NTIRE degradation,
    32x48): float32 to rounding, float64 to ~1e-12; and super-resolves (well above bicubic)."""
    path = official_fixture(filename)
    variant, c, mid, n, params = OFFICIAL[filename]
    resolved = resolve_checkpoint(path)
    assert resolved.how == 'official RLFN checkpoint'
    assert {k: resolved.network_opt[k] for k in ('variant', 'num_feat', 'num_block', 'upscale')} == \
        dict(variant=variant, num_feat=c, num_block=n, upscale=4)
    check_official_weights(path, rlfn_reference, load_checkpoint(path), RLFN, params, tol32=1e-5, min_gain=2)


# ----------------------------------------------------------------------------- importer

@pytest.mark.parametrize('variant', sorted(RLFN_VARIANTS))
@pytest.mark.parametrize('upscale', [2, 4])
def test_rlfn_importer_names_the_published_form(variant, upscale):
    """The three forms are told apart by their shapes (C, mid, blocks) at any scale (the x2 files of
    RLFN and RLFN_S included)."""
    sd = RLFN(variant=variant, upscale=upscale).state_dict()
    assert [imp.arch for imp, _ in find_importers(sd)] == ['RLFN']
    result = import_official_rlfn(sd, {})
    assert result.network_opt['variant'] == variant and result.network_opt['upscale'] == upscale
    assert set(result.assumed) == {'act_type', 'deploy'}
    assert RLFN(**{k: v for k, v in result.network_opt.items() if k != 'type'}).network_opt == \
        {**RLFN(variant=variant, upscale=upscale).network_opt, 'act_type': 'lrelu'}


def test_rlfn_importer_leaves_other_forms_unnamed_and_other_networks_alone():
    sd = RLFN(num_feat=40, num_block=5).state_dict()
    assert import_official_rlfn(sd, {}).network_opt['variant'] is None
    # DIPNet's layout: the RLFN_Prune topology with bias-free trunk convs (ARCHITECTURES C.3)
    dipnet = {k: v for k, v in RLFN(num_feat=44, mid_channels=38, num_block=4).state_dict().items()
              if '.esa.' in k or not k.endswith('.bias')}
    assert 'RLFN' not in [imp.arch for imp, _ in find_importers(dipnet)]
    # DLFAN's deploy layout: the same top-level names, convs under ``dbb_reparam`` (C.8.6)
    dlfan = {k.replace('.c1_r.', '.c1_r.dbb_reparam.'): v
             for k, v in RLFN(num_feat=8, num_block=2).state_dict().items()}
    assert 'RLFN' not in [imp.arch for imp, _ in find_importers(dlfan)]


# ----------------------------------------------------------------------------- light ESA

def test_rlfn_light_esa_has_no_relu_and_needs_15_pixels():
    model = randomize(RLFN(num_feat=8, num_block=1), seed=2, std=1.0, fan_in=True).double().eval()
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    assert model.min_input_size == 15 and not model.tile_exact and model.receptive_radius is None
    x = photo('rocket', 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert model(x[..., :15, :15]).shape == (1, 3, 60, 60)
        with pytest.raises(RuntimeError):
            model(x[..., :14, :15])


# ----------------------------------------------------------------------------- ONNX

def test_rlfn_onnx_is_as_close_to_float64_as_pytorch(tmp_path):
    """A row where random weights on the [0, 255] range make float32 itself ill-conditioned (ESA's
    gate pushed ~255x further than by trained weights: PyTorch float32 is ~1e-4 of the output from
    float64, more than the generic ONNX check's 1e-4 between onnxruntime and PyTorch allows): the
    graph, run by onnxruntime at both check sizes, is as close to the float64 network as PyTorch's
    float32 forward is."""
    import onnxruntime

    kwargs = dict(num_feat=8, num_block=2, mid_channels=6, esa_channels=4)
    model32, model64 = build('RLFN', kwargs, dtype=torch.float32), build('RLFN', kwargs)
    path = tmp_path / 'rlfn.onnx'
    export_onnx(model32, path, rtol=1e-3)
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for x in check_images(model32):
        with torch.no_grad():
            exact, torch32 = model64(x), model32(x.float()).double()
        ort = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.float().numpy()})[0]).double()
        err_ort, err_torch = (ort - exact).abs().max().item(), (torch32 - exact).abs().max().item()
        print(f'{tuple(x.shape)}: vs float64, onnxruntime {err_ort:.3g}, PyTorch float32 {err_torch:.3g}')
        assert err_ort <= 3 * err_torch + 1e-6 * exact.abs().max().item()


def test_rlfn_official_checkpoint_exports_to_onnx(tmp_path):
    """The NTIRE 2022 entry exports (dynamic sizes through the max pool and the bilinear resize)
    and onnxruntime reproduces PyTorch within the generic 1e-4 of the output."""
    model = load_model(official_fixture('rlfn_ntire_x4.pth'))
    report = export_onnx(model, tmp_path / 'rlfn_prune.onnx')
    print(f'RLFN_Prune ONNX vs PyTorch: max |diff| {report.max_abs_diff:.3g}')
    assert report.max_abs_diff <= 1e-4 * max(c.peak for c in report.checks)
    assert tuple(report.output_dims[-2:]) == ('4*height', '4*width')
