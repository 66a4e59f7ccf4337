"""``rtsr-upscale``: super-resolve image and video files with any checkpoint the package loads.

    rtsr-upscale MODEL INPUT... --out DIR [--backend auto|torch|onnxruntime|tensorrt] [--tile N]
                 [--tile-overlap N] [--device cpu|cuda] [--precision auto|fp32|fp16|bf16]
                 [--channels-last] [--suffix _x2] [--overwrite]
                 [--codec libx264] [--crf N] [--preset P] [--pix-fmt yuv420p] [--container .mkv]
                 [--batch N] [--on-corrupt skip|repeat]

MODEL is anything :func:`rtsr_arch.loader.load_model` reads: this package's ``.pth`` /
``.safetensors``, a BasicSR checkpoint with its ``.yml`` beside it (or ``--opt X.yml``), or an
official checkpoint, auto-detected (``--arch``, ``--set key=value`` for its importer). INPUT is
image or video files or folders (their image and video files, not recursive). Each image is
written as ``DIR/<stem><suffix>.png`` (default suffix ``_x<scale>``) through
:func:`rtsr_arch.inference.upscale_image`, atomically (a temporary file renamed into place), so an
interrupted run leaves only complete files and the next run skips them (``--overwrite`` redoes
them); an input file is never written over. Each video is written as
``DIR/<stem><suffix><ext>`` (its own extension, or ``--container``) by
:func:`rtsr_arch.video.upscale_video`, also renamed into place when complete. A file that cannot
be read or decoded is one line on stderr naming it, the others continue, and the exit status is 1.
Usage errors, a missing or unloadable model and ``--device cuda`` without CUDA are one line and
exit status 2.

The work is a list of jobs, each turning one input into one output with the per-frame function
``upscale(uint8 frames) -> uint8 frames`` built by :func:`rtsr_arch.backends.make_upscaler`
(PyTorch, ONNX Runtime or TensorRT): :class:`ImageJob` and :class:`VideoJob`.
"""
import contextlib
import sys
import time
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from ..backends import BACKENDS, make_upscaler
from ..data.codecs import CodecUnavailableError
from ..data.image_io import decode_image, encode_png
from ..inference import DTYPES, prepare_network, requirements
from ..loader import load_model
from ..utils.checkpoint import atomic_write
from ..video import CODECS, ON_CORRUPT, VIDEO_EXTENSIONS, EncodeSettings, is_video, upscale_video
from .common import (CommandError, Parser, add_model_arguments, error_line, model_arguments, run_command,
                     torch_device)

__all__ = ['main', 'ImageJob', 'VideoJob', 'collect_jobs', 'run_jobs', 'read_image', 'write_png', 'PROG']

PROG = 'rtsr-upscale'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.avif')


def read_image(path):
    """uint8 RGB (H, W, 3) of the image file ``path`` (JPEG and AVIF with the package's decoders,
    others with OpenCV, as the datasets read them); one-line errors naming the file."""

    data = Path(path).read_bytes()
    try:
        return decode_image(data, str(path))
    except CodecUnavailableError as exc:  # an ImportError: AVIF without a capable PyAV
        raise ValueError(f'{path}: {error_line(exc)}') from exc


def write_png(path, img, compress_level=1):
    """Write uint8 RGB ``img`` to ``path`` as PNG, atomically (temporary file, then rename)."""

    data = encode_png(img, compress_level)
    atomic_write(path, lambda f: f.write(data))


class ImageJob:
    """One image file -> one PNG. ``run(upscale)`` reads, upscales and writes; returns the frame
    count (``progress`` and ``err`` are for jobs with many frames)."""

    def __init__(self, source, output):
        self.source, self.output = Path(source), Path(output)

    def run(self, upscale, progress=True, err=None):
        write_png(self.output, upscale(read_image(self.source)))
        return 1


class VideoJob:
    """One video file -> one video (:func:`rtsr_arch.video.upscale_video`); ``run(upscale)``
    shows a frame progress bar, reports corrupt frames on ``err`` and prints the per-stage line."""

    def __init__(self, source, output, settings=EncodeSettings(), batch=4, on_corrupt='skip'):
        self.source, self.output = Path(source), Path(output)
        self.settings, self.batch, self.on_corrupt = settings, batch, on_corrupt

    def run(self, upscale, progress=True, err=None):
        err = err or sys.stderr
        bars = []

        def bar(total):
            bars.append(tqdm(total=total, unit='frame', desc=self.source.name, disable=not progress, file=err,
                             dynamic_ncols=True, leave=False))
            return bars[0].update

        def warn(line):
            tqdm.write(f'{PROG}: warning: {self.source}: {line}', file=err)
        try:
            report = upscale_video(self.source, self.output, upscale, self.settings, self.batch, self.on_corrupt,
                                   progress=bar, warn=warn)
        finally:
            for b in bars:
                b.close()
        if progress:
            done = {'skip': 'skipped', 'repeat': 'replaced by the previous frame'}[self.on_corrupt]
            corrupt = f'; {report.corrupt} corrupt input frame(s) {done}' if report.corrupt else ''
            tqdm.write(f'{PROG}: {self.output}: {report.summary()}{corrupt}', file=err)
        return report.frames


MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


def _files(inputs):
    """Input files: explicit files as given, folders' files with a known suffix (sorted, no
    hidden files); a missing input is a usage error."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS and not p.name.startswith('.'))
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f'{item}: no such file or folder')
    return files


def collect_jobs(inputs, out_dir, suffix, video=None):
    """The jobs for ``inputs`` (files and folders): images write ``out_dir/<stem><suffix>.png``,
    videos (:func:`~rtsr_arch.video.is_video`) ``out_dir/<stem><suffix><ext>`` (``ext``:
    ``video['container']`` or the input's) with ``video``'s :class:`VideoJob` keywords. Two inputs
    writing the same output, or an output that is an input file, are usage errors."""
    video = dict(video or {})
    container = video.pop('container', None)
    files = _files(inputs)
    if not files:
        raise CommandError(f"no image or video files ({', '.join(MEDIA_EXTENSIONS)}) in: {', '.join(map(str, inputs))}")
    resolved = {p.resolve() for p in files}
    jobs, outputs = [], {}
    for path in files:
        # an unknown extension given explicitly (e.g. .mxf) is probed by FFmpeg
        video_file = is_video(path, probe=path.suffix.lower() not in IMAGE_EXTENSIONS)
        ext = (container or path.suffix) if video_file else '.png'
        output = Path(out_dir) / f'{path.stem}{suffix}{ext}'
        key = output.resolve()
        if key in resolved:
            raise CommandError(f'{output} would overwrite the input file {path}; choose another --out or --suffix')
        if key in outputs:
            if outputs[key] == path.resolve():
                continue  # the same file named twice
            raise CommandError(f'{outputs[key]} and {path} would both be written to {output}')
        outputs[key] = path.resolve()
        jobs.append(VideoJob(path, output, **video) if video_file else ImageJob(path, output))
    return jobs


def run_jobs(jobs, upscale, overwrite=False, progress=True, err=None):
    """Run ``jobs`` with ``upscale``; a job whose output exists is skipped unless ``overwrite``.
    A job failing with a one-line error (unreadable/corrupt input, an unwritable output, out of
    memory) is reported on ``err`` (stderr) naming its input, and the others continue.
    Returns ``(done, skipped, failed, frames, seconds)``."""

    err = err or sys.stderr
    todo = [j for j in jobs if overwrite or not j.output.exists()]
    skipped, done, failed, frames = len(jobs) - len(todo), 0, 0, 0
    bar = tqdm(total=len(todo), unit='file', desc=PROG, disable=not progress or not todo, file=err, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for job in todo:
            try:
                frames += job.run(upscale, progress=progress, err=err)
                done += 1
            except (getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError), MemoryError):
                failed += 1
                tqdm.write(f'{PROG}: error: {job.source}: out of memory; use --tile (e.g. --tile 512)', file=err)
            except (ValueError, OSError) as exc:
                failed += 1
                line = error_line(exc)
                if str(job.source) not in line:
                    line = f'{job.source}: {line}'
                tqdm.write(f'{PROG}: error: {line}', file=err)
            bar.update(1)
    finally:
        bar.close()
    return done, skipped, failed, frames, time.perf_counter() - start


@contextlib.contextmanager
def _quiet_opencv():
    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(min(previous, logging.LOG_LEVEL_ERROR))
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def build_parser():
    p = Parser(prog=PROG, description='Super-resolve image and video files with any checkpoint the package loads '
                                      '(writes DIR/<stem><suffix>.png or .<video ext>; existing outputs are skipped).')
    p.add_argument('model', metavar='MODEL', help='checkpoint: .pth/.safetensors of this package, BasicSR with its '
                                                  '.yml, or an official checkpoint (auto-detected)')
    p.add_argument('inputs', metavar='INPUT', nargs='+', help='image or video files, or folders of them')
    p.add_argument('--out', required=True, metavar='DIR', help='output folder')
    p.add_argument('--backend', default='auto', choices=BACKENDS,
                   help='auto (default): onnxruntime on CPU when installed, TensorRT on CUDA when installed, '
                        'else torch')
    p.add_argument('--tile', type=int, metavar='N', help='tile size in input pixels (default: whole images)')
    p.add_argument('--tile-overlap', type=int, metavar='N',
                   help="context pixels around each tile (default: the network's receptive radius: exact)")
    p.add_argument('--device', default='cpu', help='cpu (default), cuda or cuda:N')
    p.add_argument('--precision', default='auto', choices=['auto', *DTYPES],
                   help='auto (default): fp16 on CUDA for networks declaring fp16_safe, else fp32')
    p.add_argument('--channels-last', action='store_true', help='channels-last memory format (torch backend)')
    p.add_argument('--suffix', help='appended to each output stem (default _x<scale>)')
    p.add_argument('--overwrite', action='store_true', help='redo outputs that exist (default: skip them)')
    v = p.add_argument_group('video')
    v.add_argument('--codec', default='libx264', choices=list(CODECS),
                   help='video encoder (default libx264; ffv1 and png are lossless)')
    v.add_argument('--crf', type=int, metavar='N', help='quality: CRF (x264 18, x265 20, SVT-AV1 30), CQ for NVENC')
    v.add_argument('--preset', help='encoder preset (x264/x265 medium, SVT-AV1 8, NVENC p5)')
    v.add_argument('--pix-fmt', metavar='FMT',
                   help='output pixel format (default yuv420p; e.g. yuv420p10le for 10-bit where the codec has it)')
    v.add_argument('--container', metavar='EXT', help="output video extension, e.g. .mkv (default: the input's)")
    v.add_argument('--batch', type=int, default=4, metavar='N', help='frames per inference call (default 4)')
    v.add_argument('--on-corrupt', default='skip', choices=ON_CORRUPT,
                   help='a corrupt input frame: skip it (default) or repeat the previous frame')
    add_model_arguments(p)
    p.add_argument('--quiet', action='store_true', help='no progress bar and no summary line')
    return p


def _precision(name, device, net):
    """The compute dtype for --precision (auto: fp16 on CUDA when the network is fp16_safe)."""
    if name == 'auto':
        return torch.float16 if device.type == 'cuda' and requirements(net).fp16_safe else torch.float32
    return DTYPES[name]


def body(argv):
    args = build_parser().parse_args(argv)
    if args.tile is not None and args.tile < 1:
        raise CommandError(f'--tile: expected a positive number of pixels; got {args.tile}')
    if args.tile_overlap is not None and args.tile_overlap < 0:
        raise CommandError(f'--tile-overlap: expected a number of pixels >= 0; got {args.tile_overlap}')
    if args.tile_overlap is not None and args.tile is None:
        raise CommandError('--tile-overlap needs --tile')
    if args.suffix is not None and ('/' in args.suffix or '\\' in args.suffix):
        raise CommandError(f"--suffix: '{args.suffix}' must not contain a path separator")
    if args.batch < 1:
        raise CommandError(f'--batch: expected a positive number of frames; got {args.batch}')
    container = args.container
    if container is not None:
        container = '.' + container.lstrip('.').lower()
        if container not in VIDEO_EXTENSIONS:
            raise CommandError(f"--container {args.container}: expected one of {', '.join(VIDEO_EXTENSIONS)}")
    settings = EncodeSettings(args.codec, args.crf, args.preset, args.pix_fmt)
    settings.resolved()  # a codec missing from this FFmpeg or a pixel format it lacks: before the model loads
    device = torch_device(args.device)
    _files(args.inputs)  # a missing input fails before the model loads

    net = load_model(args.model, device=device, **model_arguments(args))
    dtype = _precision(args.precision, device, net)
    prepare_network(net, dtype, args.channels_last)  # fp16 on a network that is not fp16_safe fails here
    scale = requirements(net).upscale
    suffix = args.suffix if args.suffix is not None else f'_x{scale}'
    jobs = collect_jobs(args.inputs, args.out, suffix, video=dict(settings=settings, batch=args.batch,
                                                                  on_corrupt=args.on_corrupt, container=container))

    def info(line):
        print(f'{PROG}: info: {line}', file=sys.stderr)
    upscale, backend = None, 'nothing to do'
    if any(args.overwrite or not job.output.exists() for job in jobs):  # no ONNX export just to skip every job
        upscale, backend = make_upscaler(net, args.backend, device, dtype, tile=args.tile,
                                         tile_overlap=args.tile_overlap, channels_last=args.channels_last, info=info)
    with _quiet_opencv():  # a corrupt file is our one line, not OpenCV's warnings too
        done, skipped, failed, frames, seconds = run_jobs(jobs, upscale, args.overwrite, progress=not args.quiet)
    if not args.quiet:
        rate = f', {frames / seconds:.2f} frames/s' if done and seconds > 0 else ''
        print(f'{PROG}: {done} upscaled x{scale} ({backend}) in {seconds:.1f} s{rate}; {skipped} skipped '
              f'(output exists); {failed} failed; outputs in {args.out}')
    return 1 if failed else 0


def main(argv=None):
    return run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
