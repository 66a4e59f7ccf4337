"""HR -> LR downscaling kernels of the real-time SR challenges (uint8 RGB in and out).

- ``bicubic``: PIL ``Image.Resampling.BICUBIC`` (antialiased), the NTIRE 2023 RTSR protocol
  (``eduardzamfir/NTIRE23-RTSR:demo/prepare_data.py``); cv2's bicubic is not antialiased.
- ``lanczos5`` / ``lanczos3``: FFmpeg's swscale Lanczos with window a = 5 / 3, stretched by the
  scale (antialiased), run through PyAV's filter graph. ``lanczos5`` with yuv420p output is the
  AIS 2024 RTSR ``-vf scale=ceil(iw/4):ceil(ih/4):flags=lanczos+accurate_rnd+full_chroma_int:sws_dither=none:param0=5``
  (``rlghksdbs/CASR`` ``png2avif.py``), bit-identical to the ffmpeg CLI.
- ``area``: ``cv2.resize(..., INTER_AREA)``.
"""
import cv2
import numpy as np
from PIL import Image

from rtsr_arch.data.codecs import swscale

__all__ = ['KERNELS', 'lanczos_args', 'lanczos', 'to_yuv420p', 'bicubic_downscale', 'downscale']

KERNELS = ('bicubic', 'lanczos3', 'lanczos5', 'area')
_SWS_FLAGS = 'flags=lanczos+accurate_rnd+full_chroma_int:sws_dither=none:param0={a}'


def lanczos_args(scale, a=5):
    """The challenge's swscale ``scale`` filter arguments (output size rounded up, as ``ceil(iw/4)``)."""
    return f'ceil(iw/{scale}):ceil(ih/{scale}):' + _SWS_FLAGS.format(a=a)


def lanczos(img, scale, a=5, pix_fmt='rgb24'):
    """swscale Lanczos-``a`` downscale by ``scale`` (size rounded up) into ``pix_fmt``: an
    ``av.VideoFrame`` (``.to_ndarray()`` for rgb24; :func:`~rtsr_arch.data.codecs.yuv420p_planes`)."""
    return swscale(img, lanczos_args(scale, a), pix_fmt)


def to_yuv420p(rgb):
    """RGB -> yuv420p (BT.601, limited range) at the same size, with the challenge's swscale flags."""
    return swscale(rgb, 'iw:ih:' + _SWS_FLAGS.format(a=5), 'yuv420p')


def bicubic_downscale(img, scale):
    """PIL ``Image.Resampling.BICUBIC`` resize to (W // scale, H // scale)."""
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((w // scale, h // scale), Image.Resampling.BICUBIC))


def downscale(img, scale, kernel):
    """Downscale uint8 RGB ``img`` by ``scale`` with one of :data:`KERNELS` -> uint8 RGB."""
    if kernel == 'bicubic':
        return bicubic_downscale(img, scale)
    if kernel in ('lanczos3', 'lanczos5'):
        return lanczos(img, scale, a=int(kernel[-1])).to_ndarray()
    if kernel == 'area':
        h, w = img.shape[:2]
        return cv2.resize(img, (w // scale, h // scale), interpolation=cv2.INTER_AREA)
    raise ValueError(f"resize kernel: expected one of {', '.join(KERNELS)}; got {kernel!r}")
