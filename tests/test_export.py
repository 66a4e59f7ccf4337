"""ONNX export (:mod:`rtsr_arch.export`, ``rtsr-export``): the file onnxruntime runs must compute
what PyTorch computes, on real photographs, at sizes other than the traced one.

Networks: LRSRN (Gankhuyag, Yoon et al., CVPRW 2023, Ganzooo/LRSRN) 'plain' and 'blockv2', RT4KSR
(Zamfir, Conde, Timofte, CVPRW 2023, eduardzamfir/RT4KSR) x2 and x3, in small configurations with
random weights, exported from their TRAINING form (the export reparameterizes a copy), so the
check covers fusion and export together. Measured here (onnxruntime 1.32 CPU vs torch 2.14 CPU,
float32): max |diff| 1e-6..2e-6 for output peaks of 1.5-4; the bar is 1e-4 of the peak. The
official RT4KSR x2 and CASR's LRSRN x4 teacher (AIS 2024 RTSR, CASR) are exported when the fixtures
are present (max |diff| 3.0e-6 and 1.6e-6).
Output dims follow the ONNX IR's symbolic dim_param strings (onnx/onnx docs/IR.md, "Tensor shapes").
"""
import copy
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import ROOT, load_module, load_photo, photo, randomize

from rtsr_arch.commands.export import main as export_main
from rtsr_arch.export import (DEFAULT_OPSET, FP16_RTOL, FP32_RTOL, METADATA_KEYS, ExportCheckError, ExportError,
                              check_onnx, export_onnx, read_metadata)
from rtsr_arch.loader import load_model, save_model
from rtsr_arch.utils.options import build_network

FIXTURES = Path(os.environ.get('RTSR_OFFICIAL_FIXTURES')
                or Path(__file__).resolve().parents[2] / 'shared/fixtures/official')

CONFIGS = {
    'lrsrn_plain_x2': dict(type='LRSRN', upscale=2, num_feat=16, num_block=2, feature_size=32, variant='plain'),
    'lrsrn_blockv2_x2': dict(type='LRSRN', upscale=2, num_feat=16, num_block=2, feature_size=32, variant='blockv2'),
    'rt4ksr_x2': dict(type='RT4KSR', upscale=2, num_feat=16, num_block=2),
    'rt4ksr_x3': dict(type='RT4KSR', upscale=3, num_feat=16, num_block=2),
}


def make_net(name, seed=0):
    return randomize(build_network(CONFIGS[name]), seed=seed, std=0.5, fan_in=True).eval()


def ort_run(path_or_bytes, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes),
                                   sess_options=options, providers=['CPUExecutionProvider'])
    feed = session.get_inputs()[0]
    return session.run(None, {feed.name: x.numpy()})[0]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """name -> (training-form net, ExportReport), exported once with one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp('onnx')
    out = {}
    for name in CONFIGS:
        net = make_net(name)
        out[name] = (net, export_onnx(net, folder / f'{name}.onnx'))
    torch.set_num_threads(previous)
    return out


@pytest.mark.parametrize('name', list(CONFIGS))
def test_onnxruntime_equals_pytorch_on_photos(exported, name, torch_single_thread):
    net, report = exported[name]
    s = net.upscale
    assert net.network_opt['deploy'] is False, 'export must reparameterize a copy, not the network given'
    # the export's own check: two sizes, the second a batch of 2, neither the traced size
    (first, second) = report.checks
    assert first.input_shape == (1, 3, 94, 130) and second.input_shape == (2, 3, 62, 106)
    assert report.trace_shape[2:] not in (first.input_shape[2:], second.input_shape[2:])
    for check in report.checks:
        assert check.output_shape == (check.input_shape[0], 3, s * check.input_shape[2], s * check.input_shape[3])
        assert 0 < check.max_abs_diff <= FP32_RTOL * check.peak, check
    # an independent run: other photos, another size, a batch of 3 (dynamic batch)
    for x in (photo('coffee', 46, 70), photo('chelsea', 34, 58, batch=3)):
        got = ort_run(report.path, x)
        with torch.no_grad():
            want = net(x).numpy()
        assert got.shape == want.shape == (x.shape[0], 3, s * x.shape[2], s * x.shape[3])
        diff = np.abs(got - want).max()
        assert diff <= FP32_RTOL * np.abs(want).max(), f'{name}: max |diff| {diff:.3g}'


@pytest.mark.parametrize('name', list(CONFIGS))
def test_graph_dims_name_the_scale_and_file_is_self_contained(exported, name):
    net, report = exported[name]
    s = net.upscale
    model = onnx.load(str(report.path), load_external_data=False)
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(model.graph.input[0]) == ['batch', 3, 'height', 'width']
    assert dims(model.graph.output[0]) == ['batch', 3, f'{s}*height', f'{s}*width']
    assert report.output_dims == ('batch', 3, f'{s}*height', f'{s}*width')
    assert [(o.domain, o.version) for o in model.opset_import] == [('', DEFAULT_OPSET)]
    assert model.graph.initializer and not any(onnx.external_data_helper.uses_external_data(t)
                                               for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    # nothing but the .onnx files in the folder: no external data, no temporary files left
    assert sorted(p.name for p in report.path.parent.iterdir()) == sorted(f'{n}.onnx' for n in CONFIGS)


@pytest.mark.parametrize('name', list(CONFIGS))
def test_metadata_props(exported, name):
    net, report = exported[name]
    props = {p.key: p.value for p in onnx.load(str(report.path), load_external_data=False).metadata_props}
    assert set(METADATA_KEYS) <= set(props)
    assert props['upscale'] == str(net.upscale)
    assert props['input_multiple'] == str(net.input_multiple) == ('2' if name.startswith('rt4ksr') else '1')
    assert props['min_input_size'] == str(net.min_input_size)
    assert props['opset'] == str(DEFAULT_OPSET) and props['precision'] == 'fp32'
    assert json.loads(props['fp16_safe']) is True and json.loads(props['tile_exact']) is True
    assert json.loads(props['receptive_radius']) == net.receptive_radius
    meta = read_metadata(report.path)
    assert meta['architecture'] == CONFIGS[name]['type'] and meta['upscale'] == net.upscale
    # network_opt rebuilds the deploy form: same parameter shapes as the fused copy
    rebuilt = build_network(meta['network_opt'])
    assert meta['network_opt']['deploy'] is True
    fused = copy.deepcopy(net).reparameterize()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in fused.state_dict().items()}


def test_fp16_graph(tmp_path, torch_single_thread):
    net = make_net('rt4ksr_x2')
    report = export_onnx(net, tmp_path / 'half.onnx', fp16=True)
    model = onnx.load(str(report.path))
    half = onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == half
    assert model.graph.output[0].type.tensor_type.elem_type == half
    assert all(t.data_type == half for t in model.graph.initializer if t.data_type in (half, onnx.TensorProto.FLOAT))
    assert read_metadata(model)['precision'] == 'fp16' and report.input_type == 'float16'
    # onnxruntime's CPU provider runs it; the error is that of half precision (larger than
    # float32's ~1e-6, within FP16_RTOL of the output peak)
    x = photo('rocket', 58, 82)
    got = ort_run(report.path, x.half()).astype(np.float64)
    with torch.no_grad():
        want = net(x).double().numpy()
    diff = np.abs(got - want).max()
    assert 1e-4 * np.abs(want).max() < diff <= FP16_RTOL * np.abs(want).max(), diff
    assert report.max_abs_diff > 1e-5


def test_fp16_refused_for_unsafe_network(tmp_path):
    net = make_net('rt4ksr_x2')
    net.fp16_safe = False
    with pytest.raises(ExportError, match='not fp16_safe') as info:
        export_onnx(net, tmp_path / 'half.onnx', fp16=True)
    assert '\n' not in str(info.value) and not (tmp_path / 'half.onnx').exists()


def test_check_fails_against_a_different_network(tmp_path, torch_single_thread):
    """The check can fail: the graph of one network compared with another of the same shape
    (another seed) raises, and writes nothing (an earlier file at the path stays as it was)."""
    net, other = make_net('lrsrn_plain_x2', seed=0), make_net('lrsrn_plain_x2', seed=1)
    path = tmp_path / 'net.onnx'
    path.write_bytes(b'earlier file')
    with pytest.raises(ExportCheckError, match='differs from PyTorch') as info:
        export_onnx(net, path, reference=other)
    assert '\n' not in str(info.value)
    assert path.read_bytes() == b'earlier file'
    assert [p.name for p in tmp_path.iterdir()] == ['net.onnx']  # no temporary file left


def test_check_fails_for_a_perturbed_graph(exported, torch_single_thread):
    """One bias of the last conv moved by 0.01 (an output change of 0.01 on one channel of the
    sub-pixel grid): the check rejects the graph at the default tolerance, accepts the original."""
    net, report = exported['rt4ksr_x2']
    model = onnx.load(str(report.path))
    last_conv = [n for n in model.graph.node if n.op_type == 'Conv'][-1]
    bias = next(t for t in model.graph.initializer if t.name == last_conv.input[2])
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] += 0.01
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    assert check_onnx(report.path, net)  # the file as written passes
    with pytest.raises(ExportCheckError, match='max .diff. 0.01'):
        check_onnx(model, net)


def test_dynamo_exporter(tmp_path, torch_single_thread):
    """torch.export exporter: its invented symbols (s77, 4*((s53//2)) for RT4KSR) are renamed."""
    net = make_net('rt4ksr_x2')
    report = export_onnx(net, tmp_path / 'dynamo.onnx', exporter='dynamo')
    assert report.exporter == 'dynamo'
    assert report.input_dims == ('batch', 3, 'height', 'width')
    assert report.output_dims == ('batch', 3, '2*height', '2*width')
    assert report.max_abs_diff <= FP32_RTOL * max(c.peak for c in report.checks)
    x = photo('coffee', 42, 66, batch=2)
    with torch.no_grad():
        want = net(x).numpy()
    assert np.abs(ort_run(report.path, x) - want).max() <= FP32_RTOL * np.abs(want).max()


@pytest.mark.parametrize('kwargs, match', [
    (dict(opset=12), 'opset 12'),
    (dict(exporter='tracer'), 'exporter'),
    (dict(opset=17, exporter='dynamo'), 'opset 17'),
    (dict(check_image=np.zeros((10, 10, 3), np.uint8)), 'too small'),
])
def test_bad_requests_are_one_line(tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match) as info:
        export_onnx(make_net('rt4ksr_x2'), tmp_path / 'x.onnx', **kwargs)
    assert '\n' not in str(info.value) and not (tmp_path / 'x.onnx').exists()


def test_not_an_sr_network(tmp_path):
    with pytest.raises(ExportError, match='not an rtsr_arch network'):
        export_onnx(torch.nn.Conv2d(3, 3, 3), tmp_path / 'x.onnx')


def test_command(tmp_path, capsys, torch_single_thread):
    import cv2
    ckpt = tmp_path / 'lrsrn.pth'
    save_model(make_net('lrsrn_blockv2_x2'), ckpt)
    out = tmp_path / 'lrsrn.onnx'
    assert export_main([str(ckpt), '--out', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'opset 18' in text and '[batch, 3, 2*height, 2*width]' in text and 'max |onnxruntime - PyTorch|' in text
    written = out.read_bytes()
    assert read_metadata(out)['network_opt']['variant'] == 'blockv2'

    # refuses to overwrite without --overwrite; never over its input
    assert export_main([str(ckpt), '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('rtsr-export: error:') and 'exists' in err
    assert out.read_bytes() == written
    assert export_main([str(ckpt), '--out', str(ckpt), '--overwrite']) == 2
    assert 'is the MODEL file' in capsys.readouterr().err and ckpt.is_file()

    # --overwrite with a PNG check image: the whole image (cropped to the input multiple) is checked
    png = tmp_path / 'crop.png'
    cv2.imwrite(str(png), np.ascontiguousarray(load_photo('chelsea')[50:127, 60:171, ::-1]))  # 77x111, BGR
    assert export_main([str(ckpt), '--out', str(out), '--overwrite', '--check-image', str(png)]) == 0
    assert '1x3x77x111: max |diff|' in capsys.readouterr().out


def test_command_errors(tmp_path, capsys):
    assert export_main([str(tmp_path / 'missing.pth'), '--out', str(tmp_path / 'x.onnx')]) == 2
    err = capsys.readouterr().err
    assert err == f"rtsr-export: error: {tmp_path / 'missing.pth'}: no such checkpoint file\n"
    assert export_main(['m.pth']) == 2
    assert '--out' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f'official fixtures not found at {FIXTURES} '
                                                  f'(set RTSR_OFFICIAL_FIXTURES)')
@pytest.mark.parametrize('filename, extra, scale', [
    ('rt4ksr_x2.pth', [], 2),  # eduardzamfir/RT4KSR@fd6627a, the released x2 weights
    ('casr_teacher_deploy.pt', ['--set', 'act_type=gelu'], 4),  # CASR's LRSRN x4 m10 C64 teacher
])
def test_official_checkpoints(tmp_path, capsys, filename, extra, scale, torch_single_thread):
    ckpt = FIXTURES / filename
    out = tmp_path / 'official.onnx'
    assert export_main([str(ckpt), '--out', str(out), *extra]) == 0, capsys.readouterr().err
    assert f'{scale}*height' in capsys.readouterr().out
    net = load_model(ckpt, overrides={'act_type': 'gelu'} if extra else None)
    x = photo('immunohistochemistry', 50, 74)
    got = ort_run(out, x)
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == (1, 3, 50 * scale, 74 * scale)
    assert np.abs(got - want).max() <= FP32_RTOL * np.abs(want).max()
    assert read_metadata(out)['architecture'] == ('RT4KSR' if scale == 2 else 'LRSRN')


def test_bench_tool_runs(capsys, torch_single_thread):
    bench = load_module(ROOT / 'tools/bench_onnx.py')
    rows = bench.main(['--models', 'RT4KSR', '--sizes', '34x46', '--reps', '2', '--warmup', '0', '--threads', '1',
                       '--no-official'])
    assert len(rows) == 1 and rows[0]['threads'] == 1 and rows[0]['input'] == '34x46'
    assert rows[0]['torch_ms'] > 0 and rows[0]['ort_ms'] > 0 and rows[0]['ratio'] > 0
    assert '| RT4KSR x2 | 34x46 | 1 |' in capsys.readouterr().out


def test_check_catches_a_baked_size(tmp_path, torch_single_thread):
    """A graph traced without dynamic axes (the size baked in) passes at its trace size and fails
    the second check (another size, batch 2) with one line: why the export checks two sizes."""
    import warnings
    net = make_net('rt4ksr_x2')
    path = tmp_path / 'static.onnx'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(copy.deepcopy(net).reparameterize(), (torch.rand(1, 3, 94, 130),), str(path), dynamo=False,
                          opset_version=DEFAULT_OPSET)
    with pytest.raises(ExportCheckError, match='cannot run the graph on input 2x3x62x106') as info:
        check_onnx(path, net)
    assert '\n' not in str(info.value)
