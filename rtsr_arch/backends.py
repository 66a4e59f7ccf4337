"""Inference backends for ``rtsr-upscale``: PyTorch, ONNX Runtime and TensorRT behind one interface.

Every backend is a network object that :mod:`rtsr_arch.inference` runs unchanged (padding to the
input multiple, exact tiling, the uint8 path are done once, there): the PyTorch network itself, or
an :class:`OnnxNetwork` / :class:`TensorRTNetwork` module that carries the PyTorch network's
declared requirements (``upscale``, ``input_multiple``, ``tile_exact``, ...) and whose ``forward``
runs the compiled graph. :func:`make_upscaler` builds one and returns the per-frame function
``upscale(uint8 frames) -> uint8 frames``.

- ``onnxruntime``: the deploy form exported by :func:`rtsr_arch.export.export_onnx` (opset 18,
  dynamic batch/height/width), which writes the graph only after onnxruntime reproduced PyTorch on
  a real photograph; CPU provider, or CUDA first on a CUDA device when onnxruntime-gpu has it.
- ``tensorrt``: :func:`tensorrt_engine` builds an engine (fp16 for ``fp16_safe`` networks) from
  the same ONNX export with one dynamic shape profile, checks it against PyTorch on a real
  photograph and keeps it in a cache (:data:`TENSORRT_CACHE`, ``$RTSR_TENSORRT_CACHE``). Needs the
  ``tensorrt`` package and a CUDA GPU; otherwise one line saying so.
- ``auto``: on CPU, onnxruntime when installed and the export succeeds (it measured 1.05-2.7x
  faster than PyTorch eager for LRSRN and RT4KSR, README), else PyTorch with one info line; on
  CUDA, TensorRT when importable, else PyTorch. A precision other than fp32 on CPU, and bf16
  anywhere, use PyTorch (the exported graphs are float32 or float16).
"""
import copy
import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .inference import network_device, requirements, upscale_image
from .utils.checkpoint import atomic_write

__all__ = ['BACKENDS', 'BackendError', 'OnnxNetwork', 'TensorRTNetwork', 'onnx_network', 'tensorrt_engine',
           'require_tensorrt', 'choose_backend', 'make_upscaler', 'TENSORRT_INSTALL', 'TENSORRT_OPSET',
           'TENSORRT_CACHE']

BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
TENSORRT_INSTALL = 'pip install tensorrt (NVIDIA TensorRT >= 8.6) on a machine with a CUDA GPU'
TENSORRT_CACHE = Path(os.environ.get('RTSR_TENSORRT_CACHE') or Path.home() / '.cache/rtsr_arch/tensorrt')
TENSORRT_OPSET = 17  # the newest opset TensorRT 8.6's ONNX parser reads (TensorRT 10 reads it too)
_DECLARED = ('upscale', 'input_multiple', 'min_input_size', 'fp16_safe', 'tile_exact', 'receptive_radius',
             'network_opt')


class BackendError(ValueError):
    """A backend cannot be used as asked; one line."""


class _CompiledNetwork(torch.nn.Module):
    """A module without parameters that declares what the PyTorch network ``net`` declares, so
    :func:`rtsr_arch.inference.upscale_tensor` pads and tiles for it as for ``net``."""

    def __init__(self, net):
        super().__init__()
        net = getattr(net, 'module', net)
        for key in _DECLARED:
            if hasattr(net, key):
                setattr(self, key, copy.deepcopy(getattr(net, key)))
        self.architecture = type(net).__name__


def _export_bytes(net, fp16=False, providers=None, opset=None):
    """The checked ONNX export of ``net`` (deploy form, dynamic dims; opset default
    :data:`rtsr_arch.export.DEFAULT_OPSET`) as bytes."""
    from .export import DEFAULT_OPSET, export_onnx, require_onnx

    require_onnx()
    with tempfile.TemporaryDirectory(prefix='rtsr-onnx-') as tmp:
        path = Path(tmp) / 'net.onnx'
        export_onnx(net, path, opset=opset or DEFAULT_OPSET, fp16=fp16, providers=providers)
        return path.read_bytes()


class OnnxNetwork(_CompiledNetwork):
    """``net``'s deploy form run by onnxruntime; ``forward`` takes and returns CPU tensors (the
    input is cast to the graph's element type, the output keeps the graph's)."""

    def __init__(self, net, session):
        super().__init__(net)
        self.session = session
        feed = session.get_inputs()[0]
        self.input_name = feed.name
        self.input_dtype = np.float16 if feed.type == 'tensor(float16)' else np.float32
        self.providers = tuple(session.get_providers())

    def forward(self, x):
        array = x.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def onnx_network(net, device='cpu', fp16=False):
    """An :class:`OnnxNetwork` for ``net``: exported and checked by
    :func:`rtsr_arch.export.export_onnx`, run with the CPU provider (CUDA first for a CUDA
    ``device`` when onnxruntime has it). ``fp16``: a half graph (``fp16_safe`` networks only)."""
    from .export import _providers, _session

    providers = _providers(device)
    return OnnxNetwork(net, _session(_export_bytes(net, fp16=fp16, providers=providers), providers))


# ----------------------------------------------------------------------------- TensorRT

def require_tensorrt(device=None):
    """The ``tensorrt`` module, or a one-line :class:`BackendError` saying what to install (the
    package, a CUDA GPU visible to torch)."""
    missing = []
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
        missing.append('the tensorrt package')
    if not torch.cuda.is_available():
        missing.append('a CUDA GPU (torch.cuda.is_available() is False)')
    elif device is not None and torch.device(device).type != 'cuda':
        missing.append('--device cuda')
    if missing:
        raise BackendError(f"the tensorrt backend needs {' and '.join(missing)}: {TENSORRT_INSTALL}")
    return trt


def _profile_dim(size, multiple, minimum):
    return max(-(-max(size, minimum) // multiple) * multiple, multiple)


class TensorRTNetwork(_CompiledNetwork):
    """A TensorRT engine of ``net``'s deploy form; ``forward`` takes a float tensor on the engine's
    GPU and returns float32 on it. Inputs outside the shape profile are a one-line ValueError."""

    def __init__(self, net, engine, profile, fp16):
        super().__init__(net)
        self.engine, self.profile, self.engine_fp16 = engine, profile, fp16
        self.context = engine.create_execution_context()
        self.register_buffer('_device_marker', torch.empty(0, device='cuda'), persistent=False)

    def forward(self, x):
        lo, hi = self.profile[0], self.profile[2]
        if not all(a <= v <= b for a, v, b in zip(lo, x.shape, hi)):
            raise ValueError(f'input {tuple(x.shape)} is outside the TensorRT profile {tuple(lo)}..{tuple(hi)}; '
                             f'use --tile {hi[-1]} or build the engine with a larger max_shape')
        x = x.to(device=self._device_marker.device, dtype=torch.float32).contiguous()
        self.context.set_input_shape('input', tuple(x.shape))
        y = torch.empty(tuple(self.context.get_tensor_shape('output')), dtype=torch.float32, device=x.device)
        self.context.set_tensor_address('input', x.data_ptr())
        self.context.set_tensor_address('output', y.data_ptr())
        stream = torch.cuda.current_stream(x.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError('TensorRT execute_async_v3 failed')
        return y


def tensorrt_engine(model, onnx=None, fp16=None, opt_shape=(1, 540, 960), max_shape=(4, 1080, 1920),
                    workspace_gib=4, check_image=None, cache_dir=TENSORRT_CACHE):
    """Build and check a TensorRT engine of the PyTorch network ``model`` (on a CUDA device).

    Args:
        model: an rtsr_arch network (training or deploy form); not modified.
        onnx: the float32 ONNX graph to build from (bytes or path); default: exported from
            ``model`` by :func:`rtsr_arch.export.export_onnx` at opset :data:`TENSORRT_OPSET`
            (checked with onnxruntime).
        fp16: allow fp16 kernels (default: ``model.fp16_safe``); input and output stay float32.
        opt_shape, max_shape: ``(batch, height, width)`` of the profile's optimum and maximum
            (rounded up to the input multiple); the minimum is one frame of the smallest size.
        workspace_gib: builder workspace limit.
        check_image: photograph for the check (see :func:`rtsr_arch.export.check_images`).
        cache_dir: where built engines are kept, named by a hash of the graph, the settings, the
            TensorRT version and the GPU, so a second run skips the build (None: no cache).

    Returns a :class:`TensorRTNetwork` whose output on two real-photo inputs was within
    ``FP16_RTOL`` (fp16) or ``FP32_RTOL`` of the output peak of PyTorch float32; else a
    :class:`BackendError`. Without tensorrt or CUDA: a one-line :class:`BackendError`.
    """
    from .export import FP16_RTOL, FP32_RTOL, check_images

    trt = require_tensorrt('cuda')
    req = requirements(model)
    fp16 = req.fp16_safe if fp16 is None else bool(fp16)
    if fp16 and not req.fp16_safe:
        raise BackendError(f'{type(model).__name__} is not fp16_safe; build the engine with fp16=False')
    if onnx is None:
        data = _export_bytes(model, opset=TENSORRT_OPSET)
    else:
        data = Path(onnx).read_bytes() if isinstance(onnx, (str, Path)) else bytes(onnx)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    explicit_batch = 0 if int(trt.__version__.split('.')[0]) >= 10 else (  # TensorRT 8.x needs the flag
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    network = builder.create_network(explicit_batch)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f'TensorRT cannot parse the ONNX export: {errors}')
    channels = int(network.get_input(0).shape[1])
    m, low = req.input_multiple, req.min_input_size
    profile_shapes = [(1, channels, _profile_dim(1, m, low), _profile_dim(1, m, low))]
    for batch, h, w in (opt_shape, max_shape):
        profile_shapes.append((int(batch), channels, _profile_dim(h, m, low), _profile_dim(w, m, low)))
    key = hashlib.sha256(data + repr((profile_shapes, fp16, workspace_gib, trt.__version__,
                                      torch.cuda.get_device_name())).encode()).hexdigest()[:20]
    cached = Path(cache_dir) / f'{key}.engine' if cache_dir else None
    if cached is not None and cached.is_file():
        serialized = cached.read_bytes()
    else:
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2 ** 30))
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)  # an fp32 engine meets FP32_RTOL only without TF32
        profile = builder.create_optimization_profile()
        profile.set_shape('input', *profile_shapes)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError('TensorRT failed to build the engine (see its log above)')
        serialized = bytes(serialized)
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None:
        raise BackendError('TensorRT cannot load the engine' + (f' {cached} (delete it to rebuild)' if cached else ''))
    net = TensorRTNetwork(model, engine, profile_shapes, fp16)

    reference = copy.deepcopy(getattr(model, 'module', model)).float().eval()
    device = network_device(reference)
    if device.type != 'cuda':
        reference = reference.cuda()
    rtol = FP16_RTOL if fp16 else FP32_RTOL
    with torch.inference_mode():
        for x in check_images(reference, check_image):
            x = x.float().cuda()
            expected, got = reference(x), net(x)
            torch.cuda.synchronize()
            diff, peak = float((got - expected).abs().max()), float(expected.abs().max())
            if not diff <= rtol * peak:
                raise BackendError(f'TensorRT engine differs from PyTorch on a {x.shape[-2]}x{x.shape[-1]} photo: '
                                   f'max |diff| {diff:.3g} > {rtol:g} x output peak {peak:.3g}')
    if cached is not None and not cached.is_file():
        atomic_write(cached, lambda f: f.write(serialized))  # only an engine that passed the check
    return net


# ----------------------------------------------------------------------------- choice

def _onnxruntime_installed():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _tensorrt_importable():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _first_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def choose_backend(backend, device, dtype=torch.float32):
    """The backend ``auto`` stands for on ``device`` with compute ``dtype`` (see the module doc);
    other names are returned as given (checked against :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend != 'auto':
        return backend
    device = torch.device(device)
    if device.type == 'cuda':
        return 'tensorrt' if _tensorrt_importable() and dtype != torch.bfloat16 else 'torch'
    return 'onnxruntime' if _onnxruntime_installed() and dtype == torch.float32 else 'torch'


def _compiled(net, backend, device, dtype):
    if backend == 'onnxruntime':
        if dtype == torch.bfloat16:
            raise BackendError('the onnxruntime backend runs fp32 or fp16 graphs; use --backend torch for bf16')
        return onnx_network(net, device, fp16=dtype == torch.float16)
    if dtype == torch.bfloat16:
        raise BackendError('the tensorrt backend builds fp32/fp16 engines; use --backend torch for bf16')
    return tensorrt_engine(net, fp16=dtype == torch.float16)


def make_upscaler(net, backend='auto', device='cpu', dtype=torch.float32, tile=None, tile_overlap=None,
                  channels_last=False, info=None):
    """``(upscale, name)``: the per-frame function ``upscale(uint8 (H, W, C) or (N, H, W, C)) ->
    uint8`` on ``backend`` ('auto', 'torch', 'onnxruntime', 'tensorrt') and the backend used.

    ``net`` is the loaded PyTorch network on ``device``; ``dtype`` the compute precision (fp16 on
    the compiled backends means an fp16 graph or engine); ``tile``/``tile_overlap`` as in
    :func:`rtsr_arch.inference.upscale_tensor`. When ``auto`` chose a compiled backend and it
    cannot be built (export or check failed, a missing package), PyTorch is used and ``info`` (a
    callable taking one line) is told why; an explicitly chosen backend fails with one line."""
    name = choose_backend(backend, device, dtype)
    runner = net
    if name != 'torch':
        try:
            runner = _compiled(net, name, device, dtype)
        except (ImportError, ValueError, RuntimeError) as exc:  # ExportError and BackendError are ValueErrors
            if backend != 'auto':
                raise BackendError(f'--backend {name}: {_first_line(exc)}') from exc
            if info is not None:
                info(f'{name} backend unavailable for {type(net).__name__} ({_first_line(exc)}); using torch')
            runner, name = net, 'torch'
    torch_args = dict(dtype=dtype, channels_last=channels_last) if name == 'torch' else {}
    return functools.partial(upscale_image, runner, tile=tile, tile_overlap=tile_overlap, **torch_args), name
