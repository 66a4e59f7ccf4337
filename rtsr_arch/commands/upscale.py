"""``rtsr-upscale``: super-resolve image files with any checkpoint the package loads.

    rtsr-upscale MODEL INPUT... --out DIR [--tile N] [--tile-overlap N] [--device cpu|cuda]
                 [--precision fp32|fp16|bf16] [--channels-last] [--suffix _x2] [--overwrite]

MODEL is anything :func:`rtsr_arch.loader.load_model` reads: this package's ``.pth`` /
``.safetensors``, a BasicSR checkpoint with its ``.yml`` beside it (or ``--opt X.yml``), or an
official checkpoint, auto-detected (``--arch``, ``--set key=value`` for its importer). INPUT is
image files or folders (their png/jpg/jpeg/bmp/tif/tiff/webp/avif files, not recursive). Each
image is written as ``DIR/<stem><suffix>.png`` (default suffix ``_x<scale>``) through
:func:`rtsr_arch.inference.upscale_image`, atomically (a temporary file renamed into place), so an
interrupted run leaves only complete files and the next run skips them (``--overwrite`` redoes
them); an input file is never written over. A file that cannot be read or decoded is one line on
stderr naming it, the others continue, and the exit status is 1. Usage errors, a missing or
unloadable model and ``--device cuda`` without CUDA are one line and exit status 2.

The work is a list of jobs, each turning one input into one output with the per-frame function
``upscale(uint8 frames) -> uint8 frames``: :class:`ImageJob` here; a video job (PyAV decode ->
batches of frames -> the same function -> encode) slots in beside it through :data:`JOB_TYPES`.
"""
import contextlib
import functools
import sys
import time
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from ..data.codecs import CodecUnavailableError
from ..data.image_io import decode_image, encode_png
from ..inference import DTYPES, prepare_network, requirements, upscale_image
from ..loader import load_model
from ..utils.checkpoint import atomic_write
from .common import (CommandError, Parser, add_model_arguments, error_line, model_arguments, run_command,
                     torch_device)

__all__ = ['main', 'ImageJob', 'collect_jobs', 'run_jobs', 'read_image', 'write_png', 'JOB_TYPES', 'PROG']

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
    """One image file -> one PNG. ``run(upscale)`` reads, upscales and writes; returns the frame count."""

    def __init__(self, source, output):
        self.source, self.output = Path(source), Path(output)

    def run(self, upscale):
        write_png(self.output, upscale(read_image(self.source)))
        return 1


# input suffix -> job class; a video job (e.g. '.mp4': VideoJob) is added here
JOB_TYPES = {ext: ImageJob for ext in IMAGE_EXTENSIONS}


def _files(inputs):
    """Input files: explicit files as given, folders' files with a known suffix (sorted, no
    hidden files); a missing input is a usage error."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in JOB_TYPES and not p.name.startswith('.'))
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f'{item}: no such file or folder')
    return files


def collect_jobs(inputs, out_dir, suffix):
    """The jobs for ``inputs`` (files and folders) writing ``out_dir/<stem><suffix>.png``.
    Two inputs writing the same output, or an output that is an input file, are usage errors."""
    files = _files(inputs)
    if not files:
        raise CommandError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in: {', '.join(map(str, inputs))}")
    resolved = {p.resolve() for p in files}
    jobs, outputs = [], {}
    for path in files:
        output = Path(out_dir) / f'{path.stem}{suffix}.png'
        key = output.resolve()
        if key in resolved:
            raise CommandError(f'{output} would overwrite the input file {path}; choose another --out or --suffix')
        if key in outputs:
            if outputs[key] == path.resolve():
                continue  # the same file named twice
            raise CommandError(f'{outputs[key]} and {path} would both be written to {output}')
        outputs[key] = path.resolve()
        jobs.append(JOB_TYPES.get(path.suffix.lower(), ImageJob)(path, output))
    return jobs


def run_jobs(jobs, upscale, overwrite=False, progress=True, err=None):
    """Run ``jobs`` with ``upscale``; a job whose output exists is skipped unless ``overwrite``.
    A job failing with a one-line error (unreadable/corrupt input, an unwritable output, out of
    memory) is reported on ``err`` (stderr) naming its input, and the others continue.
    Returns ``(done, skipped, failed, frames, seconds)``."""

    err = err or sys.stderr
    todo = [j for j in jobs if overwrite or not j.output.exists()]
    skipped, done, failed, frames = len(jobs) - len(todo), 0, 0, 0
    bar = tqdm(total=len(todo), unit='img', desc=PROG, disable=not progress or not todo, file=err, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for job in todo:
            try:
                frames += job.run(upscale)
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
    p = Parser(prog=PROG, description='Super-resolve image files with any checkpoint the package loads '
                                           '(writes DIR/<stem><suffix>.png; existing outputs are skipped).')
    p.add_argument('model', metavar='MODEL', help='checkpoint: .pth/.safetensors of this package, BasicSR with its '
                                                  '.yml, or an official checkpoint (auto-detected)')
    p.add_argument('inputs', metavar='INPUT', nargs='+', help='image files or folders')
    p.add_argument('--out', required=True, metavar='DIR', help='output folder')
    p.add_argument('--tile', type=int, metavar='N', help='tile size in input pixels (default: whole images)')
    p.add_argument('--tile-overlap', type=int, metavar='N',
                   help="context pixels around each tile (default: the network's receptive radius: exact)")
    p.add_argument('--device', default='cpu', help='cpu (default), cuda or cuda:N')
    p.add_argument('--precision', default='fp32', choices=['fp32', 'fp16', 'bf16'])
    p.add_argument('--channels-last', action='store_true', help='channels-last memory format')
    p.add_argument('--suffix', help='appended to each output stem (default _x<scale>)')
    p.add_argument('--overwrite', action='store_true', help='redo outputs that exist (default: skip them)')
    add_model_arguments(p)
    p.add_argument('--quiet', action='store_true', help='no progress bar and no summary line')
    return p


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
    device = torch_device(args.device)
    _files(args.inputs)  # a missing input fails before the model loads

    net = load_model(args.model, device=device, **model_arguments(args))
    dtype = DTYPES[args.precision]
    prepare_network(net, dtype, args.channels_last)  # fp16 on a network that is not fp16_safe fails here
    scale = requirements(net).upscale
    suffix = args.suffix if args.suffix is not None else f'_x{scale}'
    jobs = collect_jobs(args.inputs, args.out, suffix)

    upscale = functools.partial(upscale_image, net, tile=args.tile, tile_overlap=args.tile_overlap, dtype=dtype,
                                channels_last=args.channels_last)
    with _quiet_opencv():  # a corrupt file is our one line, not OpenCV's warnings too
        done, skipped, failed, frames, seconds = run_jobs(jobs, upscale, args.overwrite, progress=not args.quiet)
    if not args.quiet:
        rate = f', {frames / seconds:.2f} images/s' if done and seconds > 0 else ''
        print(f'{PROG}: {done} upscaled x{scale} in {seconds:.1f} s{rate}; {skipped} skipped (output exists); '
              f'{failed} failed; outputs in {args.out}')
    return 1 if failed else 0


def main(argv=None):
    return run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
