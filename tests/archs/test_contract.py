"""The architecture contract, checked on every row of ``cases.py`` (one per registered
architecture): declarations and one-line keyword errors, fused == training form on every pixel
(float64 <= 1e-10, float32 <= 1e-5 of the output scale, sizes down to the smallest valid input),
deploy builds that load the fused weights strictly, the published parameter counts, importer
round trips and detection uniqueness, the declared receptive radius, fp16 safety, official
checkpoint detection. The negative controls at the end show that each check can fail."""
import inspect
import math
import sys

import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from cases import CASES, Paper
from helpers import n_params, official_fixture, photo
from checks import (build, check_deploy_build, check_fused, check_importer_round_trip, check_param_counts,
                    has_importer, measured_receptive_radius, missing_rows, photo_input, rtsr_architectures,
                    smallest_size, valid_sizes)
from rtsr_arch.archs.contract import Float, Int, OneOf, SRArch
from rtsr_arch.archs.official import find_importers
from rtsr_arch.commands import convert
from rtsr_arch.export import export_onnx
from rtsr_arch.inference import upscale_tensor
from rtsr_arch.loader import load_model, resolve_checkpoint
from rtsr_arch.utils.options import build_network

pytestmark = pytest.mark.usefixtures('torch_single_thread')

ARCHS = rtsr_architectures()
SMALL = [(name, i, kwargs) for name, case in CASES.items() for i, kwargs in enumerate(case.small)]
SMALL_IDS = [f'{name}-{i}' for name, i, _ in SMALL]
MAIN = [(name, case.small[0]) for name, case in CASES.items()]
PAPER = [(name, paper) for name, case in CASES.items() for paper in case.paper]
FIXTURES = [(name, *fixture) for name, case in CASES.items() for fixture in case.fixtures]


def assert_rows_complete(registered, cases):
    missing, unknown = missing_rows(registered, cases)
    assert not missing, f'registered architectures without a row in tests/archs/cases.py: {missing}'
    assert not unknown, f'rows in tests/archs/cases.py for unregistered architectures: {unknown}'


def test_every_registered_architecture_has_a_row():
    assert {'LRSRN', 'RT4KSR'} <= set(ARCHS)
    assert_rows_complete(ARCHS, CASES)


# ----------------------------------------------------------------------------- declarations

@pytest.mark.parametrize('name', sorted(ARCHS))
def test_declares_the_contract(name):
    cls = ARCHS[name]
    assert issubclass(cls, SRArch), f'{name} does not subclass SRArch'
    module = sys.modules[cls.__module__]
    assert module.__file__.endswith(f'{name.lower()}_arch.py'), module.__file__
    assert module.__doc__ and cls.__doc__ and cls.paper and cls.code and cls.license
    params = inspect.signature(cls).parameters
    assert params['deploy'].default is False
    assert {'num_in_ch', 'num_out_ch', 'upscale'} <= set(params)
    unchecked = [p for p in params if p != cls.preset_key and not isinstance(params[p].annotation, (OneOf, Int))
                 and params[p].annotation not in (bool, str, int, float)]
    assert not unchecked, f'{name}: keywords without a declared type/range: {unchecked}'
    assert isinstance(cls.input_multiple, int) and cls.input_multiple >= 1
    assert isinstance(cls.min_input_size, int) and cls.min_input_size >= 1
    assert isinstance(cls.fp16_safe, bool) and isinstance(cls.tile_exact, bool)
    low, high = cls.value_range
    assert low < high
    for preset, values in cls.presets.items():  # every preset builds and says what it sets
        assert values and set(values) <= set(params), preset
    net = cls()
    assert isinstance(net.upscale, int) and net.upscale >= 1
    assert (isinstance(net.receptive_radius, int) and net.receptive_radius >= 0) if net.tile_exact else \
        net.receptive_radius is None
    assert net.network_opt == {'type': name, **{k: p.default for k, p in params.items()}}


def _invalid_values(annotation):
    if isinstance(annotation, OneOf):
        return ['__not_a_choice__', 10 ** 6]
    if isinstance(annotation, Float):
        return ['x'] + ([annotation.min - 1] if annotation.min is not None else [])
    if isinstance(annotation, Int):
        return ['x', 1.5, True] + ([annotation.min - 1] if annotation.min is not None else [])
    return {bool: ['no', 1], str: [3], int: ['x', True], float: ['x']}[annotation]


@pytest.mark.parametrize('name', sorted(ARCHS))
def test_bad_values_are_one_line_errors(name):
    cls = ARCHS[name]
    params = inspect.signature(cls).parameters
    checked = {k: p.annotation for k, p in params.items() if k != cls.preset_key}
    if cls.preset_key:
        checked[cls.preset_key] = OneOf(*cls.presets)
    for key, annotation in checked.items():
        for value in _invalid_values(annotation):
            with pytest.raises(ValueError) as excinfo:
                cls(**{key: value})
            msg = str(excinfo.value)
            assert '\n' not in msg and name in msg and f'{key}={value!r}' in msg, msg
            if isinstance(annotation, OneOf):
                assert all(repr(c) in msg for c in annotation.choices), msg


@pytest.mark.parametrize('name', sorted(a for a in ARCHS if ARCHS[a].presets))
def test_presets_build_and_refuse_contradictions(name):
    cls = ARCHS[name]
    for preset, values in cls.presets.items():
        opt = cls(**{cls.preset_key: preset}).network_opt
        assert {k: opt[k] for k in values} == values and opt[cls.preset_key] == preset
        assert cls(**{cls.preset_key: preset}, **values).network_opt == opt  # repeating a value is fine
        key, value = next(iter(values.items()))
        other = next(v for v in _other_values(inspect.signature(cls).parameters[key].annotation, value))
        with pytest.raises(ValueError, match=f'{cls.preset_key}={preset!r} means {key}='):
            cls(**{cls.preset_key: preset, key: other})


def _other_values(annotation, value):
    if isinstance(annotation, OneOf):
        return (c for c in annotation.choices if c != value)
    return (value + 1,)


# ----------------------------------------------------------------------------- fusion

@pytest.mark.parametrize('name, i, kwargs', SMALL, ids=SMALL_IDS)
def test_fused_equals_training(name, i, kwargs):
    for dtype in (torch.float64, torch.float32):
        model = build(name, kwargs, dtype=dtype)
        for j, (h, w) in enumerate(valid_sizes(model)):
            x = photo_input(model, h, w, dtype, batch=2 if j == len(valid_sizes(model)) - 1 else 1)
            y, fused = check_fused(model, x)
        assert (y < 0).any() or (y > 1).any(), 'outputs are clamped or degenerate'
        check_deploy_build(fused, x)


@pytest.mark.parametrize('name, paper', PAPER, ids=[f'{n}-{p.source}' for n, p in PAPER])
def test_paper_configurations(name, paper):
    check_param_counts(name, paper)
    model = build(name, paper.kwargs)
    s = smallest_size(model)
    check_fused(model, photo_input(model, 2 * s, 3 * s, torch.float64))


@pytest.mark.parametrize('name', sorted(CASES))
def test_defaults_are_the_papers_main_configuration(name):
    main = CASES[name].paper[0]
    assert main.kwargs == {}, f'{name}: the first paper row must be the defaults'
    assert n_params(ARCHS[name](deploy=True)) == main.deploy_params


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize('name, i, kwargs', SMALL, ids=SMALL_IDS)
def test_importer_round_trip_and_unique_detection(name, i, kwargs):
    model = build(name, kwargs)
    x = photo_input(model, *valid_sizes(model)[-1], torch.float64)
    fused = rtsr_arch.reparameterize(build(name, kwargs))
    if not has_importer(name):
        for form in (model, fused):  # no other importer may claim it
            assert [imp.arch for imp, _ in find_importers(form.state_dict())] == []
        pytest.skip(f'{name} has no importer (no official weights)')
    check_importer_round_trip(model, x)
    check_importer_round_trip(fused, x)


@pytest.mark.parametrize('name, filename, overrides, deploy_params', FIXTURES,
                         ids=[f'{n}-{f}' for n, f, _, _ in FIXTURES])
def test_official_checkpoint_is_detected_and_converts(name, filename, overrides, deploy_params, tmp_path, capsys):
    path = official_fixture(filename)
    resolved = resolve_checkpoint(path, overrides=overrides)
    assert resolved.how == f'official {name} checkpoint' and resolved.network_opt['type'] == name
    model = load_model(path, overrides=overrides)
    assert n_params(model) == deploy_params
    # rtsr-convert without --arch: the converted checkpoint rebuilds the same network, bit for bit
    out = tmp_path / 'converted.pth'
    args = ['--input', str(path), '--out', str(out), *[f'--set={k}={v}' for k, v in overrides.items()]]
    assert convert.main(args) == 0
    converted = load_model(out)
    assert converted.network_opt == model.network_opt
    x = photo_input(model, *valid_sizes(model)[-1], torch.float32)
    with torch.no_grad():
        assert torch.equal(converted(x), model(x))


# ----------------------------------------------------------------------------- declared requirements

@pytest.mark.parametrize('name, i, kwargs', SMALL, ids=SMALL_IDS)
def test_declared_receptive_radius_is_measured(name, i, kwargs):
    model = build(name, kwargs)
    if not model.tile_exact:
        pytest.skip(f'{name} has a global operation: no finite receptive field')
    assert measured_receptive_radius(model) == model.receptive_radius


@pytest.mark.parametrize('name, kwargs', MAIN, ids=list(CASES))
def test_fp16_declaration(name, kwargs):
    model = build(name, kwargs, dtype=torch.float32)
    if not model.fp16_safe:
        pytest.skip(f'{name} declares fp16 unsafe')
    x = photo_input(model, *valid_sizes(model)[-1], torch.float32)
    with torch.no_grad():
        y32 = model(x)
        y16 = model.half()(x.half()).float()
    assert torch.isfinite(y16).all()
    assert (y16 - y32).abs().max() <= 1e-2 * y32.abs().max()


# ----------------------------------------------------------------------------- inference and export

def _padded(n, model):
    m = model.input_multiple
    return max(-(-n // m) * m, smallest_size(model))


@pytest.mark.parametrize('name, i, kwargs', SMALL, ids=SMALL_IDS)
def test_upscale_pads_to_the_input_multiple(name, i, kwargs):
    """A 37x51 photo crop (not a multiple of 2 or 3) comes out exactly scale*H x scale*W and equals
    the network run on the edge-replicated input, cropped."""
    model = build(name, kwargs)
    x = photo_input(model, 37, 51, torch.float64, batch=2)
    y = upscale_tensor(model, x)
    s = model.upscale
    assert y.shape == (2, x.shape[1], 37 * s, 51 * s)
    with torch.no_grad():
        ref = model(F.pad(x, (0, _padded(51, model) - 51, 0, _padded(37, model) - 37), mode='replicate'))
    assert torch.equal(y, ref[..., :37 * s, :51 * s])


@pytest.mark.parametrize('name, kwargs', MAIN, ids=list(CASES))
def test_tiled_equals_untiled(name, kwargs):
    """Tiles not dividing the image, and smaller than their overlap (the declared radius): equal to
    the untiled output in float64 (<= 1e-12), and to float rounding in float32 (<= 1e-5 relative)."""
    model = build(name, kwargs)
    if not model.tile_exact:
        pytest.skip(f'{name} has a global operation: tiling is not exact')
    x = photo_input(model, 37, 51, torch.float64)
    ref = upscale_tensor(model, x)
    for tile in (5, 13, 24):
        assert (upscale_tensor(model, x, tile=tile) - ref).abs().max() <= 1e-12, tile
    model, x = model.float(), x.float()
    ref = upscale_tensor(model, x)
    assert (upscale_tensor(model, x, tile=16) - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize('name, kwargs', MAIN, ids=list(CASES))
def test_declared_limits_are_needed(name, kwargs):
    """The declarations are honest, not just safe: an input below ``min_input_size`` (the largest size
    of the input multiple under it) fails, in both dimensions and in at least one alone, and a network declaring ``tile_exact = False`` really
    tiles differently (> 1e-3 with an overlap of 16, inference warning that it is not exact)."""
    model = build(name, kwargs)
    m, s = model.input_multiple, smallest_size(model)
    if s - m >= 1 and model.min_input_size > 1:
        failing = []
        for h, w in ((s - m, s), (s, s - m), (s - m, s - m)):
            try:
                with torch.no_grad():
                    model(photo_input(model, h, w, torch.float64))
            except RuntimeError:
                failing.append((h, w))
        # too small in both dimensions fails; so does one of them alone (LGVAN's limit is the width's)
        assert (s - m, s - m) in failing and len(failing) >= 2, failing
    if not model.tile_exact:
        x = photo_input(model, 48, 64, torch.float64)
        full = upscale_tensor(model, x)
        with pytest.warns(UserWarning, match='tile_exact'):
            tiled = upscale_tensor(model, x, tile=32, tile_overlap=16)
        assert tiled.shape == full.shape and (tiled - full).abs().max() > 1e-3


@pytest.mark.parametrize('name, kwargs', MAIN, ids=list(CASES))
def test_onnx_export_equals_pytorch(name, kwargs, tmp_path):
    """The deploy form exports with dynamic height and width and onnxruntime reproduces PyTorch on
    real photographs at two sizes (export_onnx raises otherwise); the output dims carry the scale."""
    model = build(name, kwargs, dtype=torch.float32)
    report = export_onnx(model, tmp_path / f'{name}.onnx')
    s = model.upscale
    assert tuple(report.output_dims[-2:]) == (f'{s}*height', f'{s}*width'), report.output_dims
    assert report.max_abs_diff <= 1e-4 * max(c.peak for c in report.checks)


@pytest.mark.parametrize('name, kwargs', MAIN, ids=list(CASES))
def test_short_training_lowers_the_loss(name, kwargs):
    """40 Adam steps from the default initialization on real photographs (HR crops and their
    antialiased bicubic LR): the mean L1 of the last 5 steps is well below that of the first 5."""
    torch.manual_seed(0)
    model = build_network({'type': name, **kwargs}).train()
    s, m = model.upscale, model.input_multiple
    lr_size = max(smallest_size(model), 4 * m, math.ceil(12 / m) * m)
    hr = torch.cat([photo(p, lr_size * s, lr_size * s) for p in ('astronaut', 'coffee', 'chelsea', 'rocket')])
    lq = F.interpolate(hr, scale_factor=1 / s, mode='bicubic', antialias=True, align_corners=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = F.l1_loss(model(lq), hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f'{name}: mean L1 {first:.4f} -> {last:.4f}')
    assert last < 0.7 * first, f'{name}: mean L1 {first:.4f} -> {last:.4f}'


# ----------------------------------------------------------------------------- negative controls

def test_negative_control_missing_row_fails():
    with pytest.raises(AssertionError, match='without a row'):
        assert_rows_complete({**ARCHS, 'NewNet': object}, CASES)
    with pytest.raises(AssertionError, match='unregistered'):
        assert_rows_complete(ARCHS, {**CASES, 'Gone': None})


@pytest.mark.parametrize('name', sorted(CASES))
def test_negative_control_wrong_parameter_count_fails(name):
    paper = CASES[name].paper[0]
    with pytest.raises(AssertionError, match='deploy'):
        check_param_counts(name, Paper(paper.kwargs, paper.deploy_params + 1, paper.train_params))


@pytest.mark.parametrize('name', sorted(CASES))
def test_negative_control_broken_fusion_fails(name, monkeypatch):
    """Scale every fused kernel by 1.01: the comparison of the forms must catch it."""
    from rtsr_arch.archs.rep import ReparamBlock

    real_fuse = {}
    model = build(name, CASES[name].small[0])
    for block in model.modules():
        if isinstance(block, ReparamBlock):
            cls = type(block)
            real_fuse.setdefault(cls, cls.fuse)
            monkeypatch.setattr(cls, 'fuse', lambda self, f=real_fuse[cls]: (1.01 * f(self)[0], f(self)[1]))
    if not real_fuse:
        pytest.skip(f'{name} has no reparameterizable block')
    x = photo_input(model, *valid_sizes(model)[-1], torch.float64)
    with pytest.raises(AssertionError, match='fused vs training'):
        check_fused(model, x)


@pytest.mark.parametrize('name, kwargs', MAIN, ids=list(CASES))
def test_negative_control_wrong_radius_fails(name, kwargs):
    model = build(name, kwargs)
    if not model.tile_exact:
        pytest.skip('no radius')
    model.receptive_radius -= 1
    assert measured_receptive_radius(model) != model.receptive_radius
