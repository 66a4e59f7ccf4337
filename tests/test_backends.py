"""rtsr_arch.backends: onnxruntime against PyTorch on real photographs (padding and exact tiling
done by rtsr_arch.inference for both), the choice ``auto`` makes, the fall-back line, and the
TensorRT path as far as a machine without CUDA/TensorRT goes (its one-line error; the ONNX graph
it would build from). The bench_video tool's smoke run is here too (it times these backends)."""
import json

import numpy as np
import onnx
import pytest
import torch

import rtsr_arch  # noqa: F401
from helpers import ROOT, load_module, load_photo, photo, randomize
from rtsr_arch import backends
from rtsr_arch.backends import (BackendError, OnnxNetwork, choose_backend, make_upscaler, onnx_network,
                                require_tensorrt, tensorrt_engine)
from rtsr_arch.commands.upscale import main
from rtsr_arch.export import ExportError
from rtsr_arch.inference import upscale_image, upscale_tensor
from rtsr_arch.loader import save_model
from rtsr_arch.utils.options import build_network

pytestmark = pytest.mark.usefixtures('torch_single_thread')

NETS = {
    'lrsrn_x2': {'type': 'LRSRN', 'num_feat': 8, 'num_block': 2, 'feature_size': 16, 'upscale': 2},
    'rt4ksr_x2': {'type': 'RT4KSR', 'num_feat': 8, 'num_block': 1, 'upscale': 2},  # input multiple 2
}
HAS_TRT = torch.cuda.is_available() and backends._tensorrt_importable()


def _net(name, seed=0):
    return randomize(build_network(NETS[name]), seed=seed, fan_in=True).eval()


@pytest.mark.parametrize('name', list(NETS))
def test_onnxruntime_equals_torch_on_a_photo(name):
    """An odd-sized photo crop (37x51: padded to the input multiple) and a batch of two: the
    onnxruntime network within 1e-4 of the output peak of PyTorch, untiled and tiled (tiles of
    16 with the declared receptive radius); a network with other weights is far off (control)."""
    net = _net(name)
    ort_net = onnx_network(net)
    assert isinstance(ort_net, OnnxNetwork) and ort_net.providers == ('CPUExecutionProvider',)
    assert (ort_net.upscale, ort_net.input_multiple, ort_net.tile_exact) == (2, net.input_multiple, net.tile_exact)
    x = photo('coffee', 37, 51, batch=2)
    y = upscale_tensor(net, x)
    peak = float(y.abs().max())
    for tile in (None, 16):
        got = upscale_tensor(ort_net, x, tile=tile)
        assert got.shape == (2, 3, 74, 102)
        diff = float((got - y).abs().max())
        print(f'{name} tile {tile}: max |onnxruntime - torch| {diff:.2e} (peak {peak:.3g})')
        assert diff <= 1e-4 * peak
    other = upscale_tensor(onnx_network(_net(name, seed=1)), x)
    assert float((other - y).abs().max()) > 0.05 * peak


def test_auto_picks_onnxruntime_on_cpu_and_falls_back_with_one_line(monkeypatch, tmp_path, capsys):
    """auto on CPU: onnxruntime (fp32), torch for fp16/bf16 or without onnxruntime; the uint8
    upscaler matches the torch one on a photo to one level. When the export fails, auto says so in
    one info line and uses torch; an explicit --backend onnxruntime fails with one line."""
    assert choose_backend('auto', 'cpu') == 'onnxruntime'
    assert choose_backend('auto', 'cpu', torch.bfloat16) == 'torch'
    assert choose_backend('torch', 'cpu') == 'torch'
    with pytest.raises(BackendError, match='expected one of'):
        choose_backend('openvino', 'cpu')
    net = _net('rt4ksr_x2')
    img = np.ascontiguousarray(load_photo('chelsea')[40:73, 60:107])  # 33x47: odd, padded
    upscale, used = make_upscaler(net, 'auto', 'cpu')
    assert used == 'onnxruntime'
    got, ref = upscale(img).astype(int), upscale_image(net, img).astype(int)
    assert got.shape == (66, 94, 3) and np.abs(got - ref).max() <= 1

    monkeypatch.setattr(backends, '_onnxruntime_installed', lambda: False)
    assert choose_backend('auto', 'cpu') == 'torch'
    monkeypatch.undo()

    def failing_export(*args, **kwargs):
        raise ExportError('the exporter cannot trace this network')
    monkeypatch.setattr(backends, '_export_bytes', failing_export)
    lines = []
    upscale, used = make_upscaler(net, 'auto', 'cpu', info=lines.append)
    assert used == 'torch' and len(lines) == 1 and 'cannot trace' in lines[0] and 'using torch' in lines[0]
    assert np.array_equal(upscale(img), upscale_image(net, img))
    with pytest.raises(BackendError, match='--backend onnxruntime: the exporter cannot trace'):
        make_upscaler(net, 'onnxruntime', 'cpu')

    # through the command: the info line on stderr, the summary names the backend
    path = tmp_path / 'net.pth'
    save_model(net, path)
    (tmp_path / 'in').mkdir()
    from PIL import Image
    Image.fromarray(img).save(tmp_path / 'in' / 'cat.png')
    assert main([str(path), str(tmp_path / 'in'), '--out', str(tmp_path / 'out')]) == 0
    captured = capsys.readouterr()
    assert '(torch)' in captured.out
    info_lines = [line for line in captured.err.splitlines() if 'info:' in line]
    assert len(info_lines) == 1 and info_lines[0].startswith('rtsr-upscale: info: onnxruntime backend unavailable')


@pytest.mark.skipif(HAS_TRT, reason='TensorRT and CUDA are present: the error path cannot be reached')
def test_tensorrt_without_it_is_one_line(tmp_path, capsys):
    """Without TensorRT or CUDA: require_tensorrt, tensorrt_engine and --backend tensorrt give one
    line saying what to install (exit 2 for the command, nothing written)."""
    with pytest.raises(BackendError) as info:
        require_tensorrt()
    assert 'pip install tensorrt' in str(info.value) and '\n' not in str(info.value)
    with pytest.raises(BackendError, match='pip install tensorrt'):
        tensorrt_engine(_net('lrsrn_x2'))
    path = tmp_path / 'net.pth'
    save_model(_net('lrsrn_x2'), path)
    (tmp_path / 'in').mkdir()
    from PIL import Image
    Image.fromarray(np.ascontiguousarray(load_photo('astronaut')[:32, :32])).save(tmp_path / 'in' / 'a.png')
    assert main([str(path), str(tmp_path / 'in'), '--out', str(tmp_path / 'out'), '--backend', 'tensorrt']) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('rtsr-upscale: error: ') and 'pip install tensorrt' in lines[0]
    assert not (tmp_path / 'out').exists() or not list((tmp_path / 'out').iterdir())


def test_tensorrt_onnx_side_and_profile():
    """What the engine is built from, checked on CPU: the float32 opset-17 export of the deploy form
    with input named 'input' of dims (batch, 3, height, width) (the profile's tensor and dynamic axes),
    which onnxruntime runs at the profile's minimum (one frame of one input multiple) and at a
    batch of 3; profile sizes round up to the input multiple."""
    net = _net('rt4ksr_x2')
    data = backends._export_bytes(net, opset=backends.TENSORRT_OPSET)
    model = onnx.load_from_string(data)
    assert model.opset_import[0].version == backends.TENSORRT_OPSET == 17
    graph = model.graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert graph.input[0].name == 'input' and dims == ['batch', 3, 'height', 'width']
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    from rtsr_arch.export import _session
    session = _session(data, ['CPUExecutionProvider'])
    for shape in ((1, 3, 2, 2), (3, 3, 10, 14)):
        x = photo('rocket', *shape[2:], batch=shape[0])
        got = session.run(None, {'input': x.numpy()})[0]
        with torch.no_grad():
            ref = net(x).numpy()
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    assert [backends._profile_dim(n, 2, 1) for n in (1, 540, 541, 1080)] == [2, 540, 542, 1080]
    assert backends._profile_dim(3, 4, 16) == 16


@pytest.mark.skipif(not HAS_TRT, reason='needs TensorRT and a CUDA GPU')
def test_tensorrt_engine_matches_torch():
    """On a CUDA machine with TensorRT: an fp16 engine of RT4KSR within FP16_RTOL of PyTorch
    float32 on the photographs of the check (done inside), and through the uint8 path."""
    net = _net('rt4ksr_x2').cuda()
    engine = tensorrt_engine(net, opt_shape=(1, 64, 64), max_shape=(2, 128, 128))
    img = np.ascontiguousarray(load_photo('chelsea')[40:73, 60:107])
    got, ref = upscale_image(engine, img).astype(int), upscale_image(net, img).astype(int)
    assert np.abs(got - ref).max() <= 8


def test_bench_video_quick(tmp_path):
    """tools/bench_video.py --quick (2 frames of 32x48, RT4KSR, both CPU backends): one row per
    backend with positive rates, and the .md/.json files."""
    bench = load_module(ROOT / 'tools/bench_video.py')
    assert bench.main(['--quick', '--frames', '2', '--size', '32x48', '--models', 'RT4KSR', '--no-official',
                       '--backends', 'torch', 'onnxruntime', '--threads', '1', '--out', str(tmp_path)]) == 0
    data = json.loads((tmp_path / 'bench_video.json').read_text())
    assert [r['backend'] for r in data['rows']] == ['torch', 'onnxruntime (CPU)']
    for row in data['rows']:
        assert row['frames'] == 2 and all(row[k] > 0 for k in ('fps', 'decode_fps', 'inference_fps', 'encode_fps'))
    text = (tmp_path / 'bench_video.md').read_text()
    assert '| RT4KSR x2 | onnxruntime (CPU) | cpu |' in text and 'QUICK' in text
