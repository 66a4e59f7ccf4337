"""Video upscaling with PyAV (FFmpeg inside the wheel, no subprocess): decode -> upscale -> encode.

:func:`upscale_video` runs three stages concurrently: a decode thread (demux, decode, YUV -> RGB
uint8, batches of ``batch`` frames), inference in the calling thread (the per-frame function
``upscale(uint8 (N, H, W, 3)) -> uint8 (N, sH, sW, 3)`` of :mod:`rtsr_arch.backends`) and an
encode thread (RGB -> the output pixel format, encode, mux), joined by bounded queues, so memory
stays bounded and the slowest stage sets the pace. PyAV and the codecs release the GIL.

What is kept: every frame's pts in the input stream's time base (so the frame rate, variable
rates and the duration), the average frame rate, audio and subtitle streams (their packets
remuxed unchanged: same bytes and timestamps), the video stream's metadata, display rotation
and colour description (primaries, transfer, matrix, range), and the container's metadata.

The output is written to a hidden temporary name beside the final one and renamed when complete,
so nothing sits under the final name unless it is whole. A video packet the decoder rejects, or a
frame it flags corrupt, is reported with its timestamp and skipped, or the previous output frame
is repeated at its timestamp (``on_corrupt='repeat'``).
"""
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ['VIDEO_EXTENSIONS', 'CODECS', 'EncodeSettings', 'VideoReport', 'upscale_video', 'is_video',
           'partial_path', 'pan_zoom_clip', 'ON_CORRUPT']

VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.mkv', '.mov', '.webm', '.avi', '.ts', '.mts', '.m2ts', '.flv', '.mpg',
                    '.mpeg', '.wmv', '.y4m', '.nut')
ON_CORRUPT = ('skip', 'repeat')
QUEUE_BATCHES = 3  # batches waiting between two stages: bounds memory at a few batches of frames


@dataclass(frozen=True)
class CodecDefaults:
    """How a codec takes quality and preset, and its defaults."""
    quality_option: str = None  # the encoder option --crf sets (None: lossless codec)
    quality: int = None
    preset: str = None
    pix_fmt: str = 'yuv420p'
    options: dict = field(default_factory=dict)


CODECS = {
    'libx264': CodecDefaults('crf', 18, 'medium'),
    'libx265': CodecDefaults('crf', 20, 'medium', options={'x265-params': 'log-level=error'}),
    'libsvtav1': CodecDefaults('crf', 30, '8'),
    'h264_nvenc': CodecDefaults('cq', 19, 'p5', options={'rc': 'vbr'}),
    'hevc_nvenc': CodecDefaults('cq', 21, 'p5', options={'rc': 'vbr'}),
    'ffv1': CodecDefaults(pix_fmt='bgr0', options={'level': '3'}),  # bgr0: lossless 8-bit RGB
    'png': CodecDefaults(pix_fmt='rgb24'),
}


@dataclass(frozen=True)
class EncodeSettings:
    """The output video stream: codec, quality (``crf``; ``cq`` for NVENC), preset, pixel format
    (None: the codec's defaults in :data:`CODECS`)."""
    codec: str = 'libx264'
    crf: int = None
    preset: str = None
    pix_fmt: str = None

    def resolved(self):
        """``(codec, pix_fmt, options)`` after checking them against this FFmpeg build."""
        import av

        if self.codec not in CODECS:
            raise ValueError(f"--codec {self.codec}: expected one of {', '.join(CODECS)}")
        try:
            codec = av.Codec(self.codec, 'w')
        except Exception:  # av.codec.codec.UnknownCodecError
            raise ValueError(f'--codec {self.codec}: not in this FFmpeg build (PyAV {av.__version__})') from None
        defaults = CODECS[self.codec]
        pix_fmt = self.pix_fmt or defaults.pix_fmt
        formats = [f.name for f in (codec.video_formats or ())]
        if formats and pix_fmt not in formats:
            raise ValueError(f"--pix-fmt {pix_fmt}: {self.codec} takes {', '.join(formats)}")
        options = dict(defaults.options)
        if self.crf is not None and defaults.quality_option is None:
            raise ValueError(f'--crf: {self.codec} is lossless (no quality setting)')
        if defaults.quality_option is not None:
            options[defaults.quality_option] = str(defaults.quality if self.crf is None else self.crf)
        if self.preset is not None and defaults.preset is None:
            raise ValueError(f'--preset: {self.codec} has no preset')
        if defaults.preset is not None:
            options['preset'] = str(self.preset or defaults.preset)
        return self.codec, pix_fmt, options


@dataclass
class VideoReport:
    """What :func:`upscale_video` did: frames written, corrupt input frames (skipped or repeated),
    copied packets, wall seconds, and busy seconds per stage."""
    frames: int = 0
    corrupt: int = 0
    copied_packets: int = 0
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=lambda: {'decode': 0.0, 'inference': 0.0, 'encode': 0.0})

    def stage_rates(self):
        """Frames per busy second of each stage (the slowest is the bottleneck)."""
        return {k: (self.frames / v if v > 0 else float('inf')) for k, v in self.stage_seconds.items()}

    def summary(self):
        rates = ', '.join(f'{k} {v:.1f}' for k, v in self.stage_rates().items())
        total = self.frames / self.seconds if self.seconds > 0 else float('inf')
        return f'{self.frames} frames in {self.seconds:.1f} s ({total:.2f} frames/s; per stage frames/s: {rates})'


def is_video(path, probe=False):
    """Whether ``path`` is a video: its extension is in :data:`VIDEO_EXTENSIONS`, or (``probe``)
    FFmpeg opens it and finds a video stream of more than one frame or without a frame count."""
    if Path(path).suffix.lower() in VIDEO_EXTENSIONS:
        return True
    if not probe:
        return False
    import av

    try:
        with av.open(str(path)) as container:
            return any(s.frames != 1 for s in container.streams.video)
    except (av.error.FFmpegError, OSError, ValueError):
        return False


def partial_path(output):
    """The hidden temporary file an output is written to before the rename (same extension, so
    FFmpeg picks the same container)."""
    output = Path(output)
    return output.with_name(f'.{output.name}.partial{output.suffix}')


# ----------------------------------------------------------------------------- stages

_END = object()


class _Pipeline:
    """Bounded queues between threads; the first error stops every stage."""

    def __init__(self):
        self.stop = threading.Event()
        self.errors = []

    def put(self, q, item):
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def get(self, q):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                pass
        return _END

    def thread(self, target, *args):
        def run():
            try:
                target(*args)
            except BaseException as exc:  # noqa: B036 (re-raised in the calling thread)
                self.errors.append(exc)
                self.stop.set()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


def _av_message(exc):
    """FFmpeg's message for a PyAV error, without the errno and the function name."""
    return getattr(exc, 'strerror', None) or (str(exc).splitlines() or [type(exc).__name__])[0]


def _seconds(pts, time_base):
    return float(pts * time_base) if pts is not None and time_base is not None else float('nan')


def _rgb(frame):
    """uint8 RGB (H, W, 3) of a decoded frame, converted with its own matrix and range."""
    if frame.format.name == 'rgb24':
        return frame.to_ndarray()
    return frame.reformat(format='rgb24', src_color_range=frame.color_range or None).to_ndarray()


def _decode(source, video, copied, batch, out_q, pipe, report, warn, expected=None):
    """Demux ``source``: copied streams' packets as they come, video frames in batches
    ``('frames', [pts], uint8 (N, H, W, 3))``, corrupt frames as ``('corrupt', pts)``."""
    import av

    busy = time.perf_counter()
    frames, pts_list, shape, decoded_frames = [], [], None, 0
    step = (1 / video.average_rate / video.time_base) if video.average_rate and video.time_base else 1
    last_pts = None

    def flush():
        nonlocal frames, pts_list
        if frames:
            item = ('frames', pts_list, np.stack(frames))
            frames, pts_list = [], []
            return item
        return None

    def corrupt(pts, why):
        report.corrupt += 1
        warn(f'corrupt video frame at {_seconds(pts, video.time_base):.3f} s (pts {pts}): {why}')
        return [flush(), ('corrupt', pts)]  # the frames before it first: the encoder sees them in order

    def decoded(packet):
        nonlocal last_pts, shape, decoded_frames
        try:
            got = video.decode(packet)
        except av.error.FFmpegError as exc:
            pts = packet.pts if packet is not None else None
            yield from corrupt(pts, _av_message(exc))
            return
        for frame in got:
            pts = frame.pts if frame.pts is not None else (0 if last_pts is None else last_pts + int(round(step)))
            last_pts = pts
            if frame.is_corrupt:
                yield from corrupt(pts, 'the decoder flagged it corrupt')
                continue
            rgb = _rgb(frame)
            if shape is not None and rgb.shape != shape:
                raise ValueError(f'{source}: the frame size changes from {shape[1]}x{shape[0]} to '
                                 f'{rgb.shape[1]}x{rgb.shape[0]} at {_seconds(pts, video.time_base):.3f} s '
                                 f'(not supported)')
            shape = rgb.shape
            decoded_frames += 1
            frames.append(rgb)
            pts_list.append(pts)
            if len(frames) >= batch:
                yield flush()

    def send(item):
        nonlocal busy
        report.stage_seconds['decode'] += time.perf_counter() - busy
        ok = pipe.put(out_q, item)
        busy = time.perf_counter()
        return ok

    packets = video.container.demux([video, *copied])
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:  # a truncated or damaged file: keep what was decoded
            at = _seconds(last_pts, video.time_base)
            warn(f'the input ends early (after {at:.3f} s): {_av_message(exc)}')
            break
        if packet.stream is video:
            if not packet.size:
                continue  # the demuxer's end-of-stream packet; the decoder is flushed below
            for item in list(decoded(packet)):
                if item is not None and not send(item):
                    return
        elif packet.dts is not None:  # not a demuxer flush packet
            if not send(('packet', packet)):
                return
    for item in list(decoded(None)):
        if item is not None and not send(item):
            return
    tail = flush()
    if tail is not None and not send(tail):
        return
    report.stage_seconds['decode'] += time.perf_counter() - busy
    if expected and decoded_frames + report.corrupt < expected:
        warn(f'decoded {decoded_frames} of the {expected} frames the container declares (a truncated file?); '
             f'the output ends after {_seconds(last_pts, video.time_base):.3f} s')
    pipe.put(out_q, _END)


def _infer(upscale, in_q, out_q, pipe, report):
    while True:
        item = pipe.get(in_q)
        if item is _END:
            pipe.put(out_q, _END)
            return
        if item[0] == 'frames':
            start = time.perf_counter()
            item = ('frames', item[1], upscale(item[2]))
            report.stage_seconds['inference'] += time.perf_counter() - start
        if not pipe.put(out_q, item):
            return


_STATS_KEYS = ('encoder', 'duration', 'bps', 'number_of_frames', 'number_of_bytes', '_statistics_tags',
               '_statistics_writing_app', '_statistics_writing_date_utc')


_COLOUR_KEYS = ('color_primaries', 'color_trc', 'colorspace', 'color_range')
_BT709, _SMPTE170M, _LIMITED = 1, 6, 1  # FFmpeg's AVCOL_SPC_BT709, AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG


def _is_rgb(pix_fmt):
    import av

    return bool(pix_fmt) and av.VideoFormat(pix_fmt).is_rgb


class _Writer:
    """The output container: opened at the first video batch (its size is known then); copied
    packets that come earlier wait for it."""

    def __init__(self, path, video, copied, settings, rotation):
        self.path, self.video, self.copied, self.settings, self.rotation = path, video, copied, settings, rotation
        # the stream's colour description, read before decoding (decoders overwrite their context's)
        self.colour = {key: getattr(video.codec_context, key, None) for key in _COLOUR_KEYS}
        self.rgb_input = _is_rgb(video.codec_context.pix_fmt)
        self.out = self.stream = None
        self.pending, self.streams, self.last, self.last_pts = [], {}, None, None

    def open(self, height, width):
        import av

        codec, pix_fmt, options = self.settings.resolved()
        self.out = av.open(str(self.path), 'w')
        self.out.metadata.update({k: v for k, v in self.video.container.metadata.items()
                                  if k.lower() not in _STATS_KEYS})
        rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        stream = self.out.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = self.video.time_base
        stream.codec_context.time_base = self.video.time_base
        for key, value in self._colour(pix_fmt, height).items():
            if value:
                setattr(stream.codec_context, key, value)
        stream.metadata.update({k: v for k, v in self.video.metadata.items() if k.lower() not in _STATS_KEYS})
        if self.rotation:
            stream.set_display_rotation(self.rotation)
        self.stream = stream
        for src_stream in self.copied:
            self.streams[src_stream.index] = self.out.add_stream_from_template(src_stream)
        for packet in self.pending:
            self.mux_copy(packet)
        self.pending = []

    def _colour(self, pix_fmt, height):
        """The output's colour fields: primaries and transfer as the input's; matrix and range as
        the input's when both are YUV (or both RGB), else for RGB -> YUV the usual matrix (BT.709
        from 720 lines, BT.601 below) in limited range."""
        colour = dict(self.colour)
        if self.rgb_input and not _is_rgb(pix_fmt):
            colour['colorspace'] = _BT709 if height >= 720 else _SMPTE170M
            colour['color_range'] = _LIMITED
        return colour

    def mux_copy(self, packet):
        if self.stream is None:
            self.pending.append(packet)
            return
        packet.stream = self.streams[packet.stream_index]
        self.out.mux(packet)

    def write(self, pts, rgb):
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format='rgb24')
        if self.stream.pix_fmt != 'rgb24':
            cc = self.stream.codec_context
            frame = frame.reformat(format=self.stream.pix_fmt, dst_colorspace=cc.colorspace or None,
                                   dst_color_range=cc.color_range or None)
        frame.pts, frame.time_base = pts, self.video.time_base
        self.out.mux(self.stream.encode(frame))
        self.last, self.last_pts = rgb, pts

    def close(self):
        """Flush the encoder and write the trailer."""
        if self.out is None:
            return
        out, self.out = self.out, None
        try:
            out.mux(self.stream.encode(None))
        finally:
            out.close()

    def abort(self):
        """Close the file without flushing, after an error (the file is then deleted)."""
        out, self.out = self.out, None
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: S110 (the first error is the one reported)
                pass


def _encode(writer, in_q, pipe, report, on_corrupt, progress):
    while True:
        item = pipe.get(in_q)
        if item is _END:
            break
        start = time.perf_counter()
        kind = item[0]
        if kind == 'packet':
            writer.mux_copy(item[1])
            report.copied_packets += 1
        elif kind == 'corrupt':
            if on_corrupt == 'repeat' and writer.last is not None and item[1] is not None and item[1] > writer.last_pts:
                writer.write(item[1], writer.last)
                report.frames += 1
                progress(1)
        else:
            _, pts_list, batch = item
            if writer.stream is None:
                writer.open(batch.shape[1], batch.shape[2])
            for pts, rgb in zip(pts_list, batch):
                writer.write(pts, rgb)
            report.frames += len(pts_list)
            progress(len(pts_list))
        report.stage_seconds['encode'] += time.perf_counter() - start
    if pipe.stop.is_set():
        return  # another stage failed: the caller aborts the file
    start = time.perf_counter()
    writer.close()
    report.stage_seconds['encode'] += time.perf_counter() - start


def _first_rotation(video):
    """The display rotation (degrees counter-clockwise) of the first decodable frame, 0 if none."""
    for frame in video.container.decode(video):
        return int(round(frame.rotation or 0))
    return 0


def _declared_frames(video):
    """The frame count the container declares for the stream (its count, or its own duration
    times the rate), None when it does not."""
    if video.frames:
        return int(video.frames)
    if video.duration and video.time_base and video.average_rate:
        return int(round(video.duration * video.time_base * video.average_rate))
    return None


def _expected_frames(video):
    """For the progress bar: the declared count, else the container's duration times the rate."""
    declared = _declared_frames(video)
    if declared is None and video.container.duration and video.average_rate:
        return int(round(Fraction(video.container.duration, 1_000_000) * video.average_rate))
    return declared


def upscale_video(source, output, upscale, settings=EncodeSettings(), batch=4, on_corrupt='skip', progress=None,
                  warn=None):
    """Upscale the first video stream of ``source`` into ``output`` (see the module doc).

    Args:
        source, output: paths; the output's extension chooses the container.
        upscale: ``uint8 (N, H, W, 3) -> uint8 (N, sH, sW, 3)``.
        settings: an :class:`EncodeSettings`.
        batch: frames per call of ``upscale``.
        on_corrupt: 'skip' a corrupt input frame, or 'repeat' the previous output frame at its pts.
        progress: a callable ``(total_frames_or_None) -> update(n)`` (e.g. a tqdm factory), or None.
        warn: a callable taking one line (corrupt frames), default: ignore.

    Returns a :class:`VideoReport`. The output is renamed into place only when complete; on any
    error (or interrupt) the temporary file is removed and the error re-raised.
    """
    import av

    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"--on-corrupt {on_corrupt}: expected one of {', '.join(ON_CORRUPT)}")
    if int(batch) < 1:
        raise ValueError(f'--batch: expected a positive number of frames; got {batch}')
    settings.resolved()  # a bad codec or pixel format fails before any work
    source, output = Path(source), Path(output)
    warn = warn or (lambda line: None)
    try:
        probe = av.open(str(source))
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f'{source}: cannot be opened as a video ({str(exc).splitlines()[0]})') from None
    with probe:
        if not probe.streams.video:
            raise ValueError(f'{source}: has no video stream')
        rotation = _first_rotation(probe.streams.video[0])
    tmp = partial_path(output)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    report = VideoReport()
    start = time.perf_counter()
    try:
        with av.open(str(source)) as container:
            video = container.streams.video[0]
            # slice threads only: frame threading reports a bad packet a few packets late, so the
            # corrupt frame's timestamp would be wrong (decoding is far faster than inference anyway)
            video.thread_type = 'SLICE'
            copied = [s for s in container.streams if s.type in ('audio', 'subtitle')]
            total = _expected_frames(video)
            update = progress(total) if progress is not None else (lambda n: None)
            writer = _Writer(tmp, video, copied, settings, rotation)
            pipe = _Pipeline()
            decoded, upscaled = queue.Queue(QUEUE_BATCHES), queue.Queue(QUEUE_BATCHES)
            threads = [pipe.thread(_decode, source, video, copied, int(batch), decoded, pipe, report, warn,
                                   _declared_frames(video)),
                       pipe.thread(_encode, writer, upscaled, pipe, report, on_corrupt, update)]
            finished = False
            try:
                _infer(upscale, decoded, upscaled, pipe, report)
                finished = True
            finally:
                if not finished:
                    pipe.stop.set()
                for t in threads:
                    t.join()
                if not finished or pipe.errors:
                    writer.abort()
            if pipe.errors:
                raise pipe.errors[0]
        if report.frames == 0:
            raise ValueError(f'{source}: no decodable video frame')
        os.replace(tmp, output)
    except av.error.FFmpegError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(f'{source}: {str(exc).splitlines()[0]}') from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    report.seconds = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------- a clip from a photograph

def pan_zoom_clip(path, frames=12, size=(48, 64), codec='png', pix_fmt='rgb24', rate=Fraction(24000, 1001),
                  audio=True, rotation=0, colour=None, photo='astronaut', options=None, metadata=None):
    """Write a ``frames``-frame clip panning and zooming over scikit-image's ``photo`` (no
    download) at ``size`` = (height, width) with ``codec``/``pix_fmt`` (and encoder ``options``);
    ``audio``: a 440 Hz AAC mono track of the same duration; ``rotation``: display rotation
    (degrees); ``colour``: codec-context colour fields (e.g. ``{'color_primaries': 1}``);
    ``metadata``: container tags (e.g. a title); a
    ``.mov``/``.mp4`` gets its index first (faststart). Returns the uint8 RGB frames encoded,
    ``(frames, height, width, 3)``, which a lossless codec gives back exactly."""
    import av
    import cv2
    import skimage.data

    img = np.asarray(getattr(skimage.data, photo)())
    img = np.ascontiguousarray(np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3])
    (height, width), (ph, pw) = size, img.shape[:2]
    full_h = min(ph * 0.8, pw * 0.8 * height / width)  # the first window: 80% of the photo, the clip's aspect
    path = Path(path)
    muxer = {'movflags': 'faststart'} if path.suffix.lower() in ('.mov', '.mp4', '.m4v') else {}
    clip = []
    with av.open(str(path), 'w', options=muxer) as out:
        out.metadata.update(metadata or {})
        video = out.add_stream(codec, rate=rate, options=dict(options or {}))
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        for key, value in (colour or {}).items():
            setattr(video.codec_context, key, value)
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream('aac', rate=48000) if audio else None
        if sound is not None:
            sound.layout = 'mono'
        for i in range(frames):
            t = i / max(1, frames - 1)
            wh = full_h / (1 + 0.25 * t)  # zoom in by 25% while panning right and down
            ww = wh * width / height
            top, left = (ph - wh) * (0.2 + 0.6 * t), (pw - ww) * (0.1 + 0.8 * t)
            window = img[int(top):int(top + wh), int(left):int(left + ww)]
            shrink = window.shape[0] >= height
            rgb = cv2.resize(window, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
            clip.append(rgb)
            frame = av.VideoFrame.from_ndarray(rgb, format='rgb24')
            frame.pts, frame.time_base = i, 1 / Fraction(rate)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            n = int(48000 * frames / Fraction(rate))
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
            for k in range(0, n, 1024):
                chunk = av.AudioFrame.from_ndarray(wave[None, k:k + 1024], format='fltp', layout='mono')
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, k, Fraction(1, 48000)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return np.stack(clip)
