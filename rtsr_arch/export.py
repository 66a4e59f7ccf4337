"""ONNX export of a network's deploy form, checked against PyTorch with onnxruntime.

:func:`export_onnx` writes ONE self-contained ``.onnx`` file (every weight inside it, no external
data) of the reparameterized network, with dynamic batch, height and width, and writes it only
after onnxruntime has reproduced PyTorch's output on a real photograph at two sizes: the file
under the final name exists only when the check passed (written atomically; a failed check leaves
an earlier file at that path untouched).

The graph, for a network of scale ``s`` with ``C`` input and ``C'`` output channels::

    input   float32[batch, C, height, width]        RGB in [0, 1], NCHW
    output  float32[batch, C', s*height, s*width]   unclamped

so a front-end reading the graph finds the scale in the output's symbolic dims (``2*height``), and
``metadata_props`` say the rest (:data:`METADATA_KEYS`; :func:`read_metadata` decodes them):
``upscale``, ``input_multiple`` (height and width must be multiples of it: pad, then crop the
output), ``min_input_size``, ``fp16_safe``, ``tile_exact``, ``receptive_radius`` (the overlap for
exact tiling), ``architecture`` and ``network_opt`` (JSON, rebuilds the network), ``opset``,
``precision``, ``rtsr_arch_version``.

Exporter and opset. torch 2.14 has two exporters; both were tried on LRSRN and RT4KSR:

- the TorchScript exporter (``dynamo=False``, "legacy"): names every dim as asked
  (``dynamic_axes``), so the output dims are exactly ``2*height``/``2*width``; fully dynamic
  (PixelUnshuffle becomes Reshape with 0/-1 dims, no Shape ops, no baked size); any opset up to 20;
  about 0.2 s per export. torch marks it deprecated (a DeprecationWarning, silenced here).
- the torch.export exporter (``dynamo=True``, torch's default): invents its symbol names
  (``s77``, ``s53``) and, for RT4KSR, output dims ``4*((s53//2))`` that this module rewrites to
  ``batch``/``height``/``2*height``; opset 18 natively (its down-conversion to 17 fails on
  ReduceMean's axes); 4-18 s per export on a 2-core machine.

Both give equivalent single-file graphs that onnxruntime runs to ~1e-6 of PyTorch. The default
``exporter='auto'`` uses the TorchScript exporter (exact dim names, 20-50x faster, opsets 17-20)
and falls back to torch.export when a future torch no longer has it; ``exporter='dynamo'`` chooses
the latter. The default opset is **18**: both exporters produce it natively (torch.export's
operator library is written at opset 18), onnxruntime >= 1.14 runs it, and it holds every
operator these networks need (Conv, DepthToSpace, ReduceMean, Erf). ``opset=17`` (TorchScript
exporter) serves runtimes limited to 17 (TensorRT 8.6); ``opset=20`` exports GELU as one ``Gelu``.

Half precision (``fp16=True``): half weights AND half input/output (the PyTorch ``net.half()``
graph), not float IO with internal casts: the graph computes what PyTorch's half inference
computes, the 4K frames cross the host/device boundary at half the bytes (a 3x2160x3840 output is
99.5 MB in float32, 49.8 MB in float16), and front-ends (chaiNNer, vs-mlrt) read the precision from
the input's element type and feed half. Only for networks declaring ``fp16_safe``. onnxruntime's
CPU provider runs such graphs, but it inserts casts to float32 around operators without a float16
CPU kernel: the CPU check verifies the graph and its half-rounded weights and activations between
those operators, not float16 arithmetic (a GPU provider computes in half).
"""
import contextlib
import copy
import inspect
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

from . import __version__
from .archs.rep import reparameterize
from .utils.checkpoint import atomic_write

__all__ = ['export_onnx', 'check_onnx', 'read_metadata', 'require_onnx', 'check_images', 'load_check_image',
           'ExportReport', 'ShapeCheck', 'ExportError', 'ExportCheckError', 'DEFAULT_OPSET', 'OPSETS', 'FP32_RTOL',
           'FP16_RTOL', 'METADATA_KEYS', 'EXPORTERS']

DEFAULT_OPSET = 18
OPSETS = range(13, 21)  # the TorchScript exporter's range we allow (13: Split/Squeeze axes as inputs)
EXPORTERS = ('auto', 'legacy', 'dynamo')

# The check: max |onnxruntime - PyTorch| <= atol + rtol * max |PyTorch| over the output.
# float32: both sides compute in float32 (eps 1.2e-7) but sum each conv's 9*C products in a
# different order (oneDNN/ATen vs MLAS blocking, Winograd) and evaluate erf/sqrt differently; over
# 10-25 layers that is 1e-7..1e-5 of the output scale (measured: <= 3e-6 on these networks). 1e-4
# keeps >= 10x margin yet is 20x below half an 8-bit level (1/510), and any wrong weight, operator
# or baked shape gives errors of 1e-3..1.
FP32_RTOL = 1e-4
# float16 (eps 9.8e-4) against the float32 PyTorch network: every weight and activation rounded
# to half is ~5e-4 relative per layer, growing over the layers; measured 0.6e-3..2.2e-3 of the
# output peak on trained (official RT4KSR x2/x3, LRSRN x4) and random-weight networks. 2e-2 (about 5 8-bit levels) still catches a wrong
# graph or an overflow (inf/nan fails any bound).
FP16_RTOL = 2e-2

METADATA_KEYS = ('architecture', 'network_opt', 'upscale', 'input_multiple', 'min_input_size', 'fp16_safe',
                 'tile_exact', 'receptive_radius', 'value_range', 'precision', 'opset', 'exporter',
                 'input_layout', 'paper', 'code', 'rtsr_arch_version', 'torch_version')

INPUT_NAME, OUTPUT_NAME = 'input', 'output'
DEFAULT_PHOTO = 'astronaut'  # scikit-image's sample photo (public domain, NASA), no download
# check sizes (height, width): not square, not multiples of 8 (the usual padding), after rounding
# to the input multiple; the second runs a batch of 2 crops, the trace uses a third size
CHECK_SIZE, SECOND_SIZE, TRACE_SIZE = (94, 130), (62, 106), (38, 54)


class ExportError(ValueError):
    """The network cannot be exported as asked; one line."""


class ExportCheckError(ExportError):
    """onnxruntime's output differs from PyTorch's by more than the tolerance; one line."""


@dataclass(frozen=True)
class ShapeCheck:
    """One onnxruntime-vs-PyTorch comparison: shapes, ``max |ort - torch|``, the bound it met."""
    input_shape: tuple
    output_shape: tuple
    max_abs_diff: float
    tolerance: float
    peak: float  # max |PyTorch output|, the output scale the relative tolerance multiplies

    def __str__(self):
        shape = 'x'.join(map(str, self.input_shape))
        return f'{shape}: max |diff| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g})'


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how it was checked."""
    path: Path
    opset: int
    exporter: str  # 'legacy' (TorchScript) or 'dynamo' (torch.export)
    precision: str  # 'fp32' or 'fp16'
    input_name: str
    output_name: str
    input_dims: tuple  # e.g. ('batch', 3, 'height', 'width')
    output_dims: tuple  # e.g. ('batch', 3, '2*height', '2*width')
    input_type: str  # 'float32' or 'float16'
    metadata: dict  # metadata_props as written (strings)
    checks: tuple  # ShapeCheck, one per size
    providers: tuple  # onnxruntime execution providers used for the check
    size_bytes: int
    trace_shape: tuple = field(default=())

    @property
    def max_abs_diff(self):
        return max(c.max_abs_diff for c in self.checks)

    def summary(self):
        """A few lines for a console: file, opset, dims, the check."""
        dims = lambda ds: '[' + ', '.join(map(str, ds)) + ']'  # noqa: E731
        return '\n'.join([
            f'wrote {self.path} ({self.size_bytes / 1e3:.1f} kB, opset {self.opset}, {self.exporter} exporter, '
            f'{self.precision})',
            f'input  {self.input_name}: {self.input_type}{dims(self.input_dims)}',
            f'output {self.output_name}: {self.input_type}{dims(self.output_dims)}',
            f"onnxruntime ({', '.join(self.providers)}) vs PyTorch float32: "
            + '; '.join(map(str, self.checks)),
        ])


# ----------------------------------------------------------------------------------------------
# check images

def _fit(n, multiple, minimum):
    """``n`` rounded up to a multiple of ``multiple`` (and >= ``minimum``) that is not a multiple
    of 8 unless ``multiple`` is (so padding-to-8 assumptions are exercised)."""
    n = max(math.ceil(n / multiple), math.ceil(minimum / multiple), 1) * multiple
    while n % 8 == 0 and multiple % 8:
        n += multiple
    return n


def load_check_image(image):
    """A float64 HxWx3 RGB array in [0, 1] from a path (PNG/JPEG/..., 8 or 16 bit, grey or RGBA),
    a uint8/uint16/float HxW[xC] array, or None (scikit-image's astronaut)."""
    if image is None:
        return np.asarray(getattr(skimage.data, DEFAULT_PHOTO)(), dtype=np.float64)[..., :3] / 255.0
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ExportError(f'{path}: no such check image')
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise ExportError(f'{path}: cannot be read as an image')
        if array.ndim == 3:
            array = cv2.cvtColor(array[..., :3], cv2.COLOR_BGR2RGB)
        image = array
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array / 255.0
    elif array.dtype == np.uint16:
        array = array / 65535.0
    else:
        array = array.astype(np.float64)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ExportError(f'check image: expected HxW, HxWx3 or HxWx4, got shape {array.shape}')
    array = array[..., :3]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def _channels(rgb, num_in_ch):
    """NCHW float64 tensor of ``num_in_ch`` channels from an N x H x W x 3 RGB array: RGB, BT.601
    luma for one channel, else the RGB channels repeated."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)
    if num_in_ch == 3:
        return x
    if num_in_ch == 1:
        return (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x[:, [i % 3 for i in range(num_in_ch)]]


def check_images(net, image=None):
    """The two float64 NCHW inputs of the check for ``net``: (1) a ``94x130`` crop of the check
    image (default: scikit-image's astronaut) or, for a given image, the whole image (cropped to
    the input multiple); (2) a batch of 2 different ``62x106`` crops. Sizes are rounded up to
    ``net.input_multiple`` (not to multiples of 8) and at least ``net.min_input_size``."""
    multiple, minimum = int(getattr(net, 'input_multiple', 1)), int(getattr(net, 'min_input_size', 1))
    num_in_ch = int(_network_opt(net).get('num_in_ch', 3))
    rgb = load_check_image(image)
    height, width = rgb.shape[:2]
    if image is None:
        h1, w1 = (_fit(n, multiple, minimum) for n in CHECK_SIZE)
        top, left = (height - h1) // 2, (width - w1) // 2
    else:
        h1, w1 = height // multiple * multiple, width // multiple * multiple
        top = left = 0
    h2, w2 = (_fit(n, multiple, minimum) for n in SECOND_SIZE)
    if image is not None and (h1, w1) == (h2, w2):
        h2, w2 = h2 + multiple, w2 - multiple if w2 - multiple >= minimum else w2 + multiple
    if min(h1, w1) < minimum or h2 + 3 > height or w2 + 3 > width:
        raise ExportError(f'check image is {height}x{width}: too small for {type(net).__name__} '
                          f'(needs {max(h1, h2 + 3, minimum)}x{max(w1, w2 + 3, minimum)} or larger)')
    first = rgb[None, top:top + h1, left:left + w1]
    t2, l2 = (height - h2 - 3) // 3, (width - w2 - 3) // 3  # off-centre, so it differs from the first
    second = np.stack([rgb[t2:t2 + h2, l2:l2 + w2], rgb[t2 + 3:t2 + 3 + h2, l2 + 3:l2 + 3 + w2]])
    return [_channels(first, num_in_ch), _channels(second, num_in_ch)]


# ----------------------------------------------------------------------------------------------
# export

def _network_opt(net):
    opt = getattr(net, 'network_opt', None)
    return dict(opt) if isinstance(opt, dict) else {'type': type(net).__name__}


def _device(net):
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device('cpu')


def _metadata(net, opset, precision, exporter):
    opt = _network_opt(net)
    cls = type(net)
    value_range = getattr(net, 'value_range', (0.0, 1.0))
    radius = getattr(net, 'receptive_radius', None)
    return {
        'architecture': str(opt.get('type', cls.__name__)),
        'network_opt': json.dumps(opt, default=str),
        'upscale': str(int(net.upscale)),
        'input_multiple': str(int(getattr(net, 'input_multiple', 1))),
        'min_input_size': str(int(getattr(net, 'min_input_size', 1))),
        'fp16_safe': json.dumps(bool(getattr(net, 'fp16_safe', False))),
        'tile_exact': json.dumps(bool(getattr(net, 'tile_exact', False))),
        'receptive_radius': json.dumps(None if radius is None else int(radius)),
        'value_range': json.dumps([float(v) for v in value_range]),
        'precision': precision,
        'opset': str(opset),
        'exporter': exporter,
        'input_layout': 'NCHW RGB float in [0, 1]; output NCHW, unclamped',
        'paper': str(getattr(cls, 'paper', '')),
        'code': str(getattr(cls, 'code', '')),
        'rtsr_arch_version': __version__,
        'torch_version': torch.__version__.split('+')[0],
    }


def read_metadata(path_or_model):
    """``metadata_props`` of an exported file (path, bytes or ``onnx.ModelProto``), decoded: ints,
    bools, None, lists and ``network_opt`` as a dict; other values as strings."""
    import onnx
    model = path_or_model
    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    elif isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    out = {}
    for prop in model.metadata_props:
        value = prop.value
        if prop.key in ('network_opt', 'fp16_safe', 'tile_exact', 'receptive_radius', 'value_range'):
            value = json.loads(value)
        elif prop.key in ('upscale', 'input_multiple', 'min_input_size', 'opset'):
            value = int(value)
        out[prop.key] = value
    return out


def _dims(value_info):
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


def _export_legacy(model, x, opset, scale):
    out_h, out_w = (f'{scale}*height', f'{scale}*width') if scale != 1 else ('height', 'width')
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the exporter's own DeprecationWarning, TracerWarnings
        switch = {'dynamo': False} if _has_dynamo_switch() else {}  # torch < 2.5: the only exporter
        torch.onnx.export(model, (x,), buffer, **switch, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'},
                                        OUTPUT_NAME: {0: 'batch', 2: out_h, 3: out_w}})
    import onnx
    return onnx.load_from_string(buffer.getvalue())


def _export_dynamo(model, x, opset, scale):
    """torch.export exporter; its symbol names replaced by ``batch``/``height``/``width`` and the
    output dims by ``{scale}*height``/``{scale}*width``."""
    dynamic = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')
        program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], external_data=False, optimize=True, verbose=False,
                                    dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
    onnx_model = program.model_proto
    in_dims = onnx_model.graph.input[0].type.tensor_type.shape.dim
    rename = {}
    for index, name in ((0, 'batch'), (2, 'height'), (3, 'width')):
        if not in_dims[index].dim_param:
            raise ExportError(f'the dynamo exporter made input dim {index} static ({in_dims[index].dim_value})')
        rename[in_dims[index].dim_param] = name
    pattern = re.compile(r'\b(' + '|'.join(map(re.escape, rename)) + r')\b')
    values = list(onnx_model.graph.input) + list(onnx_model.graph.output) + list(onnx_model.graph.value_info)
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: rename[m.group(1)], dim.dim_param)
    out_dims = onnx_model.graph.output[0].type.tensor_type.shape.dim
    # e.g. 4*((height//2)) for RT4KSR: equal to 2*height for valid inputs (height % 2 == 0)
    out_dims[0].dim_param = 'batch'
    out_dims[2].dim_param, out_dims[3].dim_param = ((f'{scale}*height', f'{scale}*width') if scale != 1
                                                    else ('height', 'width'))
    return onnx_model


def _has_dynamo_switch():
    """torch >= 2.5: ``torch.onnx.export`` chooses the exporter with ``dynamo=``."""
    return 'dynamo' in inspect.signature(torch.onnx.export).parameters


def _legacy_available():
    try:
        from torch.onnx import utils  # noqa: F401  (the TorchScript exporter's module)
    except ImportError:
        return False
    return True


def _export_model(net, opset, fp16, exporter, trace_shape, device):
    scale = int(net.upscale)
    dtype = torch.float16 if fp16 else torch.float32
    model = copy.deepcopy(net).to(device=device, dtype=dtype).eval()
    x = torch.rand(trace_shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    if exporter == 'auto':
        exporter = 'legacy' if _legacy_available() else 'dynamo'
    if exporter == 'dynamo' and not _has_dynamo_switch():
        raise ExportError(f'torch {torch.__version__} has no dynamo ONNX exporter (torch >= 2.5); use exporter=legacy')
    with torch.no_grad():
        if exporter == 'legacy':
            return _export_legacy(model, x, opset, scale), exporter
        return _export_dynamo(model, x, opset, scale), exporter


def _session(model_bytes, providers):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=options, providers=list(providers))


def _providers(device, providers=None):
    if providers is not None:
        return tuple(providers)
    import onnxruntime as ort
    if torch.device(device).type == 'cuda' and 'CUDAExecutionProvider' in ort.get_available_providers():
        return ('CUDAExecutionProvider', 'CPUExecutionProvider')
    return ('CPUExecutionProvider',)


def require_onnx():
    """onnx and onnxruntime, or a one-line :class:`ExportError` naming the extra to install."""
    missing = []
    for module in ('onnx', 'onnxruntime'):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: pip install 'rtsr_arch[export]'")


def _first_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + '...'


def check_onnx(model, reference, images=None, atol=0.0, rtol=None, providers=None):
    """Run onnxruntime on ``images`` (default: :func:`check_images` of ``reference``) and compare
    with the PyTorch network ``reference`` computed in float32 on its device.

    ``model``: a path, serialized bytes or ``onnx.ModelProto``. The file's input element type
    decides what is fed (float32 or float16). Passes when
    ``max |ort - torch| <= atol + rtol * max |torch|`` for every image (``rtol`` default:
    :data:`FP32_RTOL`, or :data:`FP16_RTOL` for a float16 graph); else :class:`ExportCheckError`.
    Returns the :class:`ShapeCheck` list."""
    require_onnx()
    import onnx
    if isinstance(model, (str, Path)):
        model_bytes = Path(model).read_bytes()
    elif isinstance(model, onnx.ModelProto):
        model_bytes = model.SerializeToString()
    else:
        model_bytes = bytes(model)
    device = _device(reference)
    try:
        session = _session(model_bytes, _providers(device, providers))
    except Exception as exc:  # onnxruntime's own exception types (InvalidGraph, Fail, ...)
        raise ExportCheckError(f'onnxruntime cannot load the graph: {_first_line(exc)}') from exc
    feed = session.get_inputs()[0]
    half = feed.type == 'tensor(float16)'
    rtol = (FP16_RTOL if half else FP32_RTOL) if rtol is None else rtol
    ref_net = copy.deepcopy(reference).float().eval()
    checks = []
    for x in (check_images(reference) if images is None else images):
        x32 = x.to(torch.float32)
        with torch.no_grad():
            expected = ref_net(x32.to(device)).cpu().double()
        fed = x32.half() if half else x32
        try:
            got = session.run(None, {feed.name: fed.numpy()})[0]
        except Exception as exc:  # e.g. a baked (static) input size
            raise ExportCheckError(f'onnxruntime cannot run the graph on input {"x".join(map(str, x.shape))}: '
                                   f'{_first_line(exc)}') from exc
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportCheckError(f'onnxruntime output {tuple(got.shape)} != PyTorch {tuple(expected.shape)} '
                                   f'for input {tuple(x.shape)}')
        got = torch.from_numpy(got.astype(np.float64))
        diff = float((got - expected).abs().max()) if torch.isfinite(got).all() else math.inf
        peak = float(expected.abs().max())
        bound = atol + rtol * peak
        check = ShapeCheck(tuple(x.shape), tuple(got.shape), diff, bound, peak)
        if not diff <= bound:
            raise ExportCheckError(f'onnxruntime differs from PyTorch at input {"x".join(map(str, x.shape))}: '
                                   f'max |diff| {diff:.3g} > tolerance {bound:.3g} '
                                   f'({atol:g} + {rtol:g} x output peak {peak:.3g})')
        checks.append(check)
    return checks


def export_onnx(net, path, opset=DEFAULT_OPSET, fp16=False, check_image=None, atol=0.0, rtol=None,
                exporter='auto', reference=None, providers=None):
    """Export the deploy form of ``net`` to the single ONNX file ``path`` and check it.

    Args:
        net: an rtsr_arch network (training or deploy form, on CPU or CUDA); not modified: a
            copy is reparameterized, cast and exported in eval mode.
        path: the ``.onnx`` file; written atomically, only after the check passed.
        opset: ONNX opset (13-20, default :data:`DEFAULT_OPSET` = 18; see the module docstring).
        fp16: export half weights and half input/output (only for ``net.fp16_safe`` networks).
        check_image: the photograph of the check: a path, an HxWx3 array, or None (a 94x130 crop
            of scikit-image's astronaut). A second check runs a batch of 2 crops at 62x106 (sizes
            rounded to ``net.input_multiple``); the graph is traced at a third size (38x54).
        atol, rtol: the check passes when ``max |ort - torch| <= atol + rtol * max |torch|``
            (``rtol`` default :data:`FP32_RTOL` = 1e-4, :data:`FP16_RTOL` = 2e-2 for fp16).
        exporter: 'auto' (TorchScript exporter when torch has it, else torch.export), 'legacy'
            or 'dynamo'.
        reference: the PyTorch network to compare with (default ``net`` itself, in float32).
        providers: onnxruntime execution providers (default CPU; CUDA first for a CUDA network
            when onnxruntime has it).

    Returns an :class:`ExportReport`. Raises :class:`ExportError` (one line) for an impossible
    request and :class:`ExportCheckError` when onnxruntime and PyTorch disagree.
    """
    require_onnx()
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    name = type(net).__name__
    if not isinstance(net, torch.nn.Module) or not hasattr(net, 'upscale'):
        raise ExportError(f'{name}: not an rtsr_arch network (no upscale attribute)')
    if opset not in OPSETS:
        raise ExportError(f'opset {opset}: expected {OPSETS.start}..{OPSETS.stop - 1}')
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r}: expected one of {', '.join(EXPORTERS)}")
    if exporter == 'dynamo' and opset < 18:
        raise ExportError(f'opset {opset}: the dynamo exporter writes opset 18 or later (use exporter=legacy)')
    if fp16 and not getattr(net, 'fp16_safe', False):
        raise ExportError(f'{name} is not fp16_safe (declared by the architecture); export it in float32')
    if path.is_dir():
        raise ExportError(f'{path}: is a directory')
    device = _device(net)
    multiple, minimum = int(getattr(net, 'input_multiple', 1)), int(getattr(net, 'min_input_size', 1))
    num_in_ch = int(_network_opt(net).get('num_in_ch', 3))
    images = check_images(net, check_image)
    trace_shape = (1, num_in_ch) + tuple(_fit(n, multiple, minimum) for n in TRACE_SIZE)

    deploy = reparameterize(copy.deepcopy(net).float()).eval()
    precision = 'fp16' if fp16 else 'fp32'
    onnx_model, used = _export_model(deploy, opset, fp16, exporter, trace_shape, device)
    if used == 'legacy' and opset != onnx_model.opset_import[0].version:
        raise ExportError(f'the exporter wrote opset {onnx_model.opset_import[0].version}, not {opset}')
    for prop in onnx_model.metadata_props:
        if prop.key in METADATA_KEYS:
            raise ExportError(f'the exporter wrote metadata key {prop.key!r} itself')
    metadata = _metadata(deploy, max(o.version for o in onnx_model.opset_import if o.domain in ('', 'ai.onnx')),
                         precision, used)
    for key, value in metadata.items():
        onnx_model.metadata_props.add(key=key, value=value)
    onnx_model.doc_string = (f"{metadata['architecture']} x{metadata['upscale']} (deploy form), exported by "
                             f"rtsr_arch {metadata['rtsr_arch_version']}")
    if any(uses_external_data(t) for t in onnx_model.graph.initializer):
        raise ExportError('the exporter stored weights as external data; expected one self-contained file')
    try:
        data = onnx_model.SerializeToString()
    except ValueError as exc:  # protobuf's 2 GB limit
        raise ExportError(f'the graph does not fit one ONNX file ({str(exc).splitlines()[0]})') from exc
    onnx.checker.check_model(onnx_model)

    graph = onnx_model.graph
    in_dims, out_dims = _dims(graph.input[0]), _dims(graph.output[0])
    scale = int(deploy.upscale)
    want = ('batch', num_in_ch, 'height', 'width')
    want_out = ('batch', int(_network_opt(net).get('num_out_ch', num_in_ch)),
                f'{scale}*height' if scale != 1 else 'height', f'{scale}*width' if scale != 1 else 'width')
    if in_dims != want or out_dims != want_out:
        raise ExportError(f'unexpected graph dims: input {list(in_dims)}, output {list(out_dims)}')

    used_providers = _providers(device, providers)
    checks = check_onnx(data, net if reference is None else reference, images, atol, rtol, used_providers)
    atomic_write(path, lambda f: f.write(data))
    elem = graph.input[0].type.tensor_type.elem_type
    return ExportReport(path=path, opset=int(metadata['opset']), exporter=used, precision=precision,
                        input_name=graph.input[0].name, output_name=graph.output[0].name, input_dims=in_dims,
                        output_dims=out_dims, input_type=onnx.helper.tensor_dtype_to_np_dtype(elem).name,
                        metadata=metadata, checks=tuple(checks), providers=used_providers, size_bytes=len(data),
                        trace_shape=trace_shape)
