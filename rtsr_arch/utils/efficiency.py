"""Efficiency measures: the NTIRE 2023 RTSR score, the NTIRE 2023 ESR counters and a
memory-traffic (roofline) bound for one forward pass.

Sources: the NTIRE 2023 RTSR organisers' ``eduardzamfir/NTIRE23-RTSR`` (``demo/runtime_demo.py``,
``demo/calc_scoring.ipynb``) and the NTIRE 2023 ESR organisers' ``ofsoundof/NTIRE2023_ESR``
(``utils/model_summary.py``).
"""
import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['ntire23_rtsr_score', 'EfficiencyCounts', 'count_ntire_esr', 'OpTraffic', 'memory_traffic',
           'traffic_bound_ms', 'summarize_traffic']


def ntire23_rtsr_score(psnr, runtime_ms, psnr_interp=31.697655):
    """NTIRE 2023 RTSR score, as ``demo/calc_scoring.ipynb`` computes it.

    diff = max(psnr - psnr_interp, 0); 0 when diff == 0, else ``2**diff * 2 / (0.1 * sqrt(t))``
    = 20 * 2**diff / sqrt(t) by Python precedence (not 2**(2*diff)). ``runtime_ms`` is the FP16
    runtime of the RTSR protocol; ``psnr_interp`` the bicubic PSNR of the evaluation set.
    """
    diff = max(psnr - psnr_interp, 0)
    if diff == 0:
        return 0
    return 2**diff * 2 / (0.1 * math.sqrt(runtime_ms))


# ---------------------------------------------------------------------------------------------
# NTIRE 2023 ESR counters (``ofsoundof/NTIRE2023_ESR:utils/model_summary.py``)

_CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)
_RELU_TYPES = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)


@dataclass
class EfficiencyCounts:
    """Counts with the NTIRE 2023 ESR conventions; the official tables divide ``flops``
    and ``activations`` by 1e9 and 1e6.

    Attributes:
        params: every registered parameter (``sum(p.numel() for p in model.parameters())``).
        flops: what the counter calls FLOPs: conv MACs without bias + ReLU-family output numel
            per call + 2 * BatchNorm2d numel + Linear in * out.
        activations: sum of the output numel of every conv call.
        num_conv: number of conv calls.
    """
    params: int
    flops: int
    activations: int
    num_conv: int


def _conv_flops(module, output):
    # k_h * k_w * C_in * (C_out / groups) MACs per output position (bias excluded), times
    # batch * H_out * W_out, as the official ``conv_flops_counter_hook``
    per_position = math.prod(module.kernel_size) * module.in_channels * (module.out_channels // module.groups)
    return per_position * output.shape[0] * math.prod(output.shape[2:])


def _module_flops(module, inputs, output):
    if isinstance(module, _CONV_TYPES):
        return _conv_flops(module, output)
    if isinstance(module, _RELU_TYPES):
        return output.numel()
    if isinstance(module, nn.BatchNorm2d):
        return inputs[0].numel() * (2 if module.affine else 1)
    if isinstance(module, nn.Linear):
        return inputs[0].numel() // module.in_features * module.in_features * module.out_features
    return 0  # GELU, SiLU, Sigmoid, norms, pooling, PixelShuffle, element-wise, functional convs


def count_ntire_esr(model, input_shape=(1, 3, 256, 256)):
    """Params, FLOPs, activations and #conv of ``model`` by the NTIRE 2023 ESR counter.

    Forward hooks on registered modules only: a module reused k times counts k times; functional
    ops and unregistered modules count nothing. The official counter runs one
    ``(1, 3, 256, 256)`` input; ``input_shape`` includes the batch, and conv, activation and
    numel-based counts scale with it exactly as the official hooks do (batch 1 is the convention).
    The forward runs on a ``meta`` deep copy, so any input size (e.g. ``(1, 3, 1080, 1920)``)
    costs no compute or memory; ``model`` itself is not touched.
    """
    params = sum(p.numel() for p in model.parameters())
    meta_model = copy.deepcopy(model).to('meta').eval()
    totals = {'flops': 0, 'activations': 0, 'num_conv': 0}

    def hook(module, inputs, output):
        totals['flops'] += _module_flops(module, inputs, output)
        if isinstance(module, _CONV_TYPES):
            totals['activations'] += output.numel()
            totals['num_conv'] += 1

    handles = [m.register_forward_hook(hook) for m in meta_model.modules()]
    try:
        with torch.no_grad():
            meta_model(torch.empty(input_shape, device='meta'))
    finally:
        for handle in handles:
            handle.remove()
    return EfficiencyCounts(params=params, **totals)


# ---------------------------------------------------------------------------------------------
# Memory traffic of one forward (aten level)

_aten = torch.ops.aten
# Ops that only create a view or change metadata: no memory is read or written.
# (``reshape``/``flatten`` are composite: a copying reshape reaches dispatch as ``clone`` +
# ``_unsafe_view`` and its clone is counted.)
_VIEW_OPS = frozenset({
    _aten.view, _aten._unsafe_view, _aten.reshape, _aten.flatten, _aten.unflatten, _aten.permute,
    _aten.expand, _aten.t, _aten.transpose, _aten.detach, _aten.alias, _aten.slice, _aten.select,
    _aten.unsqueeze, _aten.squeeze, _aten.as_strided, _aten.split, _aten.chunk, _aten.unbind,
})
_CONV_OPS = frozenset({_aten.convolution, _aten.conv2d})


@dataclass
class OpTraffic:
    """One memory-touching aten op of a forward.

    Attributes:
        name: innermost module running the op ('' for the top-level module).
        op: aten op name, e.g. ``aten.convolution.default``.
        bytes_read: nbytes of the tensor inputs, each distinct storage once.
        bytes_written: nbytes of the tensor outputs (in-place ops count as read and written).
        flops: 2 * MACs for convolutions; 0 for every other op (element-wise work is not counted).
    """
    name: str
    op: str
    bytes_read: int
    bytes_written: int
    flops: int


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


def _bytes_read(args, kwargs):
    per_storage = {}
    for t in _tensors((args, kwargs)):
        key = t.untyped_storage()._cdata
        per_storage[key] = max(per_storage.get(key, 0), t.numel() * t.element_size())
    return sum(per_storage.values())


def _conv_op_flops(args, output):
    # aten.convolution(input, weight, bias, stride, padding, dilation, transposed, ...);
    # weight is (C_out, C_in/g, k...) or, transposed, (C_in, C_out/g, k...)
    inp, weight = args[0], args[1]
    transposed = len(args) > 6 and bool(args[6])
    per_element = weight.shape[1] * math.prod(weight.shape[2:])
    return 2 * per_element * (inp.numel() if transposed else output.numel())


class _TrafficRecorder(TorchDispatchMode):

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket not in _VIEW_OPS:
            flops = _conv_op_flops(args, out) if func.overloadpacket in _CONV_OPS else 0
            written = sum(t.numel() * t.element_size() for t in _tensors(out))
            self.ops.append(OpTraffic(self.names[-1] if self.names else '', str(func), _bytes_read(args, kwargs),
                                      written, flops))
        return out


def memory_traffic(model, input_shape, dtype=torch.float16):
    """Every memory-touching aten op of one forward of ``model`` at ``input_shape``, in order.

    The model is deep-copied to ``meta`` and cast to ``dtype`` (``model.half()`` for the FP16
    RTSR runtime protocol), so no compute runs and ``model`` is not modified. View/metadata
    ops (:data:`_VIEW_OPS`) are skipped. Each op is assumed to read its inputs and write its
    outputs once (no fusion, no cache reuse): an upper-bound traffic model per op.
    """
    meta_model = copy.deepcopy(model).to(device='meta', dtype=dtype).eval()
    names = []  # stack of the modules whose forward is running

    def enter(name):
        return lambda module, inputs: names.append(name)  # list.append returns None: input unchanged

    def leave(module, inputs, output):
        names.pop()

    handles = []
    for name, module in meta_model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    x = torch.empty(input_shape, device='meta', dtype=dtype)
    recorder = _TrafficRecorder(names)
    try:
        with torch.no_grad(), recorder:
            meta_model(x)
    finally:
        for handle in handles:
            handle.remove()
    return recorder.ops


def traffic_bound_ms(ops, bandwidth_gbs, peak_tflops):
    """Per-op roofline lower bound of the runtime in ms: sum over ops of
    max((read + written) / bandwidth, flops / peak), with bandwidth in GB/s (1e9 B/s) and peak in
    TFLOP/s (1e12 FLOP/s). Kernel-launch overheads are not included."""
    seconds = sum(max((op.bytes_read + op.bytes_written) / (bandwidth_gbs * 1e9), op.flops / (peak_tflops * 1e12))
                  for op in ops)
    return seconds * 1e3


def summarize_traffic(ops):
    """Totals of :func:`memory_traffic`'s ops: bytes read, bytes written, bytes (both), flops."""
    read = sum(op.bytes_read for op in ops)
    written = sum(op.bytes_written for op in ops)
    return {'bytes_read': read, 'bytes_written': written, 'bytes': read + written,
            'flops': sum(op.flops for op in ops)}
