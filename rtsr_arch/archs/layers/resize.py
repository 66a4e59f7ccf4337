"""Nearest-neighbour resizing to a size that follows the input, exact in exported graphs.

SAFMN-style modulation layers (MFA, GFMN, SAFMN) pool a feature map to ``(H // f, W // f)`` and
bring it back with ``F.interpolate(y, size=(H, W), mode='nearest')``. PyTorch picks source row

    ``src(i) = min(floor(i * s), n_in - 1)``,  ``s = float32(n_in) / float32(n_out)``,

all in float32 (ATen's ``nearest_idx``: ``compute_scales_value`` then
``nearest_neighbor_compute_source_index``; the same on CPU and CUDA, whatever the tensor's dtype).
Both ONNX exporters turn the op into ``Resize(mode=nearest, coordinate_transformation_mode=
asymmetric, nearest_mode=floor)`` with the output ``sizes``, which onnxruntime evaluates as
``floor(i / (n_out / n_in))``: a different float32 rounding, which picks the neighbouring source row
for some sizes (measured with onnxruntime 1.32: 417 of the 8,768 (n_in, n_out) pairs
``(H // 8, H)`` and ``(H // 16, H)`` for H = 16..4399 differ, the first at H = 114). An exported
network would then be silently wrong at those sizes.

:func:`resize_nearest` calls ``F.interpolate`` in eager mode and, while a graph is captured
(TorchScript tracing, ONNX export, ``torch.compile`` / ``torch.export``), the gather form
:func:`resize_nearest_by_gather`, which evaluates PyTorch's own formula with recorded shape
arithmetic (float32 division and product, floor, clamp, then ``index_select`` per axis): the same
source indices, so the same values, bit for bit, at every size.
"""
import torch
from torch.nn import functional as F

from .pooling import capturing_graph

__all__ = ['resize_nearest', 'resize_nearest_by_gather', 'nearest_source_index']


def nearest_source_index(n_in, n_out, device=None):
    """The source indices ``F.interpolate(..., size=n_out, mode='nearest')`` reads along an axis of
    ``n_in`` samples: ``min(floor(i * float32(n_in / n_out)), n_in - 1)`` for ``i < n_out``, computed
    in float32 exactly as ATen does. ``n_in``/``n_out`` may be ints or traced sizes."""
    one = torch.ones((), dtype=torch.float32, device=device)
    scale = (one * n_in) / (one * n_out)  # float32(n_in) / float32(n_out), correctly rounded
    src = torch.floor(torch.arange(n_out, device=device).to(torch.float32) * scale)
    return torch.minimum(src, one * n_in - 1).to(torch.int64)


def resize_nearest_by_gather(x, size):
    """``F.interpolate(x, size=size, mode='nearest')`` for an (N, C, H, W) ``x`` written as two
    gathers with traceable index arithmetic (see the module docstring): bit-identical values."""
    h, w = size
    rows = nearest_source_index(x.shape[-2], h, x.device)
    cols = nearest_source_index(x.shape[-1], w, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def resize_nearest(x, size):
    """``F.interpolate(x, size=size, mode='nearest')``: the op itself in eager mode, its exact
    traceable gather form (:func:`resize_nearest_by_gather`) while a graph is captured."""
    if capturing_graph():
        return resize_nearest_by_gather(x, size)
    return F.interpolate(x, size=tuple(size), mode='nearest')
