"""Pooling whose output size follows the input size, exportable with dynamic height and width.

SAFMN-style modulation layers pool a feature map to ``(H // f, W // f)`` with
``F.adaptive_max_pool2d``. Neither ONNX exporter can export that op when the output size depends
on the input size (TorchScript exporter: "ONNX export of operator adaptive pooling, since
output_size is not constant"; torch.export exporter: conversion error), and ONNX has no adaptive
pooling operator. :func:`adaptive_max_pool2d_by` computes exactly the same values with ops that
record the shape arithmetic (sliding maxima, ``arange``, integer division and two gathers per
axis), and is used whenever a graph is captured (tracing, ONNX export, ``torch.compile`` /
``torch.export``); plain eager execution calls ``F.adaptive_max_pool2d`` itself (faster).

Why the window form is exact. Adaptive pooling of ``n`` samples to ``o`` bins takes bin ``i``
over ``[s_i, e_i)`` with ``s_i = floor(i n / o)`` and ``e_i = ceil((i + 1) n / o)``. With
``o = n // f`` every bin is at least ``n / o >= f`` and at most ``2 f`` wide (``o = 1``: the
bin is all ``n < 2 f`` samples; ``o >= 2``: ``n / o < 1.5 f`` and the bin is narrower than
``n / o + 2 < 1.5 f + 2``, i.e. at most ``2 f`` for every integer ``f``), so the two
width-``f`` windows starting at ``s_i`` and at ``e_i - f`` lie inside the bin and cover it: the bin's maximum is the larger of their two maxima. Max pooling is
separable over the rectangular bins, so rows then columns. The values are the input's own
values (maxima), so the result is bit-identical to ``F.adaptive_max_pool2d``.
"""
import torch
from torch.nn import functional as F

__all__ = ['adaptive_max_pool2d_by', 'adaptive_max_pool2d_by_windows', 'capturing_graph']


def capturing_graph():
    """True while a graph is being captured (TorchScript tracing, ONNX export, torch.compile /
    torch.export), when shape-dependent ops must be written with recorded shape arithmetic."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def _sliding_max(t, width, dim):
    """Maxima of the windows ``t[j : j + width]`` along ``dim``, ``j = 0 .. n - width``, by
    doubling (log2(width) element-wise maxima of shifted views)."""
    covered = 1
    while covered < width:
        step = min(covered, width - covered)
        n = t.shape[dim]
        t = torch.maximum(t.narrow(dim, 0, n - step), t.narrow(dim, step, n - step))
        covered += step
    return t


def _pool_axis(t, factor, dim):
    n = t.shape[dim]
    bins = n // factor
    i = torch.arange(bins, device=t.device)
    start = torch.div(i * n, bins, rounding_mode='floor')
    end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode='floor')  # ceil((i + 1) n / bins)
    windows = _sliding_max(t, factor, dim)
    return torch.maximum(windows.index_select(dim, start), windows.index_select(dim, end - factor))


def adaptive_max_pool2d_by_windows(x, factor):
    """``F.adaptive_max_pool2d(x, (H // factor, W // factor))`` written with traceable ops (see
    the module docstring); requires ``H, W >= factor``."""
    factor = int(factor)
    return _pool_axis(_pool_axis(x, factor, -2), factor, -1)


def adaptive_max_pool2d_by(x, factor):
    """``F.adaptive_max_pool2d(x, (H // factor, W // factor))`` for an (N, C, H, W) ``x`` with
    ``H, W >= factor``: the op itself in eager mode, its exact traceable form
    (:func:`adaptive_max_pool2d_by_windows`) while a graph is captured."""
    if capturing_graph():
        return adaptive_max_pool2d_by_windows(x, factor)
    h, w = x.shape[-2:]
    return F.adaptive_max_pool2d(x, (h // factor, w // factor))
