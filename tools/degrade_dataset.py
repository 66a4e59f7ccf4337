#!/usr/bin/env python
"""Degrade an HR image folder offline into one LR folder per JPEG quality / AVIF qp.

    python tools/degrade_dataset.py HR_DIR --out OUT --preset ais24 [--format encoded|png] [--save-hr] [--workers N]
    python tools/degrade_dataset.py HR_DIR --out OUT --preset ntire23 --scale 2
    python tools/degrade_dataset.py HR_DIR --out OUT -opt degradation.yml --set levels=[31,63] --set preset=8

Writes ``OUT/<level_name>/<stem><suffix>`` (``qp31/0001.avif``, ``q90/0001.jpg``; ``.png`` with
``--format png``: the decoded LR, decoded exactly as :meth:`Degradation.decode` does for training),
``OUT/hr/<stem>.png`` (the HR centre-cropped to a multiple of the scale, as the challenges did) with
``--save-hr``, and ``OUT/manifest.json`` (settings and library versions). LR files keep the HR
stem, so BasicSR's ``PairedImageDataset`` (``filename_tmpl: '{}'``) pairs them. AVIF encoding is
the slow part (about 0.5 s per 960x540 frame per qp on one core at SVT preset 5), hence offline.

Resumable and deterministic: existing outputs are skipped, each file is written to a temporary
name and renamed, the same input and settings give the same bytes. Unreadable inputs are reported
by name and skipped; the exit status is then 1. The degradation is
:class:`rtsr_arch.data.degradations.Degradation` (``-opt`` is a YAML mapping of its keys, or a file
with such a mapping under ``degradation:``).
"""
import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

import rtsr_arch  # noqa: F401  (basicsr import fixes, before basicsr)
from rtsr_arch.data.codecs import CodecUnavailableError, library_versions, png_encode
from rtsr_arch.data.degradations import Degradation, crop_to_multiple
from rtsr_arch.utils.checkpoint import atomic_write

IMAGE_SUFFIXES = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm'}
_DEG = {}  # the worker's Degradation (set by _init)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('input', type=Path, help='folder of HR images')
    p.add_argument('--out', type=Path, required=True, help='output folder')
    p.add_argument('--preset', choices=('ntire23', 'ais24'), help='challenge degradation')
    p.add_argument('--scale', type=int, help='scale (required by --preset ntire23)')
    p.add_argument('-opt', '--opt', type=Path, help='YAML degradation mapping')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override a degradation key (VALUE is YAML: levels=[31,63], levels={low: 31, high: 63})')
    p.add_argument('--format', choices=('encoded', 'png'), default='encoded',
                   help='store the compressed files (.avif / .jpg) or their decoded LR as PNG')
    p.add_argument('--save-hr', action='store_true', help='also write the centre-cropped HR to OUT/hr')
    p.add_argument('--workers', type=int, default=len(os.sched_getaffinity(0)), help='processes (default: cores)')
    return p.parse_args(argv)


def degradation_opt(args):
    opt = {}
    if args.opt:
        opt = yaml.safe_load(args.opt.read_text()) or {}
        opt = opt.get('degradation', opt) if isinstance(opt, dict) else opt
        if not isinstance(opt, dict):
            raise ValueError(f'{args.opt}: expected a YAML mapping')
    if args.preset:
        opt['preset_name'] = args.preset
    if args.scale is not None:
        opt['scale'] = args.scale
    for item in args.set:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'--set {item!r}: expected KEY=VALUE')
        opt[key.strip()] = yaml.safe_load(value)
    return opt


def write_manifest(path, manifest):
    text = json.dumps(manifest, indent=2) + '\n'
    atomic_write(path, lambda f: f.write(text.encode()))


def outputs(deg, out, stem, fmt, save_hr):
    """``[(path, level or None for the HR)]`` of one input."""
    suffix = deg.file_suffix if fmt == 'encoded' else '.png'
    paths = [(out / deg.level_name(level) / f'{stem}{suffix}', level) for level in deg.levels]
    return paths + ([(out / 'hr' / f'{stem}.png', None)] if save_hr else [])


def _init(opt):
    _DEG['deg'] = Degradation.from_opt(opt)


def process(job):
    """Degrade one HR file into its missing outputs; returns ``(name, number written, error or None)``."""
    src, todo, fmt = job
    deg = _DEG['deg']
    try:
        with Image.open(src) as img:
            hr = crop_to_multiple(np.asarray(img.convert('RGB')), deg.scale)
        for path, level in todo:
            if level is None:
                data = png_encode(hr)
            else:
                data = deg.encode(hr, level)
                if fmt == 'png' and deg.codec != 'none':
                    data = png_encode(deg.decode(data))
            atomic_write(path, lambda f: f.write(data))
        return src.name, len(todo), None
    except Exception as err:  # noqa: BLE001  (any unreadable input is reported and skipped)
        return src.name, 0, f'{type(err).__name__}: {err}'.splitlines()[0]


def main(argv=None):
    args = parse_args(argv)
    try:
        deg = Degradation.from_opt(degradation_opt(args))
    except (ValueError, CodecUnavailableError) as err:
        sys.exit(f'degrade_dataset: {err}')
    files = sorted(p for p in args.input.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if args.input.is_dir() else []
    if not files:
        sys.exit(f'degrade_dataset: no images ({", ".join(sorted(IMAGE_SUFFIXES))}) in {args.input}')
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        sys.exit('degrade_dataset: two inputs share a file stem; LR names would collide')

    settings = {'degradation': deg.opt, 'format': args.format, 'save_hr': args.save_hr,
                'file_suffix': deg.file_suffix if args.format == 'encoded' else '.png',
                'folders': {str(level): deg.level_name(level) for level in deg.levels},
                'hr_crop': f'centre crop to a multiple of {deg.scale} (crop_to_multiple)'}
    manifest_path = args.out / 'manifest.json'
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in settings} != settings:
            sys.exit(f'degrade_dataset: {manifest_path} was written with other settings; use another --out')
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {**settings, 'input': str(args.input.resolve()), 'inputs': len(files),
                'versions': {**library_versions(), 'rtsr_arch': rtsr_arch.__version__}}
    write_manifest(manifest_path, {**manifest, 'failed': None})  # running

    jobs, skipped = [], 0
    for src in files:
        todo = outputs(deg, args.out, src.stem, args.format, args.save_hr)
        for path, _ in todo:
            path.parent.mkdir(exist_ok=True)
        missing = [(str(path), level) for path, level in todo if not path.exists()]
        skipped += len(todo) - len(missing)
        if missing:
            jobs.append((src, missing, args.format))
    print(f'{deg!r}: {len(files)} inputs, {len(jobs)} to do, {skipped} files already done; '
          f'{max(1, args.workers)} workers', flush=True)

    from tqdm import tqdm

    failed, written = [], 0
    bar = tqdm(total=len(jobs), unit='img', dynamic_ncols=True)
    if args.workers <= 1:
        _init(deg.opt)
        results = map(process, jobs)
    else:
        pool = multiprocessing.Pool(args.workers, initializer=_init, initargs=(deg.opt,))
        results = pool.imap_unordered(process, jobs)
    for name, count, error in results:
        written += count
        if error:
            failed.append(name)
            tqdm.write(f'degrade_dataset: skipped {name}: {error}', file=sys.stderr)
        bar.update()
    bar.close()
    if args.workers > 1:
        pool.close()
        pool.join()
    write_manifest(manifest_path, {**manifest, 'failed': sorted(failed)})
    print(f'wrote {written} files under {args.out}' + (f'; {len(failed)} inputs failed' if failed else ''))
    if failed:
        print(f'degrade_dataset: failed inputs: {", ".join(sorted(failed))}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
