"""Inference for every architecture: padding to the declared input multiple, exact tiling, precision.

The architecture contract (:mod:`rtsr_arch.archs.contract`) puts a network's requirements in data
(``upscale``, ``input_multiple``, ``min_input_size``, ``fp16_safe``, ``tile_exact``,
``receptive_radius``) and ``forward`` checks nothing; this module is where they are honoured, once,
for the upscale command, validation (``RTSRModel.test``) and any later frame-by-frame path (video):

- :func:`upscale_tensor`: ``(N, C, H, W)`` float in [0, 1] -> ``(N, C, s*H, s*W)``, unclamped.
  H and W are padded at the bottom/right by replicating the last row/column up to the input multiple
  (and ``min_input_size``) and the output is cropped back, so any size works. Optional tiling
  bounds the memory of large images.
- :func:`upscale_image`: uint8 RGB ``(H, W, 3)`` (or a batch ``(N, H, W, 3)``) -> uint8 (clamped,
  rounded); no file IO, so a video path can call it per frame or per batch of frames.

Tiling. The (padded) image is cut into cores of ``tile`` input pixels (rounded up to the input
multiple, so every tile origin is aligned to it: a PixelUnshuffle sees the same pixel groups as on
the whole image). Each core is run with ``tile_overlap`` context pixels on each side (default the
network's ``receptive_radius``, rounded up to the input multiple; clipped at the image border,
where the network pads a tile exactly as it pads the whole image) and only the core's output is
kept. For a ``tile_exact`` network with ``tile_overlap >= receptive_radius`` the tiled output
therefore equals the untiled one: exactly in float64, to float rounding in float32 (CPU conv
libraries choose their algorithm by input size). A network with a global operation
(``tile_exact=False``) is tiled too, with a one-time warning that the result is not exact.

Precision and memory format: ``dtype`` (float32/float16/bfloat16, or 'fp32'/'fp16'/'bf16')
and ``channels_last`` convert the network IN PLACE the first time they are asked for (later calls
find it converted), so per-frame calls pay nothing; float16 is refused (one-line ``ValueError``)
for a network that does not declare ``fp16_safe``. The network runs on its own device under
``torch.inference_mode()``; the result is an ordinary tensor on the input's device in the
input's dtype (with tiling, a CPU input keeps the full-size output in CPU memory while the tiles
run on the GPU).
"""
import warnings
import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['Requirements', 'requirements', 'resolve_dtype', 'prepare_network', 'network_device', 'padded_size',
           'tile_spans', 'upscale_tensor', 'upscale_image', 'DTYPES', 'INEXACT_TILE_OVERLAP']

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
INEXACT_TILE_OVERLAP = 32  # default context of a network without a receptive radius (not tile_exact)

_warned = weakref.WeakKeyDictionary()  # network -> set of warning keys already given


@dataclass(frozen=True)
class Requirements:
    """What a network declares (defaults for a network outside the contract: multiple 1, not
    tile-exact, upscale found from its output)."""
    upscale: Optional[int]
    input_multiple: int = 1
    min_input_size: int = 1
    fp16_safe: bool = True
    tile_exact: bool = False
    receptive_radius: Optional[int] = None
    num_in_ch: Optional[int] = None


def requirements(net):
    """The :class:`Requirements` declared by ``net`` (an :class:`~rtsr_arch.archs.contract.SRArch`;
    DataParallel/DDP wrappers are looked through)."""
    net = getattr(net, 'module', net)
    opt = getattr(net, 'network_opt', None) or {}
    tile_exact = bool(getattr(net, 'tile_exact', False))
    radius = getattr(net, 'receptive_radius', None) if tile_exact else None
    return Requirements(upscale=getattr(net, 'upscale', None), input_multiple=int(getattr(net, 'input_multiple', 1)),
                        min_input_size=int(getattr(net, 'min_input_size', 1)),
                        fp16_safe=bool(getattr(net, 'fp16_safe', True)), tile_exact=tile_exact and radius is not None,
                        receptive_radius=radius, num_in_ch=opt.get('num_in_ch'))


def _round_up(value, multiple):
    return -(-int(value) // multiple) * multiple


def padded_size(h, w, input_multiple=1, min_input_size=1):
    """``(H, W)`` padded up to ``min_input_size`` and then to a multiple of ``input_multiple``."""
    return tuple(_round_up(max(v, min_input_size), input_multiple) for v in (h, w))


def network_device(net):
    """The device of ``net``'s first parameter (or buffer); CPU for a network without tensors."""
    for t in net.parameters():
        return t.device
    for t in net.buffers():
        return t.device
    return torch.device('cpu')


def _network_dtype(net):
    for t in net.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def resolve_dtype(dtype):
    """A torch floating dtype from ``None``, a dtype, or 'fp32'/'fp16'/'bf16'."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype: {dtype!r} is not one of: {', '.join(DTYPES)} (or a torch dtype)")


def prepare_network(net, dtype=None, channels_last=False):
    """Convert ``net`` in place to ``dtype`` and channels-last memory format where asked and not
    already so; returns the dtype it computes in. float16 for a network that is not ``fp16_safe``
    is a one-line ``ValueError``."""
    dtype = resolve_dtype(dtype)
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f'dtype: {dtype} is not a floating-point type')
    req = requirements(net)
    compute = dtype or _network_dtype(net)
    if compute == torch.float16 and not req.fp16_safe:
        raise ValueError(f'{type(getattr(net, "module", net)).__name__} is not fp16_safe (float16 overflows or '
                         f'is inaccurate in it); use fp32 or bf16')
    if dtype is not None and _network_dtype(net) != dtype:
        net.to(dtype=dtype)
    if channels_last:
        weights = [p for p in net.parameters() if p.dim() == 4]
        if weights and not all(p.is_contiguous(memory_format=torch.channels_last) for p in weights):
            net.to(memory_format=torch.channels_last)
    return compute


def _warn_once(net, key, message):
    seen = _warned.setdefault(net, set())
    if key not in seen:
        seen.add(key)
        warnings.warn(message, stacklevel=3)


def tile_spans(size, tile, overlap, input_multiple=1, min_input_size=1):
    """Cut ``size`` (a multiple of ``input_multiple``) into tiles: a list of
    ``(lo, hi, core_lo, core_hi)``, the input window and the core it produces. Cores of ``tile``
    pixels (rounded up to the multiple; the last one may be shorter) partition ``[0, size)``; each
    window is its core widened by ``overlap`` (rounded up to the multiple) on both sides, clipped to
    ``[0, size)``, and widened further if needed to ``min_input_size``. Everything is a multiple of
    ``input_multiple`` (or ``size``)."""
    m = input_multiple
    tile = max(m, _round_up(tile, m))
    overlap = _round_up(max(0, overlap), m)
    need = min(size, _round_up(min_input_size, m))
    spans = []
    for core_lo in range(0, size, tile):
        core_hi = min(core_lo + tile, size)
        lo, hi = max(0, core_lo - overlap), min(size, core_hi + overlap)
        if hi - lo < need:
            hi = min(size, lo + need)
            lo = hi - need
        spans.append((lo, hi, core_lo, core_hi))
    return spans


def _run(net, x, device, dtype, channels_last):
    """``net`` on ``x`` moved to its device and compute dtype; half-precision kernels missing on
    this device become a one-line ValueError."""
    x = x.to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        return net(x)
    except (RuntimeError, NotImplementedError) as exc:
        text = str(exc)
        if dtype in (torch.float16, torch.bfloat16) and 'not implemented for' in text:
            raise ValueError(f'{dtype} inference is not supported on {device.type} by torch {torch.__version__} '
                             f'({text.splitlines()[0]})') from exc
        raise


def _upscale_of(req, out_size, in_size):
    if req.upscale is not None:
        return req.upscale
    if out_size % in_size:
        raise ValueError(f'the network maps {in_size} input pixels to {out_size}: not an integer scale')
    return out_size // in_size


def upscale_tensor(net, x, tile=None, tile_overlap=None, dtype=None, channels_last=False):
    """Super-resolve ``x`` (``(N, C, H, W)`` float in [0, 1]) with ``net``; returns
    ``(N, C_out, s*H, s*W)`` (unclamped) on ``x``'s device in ``x``'s dtype.

    Args:
        net: a network following the architecture contract (eval mode; see the module doc).
        tile: core size in input pixels (rounded up to the input multiple); None: whole image.
        tile_overlap: context pixels on each side of a tile (rounded up to the input multiple);
            default ``net.receptive_radius`` (exact), or :data:`INEXACT_TILE_OVERLAP` for a network
            that is not ``tile_exact``.
        dtype: compute dtype (None: the network's); the network is converted in place.
        channels_last: run in channels-last memory format (the network is converted in place).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f'expected a float (N, C, H, W) tensor; got '
                         f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}'
                         f'{" " + str(x.dtype) if isinstance(x, torch.Tensor) else ""}')
    n, c, h, w = x.shape
    req = requirements(net)
    if req.num_in_ch is not None and c != req.num_in_ch:
        raise ValueError(f'the network takes {req.num_in_ch} input channels; got {c}')
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f'empty input of shape {tuple(x.shape)}')
    if tile is not None and (isinstance(tile, bool) or int(tile) < 1):
        raise ValueError(f'tile: expected a positive number of pixels; got {tile!r}')
    if tile_overlap is not None and (isinstance(tile_overlap, bool) or int(tile_overlap) < 0):
        raise ValueError(f'tile_overlap: expected a number of pixels >= 0; got {tile_overlap!r}')
    compute = prepare_network(net, dtype, channels_last)
    device = network_device(net)
    hp, wp = padded_size(h, w, req.input_multiple, req.min_input_size)
    xp = F.pad(x, (0, wp - w, 0, hp - h), mode='replicate') if (hp, wp) != (h, w) else x

    if tile is None or int(tile) >= max(hp, wp):
        with torch.inference_mode():
            y = _run(net, xp, device, compute, channels_last)
            s = _upscale_of(req, y.shape[-2], hp)
            if tuple(y.shape[-2:]) != (s * hp, s * wp):
                raise ValueError(f'the network maps {hp}x{wp} to {y.shape[-2]}x{y.shape[-1]}, not x{s}')
            y = y[..., :s * h, :s * w]
        y = y.to(device=x.device, dtype=x.dtype)  # outside inference mode: a copy is an ordinary tensor
        return y.clone() if y.is_inference() else y  # ordinary either way (in-place ops allowed)

    if not req.tile_exact:
        _warn_once(net, 'inexact', f'{type(getattr(net, "module", net)).__name__} is not tile_exact (it has a '
                                   f'global operation): tiled output differs from untiled output')
        overlap = INEXACT_TILE_OVERLAP if tile_overlap is None else int(tile_overlap)
    else:
        overlap = req.receptive_radius if tile_overlap is None else int(tile_overlap)
        if overlap < req.receptive_radius:
            _warn_once(net, ('overlap', overlap), f'tile_overlap {overlap} is below the receptive radius '
                                                  f'{req.receptive_radius}: tiled output may differ near tile seams')
    rows = tile_spans(hp, int(tile), overlap, req.input_multiple, req.min_input_size)
    cols = tile_spans(wp, int(tile), overlap, req.input_multiple, req.min_input_size)
    out, s = None, req.upscale
    for lo_y, hi_y, a_y, b_y in rows:
        if a_y >= h:
            continue  # a core made only of padding
        for lo_x, hi_x, a_x, b_x in cols:
            if a_x >= w:
                continue
            with torch.inference_mode():
                y = _run(net, xp[..., lo_y:hi_y, lo_x:hi_x], device, compute, channels_last)
            if s is None:
                s = _upscale_of(req, y.shape[-2], hi_y - lo_y)
            if tuple(y.shape[-2:]) != (s * (hi_y - lo_y), s * (hi_x - lo_x)):
                raise ValueError(f'the network maps {hi_y - lo_y}x{hi_x - lo_x} to {y.shape[-2]}x{y.shape[-1]}, '
                                 f'not x{s}')
            if out is None:
                out = torch.empty((n, y.shape[1], s * h, s * w), dtype=x.dtype, device=x.device)
            b_yc, b_xc = min(b_y, h), min(b_x, w)
            with torch.no_grad():
                out[..., s * a_y:s * b_yc, s * a_x:s * b_xc].copy_(
                    y[..., s * (a_y - lo_y):s * (b_yc - lo_y), s * (a_x - lo_x):s * (b_xc - lo_x)])
    return out


def upscale_image(net, img, tile=None, tile_overlap=None, dtype=None, channels_last=False):
    """Super-resolve uint8 RGB ``img`` (``(H, W, C)``, or a batch ``(N, H, W, C)``) with ``net``;
    returns uint8 ``(s*H, s*W, C)`` (or ``(N, s*H, s*W, C)``): :func:`upscale_tensor` on
    ``img / 255`` in float32, then clamped to [0, 1], times 255, rounded. The arguments are
    :func:`upscale_tensor`'s. Untiled, the image goes to the network's device whole and only the
    uint8 result comes back (from pinned memory, asynchronously, to a CUDA device); tiled, it
    stays in CPU memory and tiles travel."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (3, 4):
        raise ValueError(f'expected a uint8 (H, W, C) or (N, H, W, C) image; got {img.dtype} of shape {img.shape}')
    batch = img.ndim == 4
    if not img.flags.writeable:
        img = img.copy()  # torch.from_numpy warns on read-only arrays (it is never written to here)
    t = torch.from_numpy(np.ascontiguousarray(img if batch else img[None]))
    device = network_device(net)
    if tile is None and device.type == 'cuda':
        t = t.pin_memory().to(device, non_blocking=True)  # page-locked: the copy overlaps the host's work
    elif tile is None:
        t = t.to(device)
    x = t.permute(0, 3, 1, 2).float().div_(255)
    y = upscale_tensor(net, x, tile=tile, tile_overlap=tile_overlap, dtype=dtype, channels_last=channels_last)
    y = y.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(y if batch else y[0])
