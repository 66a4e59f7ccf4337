"""In-memory image codecs of the real-time SR challenges, and the FFmpeg (PyAV) plumbing they share.

- JPEG: Pillow, as the NTIRE 2023 RTSR ``prepare_data.py`` (``eduardzamfir/NTIRE23-RTSR``); 4:2:0.
- AVIF: the AIS 2024 RTSR command (``rlghksdbs/CASR`` ``png2avif.py``, with libsvtav1 as the
  widely quoted ``-c:v libsvtav1 -qp Q -preset 5``) reproduced in process with PyAV's libsvtav1:
  CQP with AQ off, so ``qp`` 31/39/47/55/63 at preset 5 give the key frame ``base_q_idx``
  34/65/108/145/184 (SVT-AV1 4.x; ``qp`` is *not* the AV1 quantizer). Files are real ``.avif``
  containers written by FFmpeg's ``avif`` muxer (Pillow >= 11.3 and libavif read them).
- The ONE AVIF decoder: dav1d, then a ``scale=flags=bilinear+accurate_rnd+full_chroma_int`` YUV ->
  RGB graph, which matches libavif (Pillow) to max |diff| <= 2; FFmpeg's default conversion differs
  by up to 18 levels (measured against libavif through Pillow).

The encoder and decoder run single-threaded (SVT ``lp=1``, one dav1d thread): they are meant for
pools of one process per core, and SVT's bytes do not depend on ``lp``. All arrays are uint8 RGB
(H, W, 3).
"""
import ctypes
import glob
import io
import os
from fractions import Fraction

import numpy as np
import PIL
from PIL import Image

__all__ = ['CodecUnavailableError', 'require_av', 'swscale', 'yuv420p_planes', 'jpeg_encode', 'png_encode',
           'avif_encode', 'avif_decode', 'decode', 'library_versions', 'QP_RANGE', 'QUALITY_RANGE']

QP_RANGE = (1, 63)  # libsvtav1 -qp
QUALITY_RANGE = (1, 100)  # Pillow JPEG quality
_INSTALL = 'pip install av'


class CodecUnavailableError(ImportError):
    """PyAV, or a codec this build of it lacks (libsvtav1, libdav1d)."""


def require_av():
    """Import PyAV and check its FFmpeg has libsvtav1 and libdav1d; a one-line error otherwise."""
    try:
        import av
    except ImportError as err:
        raise CodecUnavailableError(f'the AVIF / Lanczos degradation needs PyAV ({err}): {_INSTALL}') from None
    missing = [name for name in ('libsvtav1', 'libdav1d') if name not in av.codecs_available]
    if missing:
        raise CodecUnavailableError(f"this PyAV build ({av.__version__}) lacks {', '.join(missing)}: "
                                    f'{_INSTALL} (the PyPI wheels bundle both)')
    os.environ.setdefault('SVT_LOG', '1')  # SVT-AV1 prints its banner to stderr unless told (1 = errors)
    return av


def swscale(src, args, pix_fmt):
    """Run one frame (an RGB array or an ``av.VideoFrame``) through the FFmpeg graph
    ``scale=<args>,format=<pix_fmt>`` (single-threaded) and return the output ``av.VideoFrame``."""
    av = require_av()
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(src), 'rgb24') if isinstance(src, np.ndarray) else src
    graph = av.filter.Graph()
    graph.threads = 1
    nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                              time_base=Fraction(1, 25)),
             graph.add('scale', args), graph.add('format', pix_fmt), graph.add('buffersink')]
    for a, b in zip(nodes, nodes[1:]):
        a.link_to(b)
    graph.configure()
    frame.pts = 0
    graph.push(frame)
    return graph.pull()


def yuv420p_planes(frame):
    """The Y, U, V planes of a yuv420p ``av.VideoFrame`` as uint8 arrays (line padding removed)."""
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy() for p in frame.planes]


def _check_level(name, value, bounds):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not bounds[0] <= value <= bounds[1]:
        raise ValueError(f'{name}: expected an int in [{bounds[0]}, {bounds[1]}]; got {value!r}')
    return int(value)


def jpeg_encode(rgb, quality=90):
    """JPEG bytes exactly as ``PIL.Image.save(f, 'JPEG', quality=quality)`` (Pillow's default 4:2:0)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, 'JPEG', quality=_check_level('JPEG quality', quality, QUALITY_RANGE))
    return buf.getvalue()


def png_encode(rgb):
    """Lossless PNG bytes (Pillow defaults; deterministic)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, 'PNG')
    return buf.getvalue()


def avif_encode(yuv, qp, preset=5):
    """A yuv420p ``av.VideoFrame`` -> ``.avif`` bytes: one AV1 key frame from libsvtav1 with ffmpeg's
    ``-qp qp -preset preset`` semantics (CQP, AQ off). Deterministic for the same input and settings."""
    av = require_av()
    qp = _check_level('AVIF qp', qp, QP_RANGE)
    buf = io.BytesIO()
    with av.open(buf, 'w', format='avif') as container:
        stream = container.add_stream('libsvtav1', rate=25, options={
            'qp': str(qp), 'preset': str(int(preset)), 'svtav1-params': 'lp=1'})
        stream.width, stream.height, stream.pix_fmt = yuv.width, yuv.height, 'yuv420p'
        for packet in stream.encode(yuv) + stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def avif_decode(data):
    """``.avif`` bytes -> RGB uint8 with dav1d + the libavif-matching bilinear conversion.

    swscale's chroma step is exactly 2 only for even sizes, so odd sizes are padded by one edge
    luma row/column; the last column of an odd width is then taken from the padding column, i.e.
    with the nearest chroma sample, as libavif (libyuv) does."""
    av = require_av()
    with av.open(io.BytesIO(data)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    decoder = av.CodecContext.create('libdav1d', 'r')
    decoder.thread_count = 1
    frames = [f for p in packets + [None] for f in decoder.decode(p)]
    if len(frames) != 1 or frames[0].format.name != 'yuv420p':
        raise ValueError(f"expected one 8-bit 4:2:0 AV1 frame; decoded {[f.format.name for f in frames]}")
    h, w = frames[0].height, frames[0].width
    y, u, v = yuv420p_planes(frames[0])
    even = av.VideoFrame(w + w % 2, h + h % 2, 'yuv420p')
    for plane, values in zip(even.planes, (np.pad(y, ((0, h % 2), (0, w % 2)), mode='edge'), u, v)):
        padded = np.zeros((plane.height, plane.line_size), np.uint8)
        padded[:, :plane.width] = values
        plane.update(padded)
    rgb = swscale(even, 'flags=bilinear+accurate_rnd+full_chroma_int', 'rgb24').to_ndarray()
    if w % 2:
        rgb[:, w - 1] = rgb[:, w]
    return np.ascontiguousarray(rgb[:h, :w])


def decode(data):
    """uint8 RGB from JPEG, PNG (Pillow) or AVIF (:func:`avif_decode`) bytes, told apart by their magic."""
    if data[4:8] == b'ftyp' and data[8:12] in (b'avif', b'avis', b'mif1'):
        return avif_decode(data)
    with Image.open(io.BytesIO(data)) as img:
        if img.format not in ('JPEG', 'PNG'):
            raise ValueError(f'expected JPEG, PNG or AVIF data; got {img.format}')
        return np.asarray(img.convert('RGB'))


def _svt_version(av):
    """SVT-AV1's own ``svt_av1_get_version()`` from the library bundled in the PyAV wheel, else None."""
    libs = glob.glob(os.path.join(os.path.dirname(av.__file__), os.pardir, 'av.libs', 'libSvtAv1Enc*'))
    try:
        lib = ctypes.CDLL(libs[0])
        lib.svt_av1_get_version.restype = ctypes.c_char_p
        return lib.svt_av1_get_version().decode()
    except (IndexError, OSError, AttributeError):
        return None


def library_versions():
    """Versions of everything that decides the degraded bytes (for manifests)."""
    versions = {'numpy': np.__version__, 'Pillow': PIL.__version__}
    try:
        av = require_av()
    except CodecUnavailableError:
        return versions
    versions.update({'av': av.__version__, 'FFmpeg': av.ffmpeg_version_info, 'libsvtav1': _svt_version(av),
                     'libavcodec': '.'.join(map(str, av.library_versions['libavcodec']))})
    return versions
