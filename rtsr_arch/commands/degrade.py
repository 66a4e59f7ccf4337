"""``rtsr-degrade``: an HR image folder -> one LR folder per JPEG quality / AVIF qp, offline.

    rtsr-degrade HR_DIR --out OUT --preset ais24 [--format encoded|png] [--save-hr] [--workers N]
    rtsr-degrade HR_DIR --out OUT --preset ntire23 --scale 2
    rtsr-degrade HR_DIR --out OUT -opt degradation.yml --set levels=[31,63] --set preset=8
    rtsr-degrade HR_DIR --out OUT --preset ais24 --shard 3/8    # this machine's eighth
    rtsr-degrade --verify MERGED_OUT                              # after merging the shards' OUTs

Writes ``OUT/<level_name>/<stem><suffix>`` (``qp31/0001.avif``, ``q90/0001.jpg``; ``.png`` with
``--format png``: the decoded LR, decoded exactly as :meth:`Degradation.decode` does for training),
``OUT/hr/<stem>.png`` (the HR centre-cropped to a multiple of the scale, as the challenges did) with
``--save-hr``, and ``OUT/manifest.json`` (settings, library versions and the SHA-256 of every
output file). LR files keep the HR
stem, so ``MultiLRPairedDataset`` pairs them by stem; BasicSR's ``PairedImageDataset`` pairs by name
with the extension, so only ``--format png`` LR next to ``.png`` HR. AVIF encoding is the slow part (about 0.5 s per 960x540 frame per qp on one core at SVT preset 5), hence offline.

Resumable and deterministic: existing outputs are skipped, each file is written to a temporary
name and renamed, the same input and settings give the same bytes. Unreadable inputs are reported
by name and skipped; the exit status is then 1. Bad options are a one-line error, exit status 2,
before anything is written. The degradation is :class:`rtsr_arch.data.degradations.Degradation`
(``-opt`` is a YAML mapping of its keys, or a file with such a mapping under ``degradation:``).

Datasets larger than one machine: ``--shard I/N`` (``I`` from 0 to N-1, e.g. a SLURM array's
``$SLURM_ARRAY_TASK_ID``) takes every N-th input of the sorted file list, starting at the I-th, and
writes ``OUT/manifest.shard-I-of-N.json`` instead of ``manifest.json``. Copy the shards' outputs
into one folder (their file names never collide) and run ``--verify`` on it: every file a manifest
lists must be there with its hash, nothing else may be, every shard of the split must be present
and finished; each problem is one line on stderr and the exit status is then 1.
"""
import hashlib
import json
import multiprocessing
import re
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import rtsr_arch
from rtsr_arch.commands.common import CommandError, Parser, run_command
from rtsr_arch.data.codecs import CodecUnavailableError, library_versions, png_encode
from rtsr_arch.data.degradations import Degradation, crop_to_multiple
from rtsr_arch.utils.checkpoint import atomic_write
from rtsr_arch.utils.options import load_options, parse_overrides

__all__ = ['main', 'degradation_opt', 'degrade_folder', 'outputs', 'verify_folder', 'parse_shard', 'IMAGE_SUFFIXES']

DESCRIPTION = 'An HR image folder -> one LR folder per JPEG quality / AVIF qp, offline.'
PROG = 'rtsr-degrade'
IMAGE_SUFFIXES = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm'}
_DEG = {}  # the worker's Degradation (set by _init)


def parse_shard(text):
    """``'I/N'`` -> ``(I, N)`` with ``0 <= I < N``; anything else is a one-line error."""
    match = re.fullmatch(r'(\d+)/(\d+)', str(text).strip())
    if not match or not int(match[1]) < int(match[2]):
        raise CommandError(f'--shard: {text!r} is not I/N with 0 <= I < N (e.g. 0/4 ... 3/4)')
    return int(match[1]), int(match[2])


def parse_args(argv=None):
    p = Parser(prog=PROG, description=DESCRIPTION)
    p.add_argument('input', type=Path, nargs='?', help='folder of HR images')
    p.add_argument('--out', type=Path, help='output folder')
    p.add_argument('--shard', help='I/N: degrade only the I-th of N interleaved parts of the inputs (I from 0)')
    p.add_argument('--verify', type=Path, metavar='FOLDER',
                   help="check a (merged) output folder against its manifests instead of degrading")
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


def degradation_opt(opt_file=None, preset=None, scale=None, sets=()):
    """The ``Degradation`` mapping of an option file (its ``degradation:`` mapping, or the whole
    file), ``--preset``, ``--scale`` and ``--set key=value`` items, in that order of precedence."""
    opt = {}
    if opt_file:
        opt = load_options(opt_file)
        opt = opt.get('degradation', opt)
        if not isinstance(opt, dict):
            raise CommandError(f'{opt_file}: degradation: expected a YAML mapping')
        opt = dict(opt)
    if preset:
        opt['preset_name'] = preset
    if scale is not None:
        opt['scale'] = scale
    opt.update(parse_overrides(sets))
    return opt


def sha256(data):
    """The hex SHA-256 of ``data`` (what the manifests list per file)."""
    return hashlib.sha256(data).hexdigest()


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
    """Degrade one HR file into its missing outputs; returns ``(name, {path: SHA-256 of the files
    written}, error or None)``."""
    src, todo, fmt = job
    deg = _DEG['deg']
    hashes = {}
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
            hashes[path] = sha256(data)
        return src.name, hashes, None
    except Exception as err:  # noqa: BLE001  (any unreadable input is reported and skipped)
        return src.name, hashes, f'{type(err).__name__}: {err}'.splitlines()[0]


def degrade_folder(deg, input_dir, out, fmt='encoded', save_hr=False, workers=1, shard=None):
    """Degrade every image of ``input_dir`` (the ``shard=(I, N)`` part of them) into ``out`` with
    the :class:`Degradation` ``deg`` (see the module docstring); returns the names of the inputs
    that failed."""
    input_dir, out = Path(input_dir), Path(out)
    files = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if input_dir.is_dir() else []
    if not files:
        raise CommandError(f'{input_dir}: no images ({", ".join(sorted(IMAGE_SUFFIXES))})')
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        raise CommandError(f'{input_dir}: two inputs share a file stem; LR names would collide')
    if shard is not None:
        files = files[shard[0]::shard[1]]

    settings = {'degradation': deg.opt, 'format': fmt, 'save_hr': save_hr,
                'file_suffix': deg.file_suffix if fmt == 'encoded' else '.png',
                'folders': {str(level): deg.level_name(level) for level in deg.levels},
                'hr_crop': f'centre crop to a multiple of {deg.scale} (crop_to_multiple)'}
    manifest_path = out / ('manifest.json' if shard is None else f'manifest.shard-{shard[0]}-of-{shard[1]}.json')
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise CommandError(f'{manifest_path}: not a manifest written by {PROG} ({exc.msg})') from exc
        if {k: old.get(k) for k in settings} != settings:
            raise CommandError(f'{manifest_path} was written with other settings; use another --out')
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**settings, 'input': str(input_dir.resolve()), 'inputs': len(files),
                'shard': None if shard is None else list(shard),
                'versions': {**library_versions(), 'rtsr_arch': rtsr_arch.__version__}}
    write_manifest(manifest_path, {**manifest, 'failed': None})  # running

    jobs, skipped, hashes = [], 0, {}
    for src in files:
        todo = outputs(deg, out, src.stem, fmt, save_hr)
        for path, _ in todo:
            path.parent.mkdir(exist_ok=True)
        missing = [(str(path), level) for path, level in todo if not path.exists()]
        skipped += len(todo) - len(missing)
        hashes.update((str(path), sha256(path.read_bytes())) for path, _ in todo if path.exists())
        if missing:
            jobs.append((src, missing, fmt))
    print(f'{deg!r}: {len(files)} inputs, {len(jobs)} to do, {skipped} files already done; '
          f'{max(1, workers)} workers', flush=True)

    failed, written = [], 0
    bar = tqdm(total=len(jobs), unit='img', dynamic_ncols=True)
    pool = None
    if workers <= 1:
        _init(deg.opt)
        results = map(process, jobs)
    else:
        pool = multiprocessing.Pool(workers, initializer=_init, initargs=(deg.opt,))
        results = pool.imap_unordered(process, jobs)
    try:
        for name, written_hashes, error in results:
            written += len(written_hashes)
            hashes.update(written_hashes)
            if error:
                failed.append(name)
                tqdm.write(f'{PROG}: skipped {name}: {error}', file=sys.stderr)
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    files_done = {Path(p).relative_to(out).as_posix(): h for p, h in sorted(hashes.items())}
    write_manifest(manifest_path, {**manifest, 'failed': sorted(failed), 'files': files_done})
    print(f'wrote {written} files under {out}' + (f'; {len(failed)} inputs failed' if failed else ''))
    return sorted(failed)


def _manifests(folder):
    """``{name: manifest}`` of ``manifest.json`` and ``manifest.shard-I-of-N.json`` in ``folder``."""
    found = {}
    for path in sorted(folder.glob('manifest*.json')):
        if path.name != 'manifest.json' and not re.fullmatch(r'manifest\.shard-\d+-of-\d+\.json', path.name):
            continue
        try:
            found[path.name] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CommandError(f'{path}: not a manifest written by {PROG} ({exc.msg})') from exc
    return found


def verify_folder(folder):
    """Problems of a (merged) output folder against its manifests, one line each (see the module
    docstring): unfinished or missing shards, missing, extra and changed files."""
    folder = Path(folder)
    manifests = _manifests(folder) if folder.is_dir() else {}
    if not manifests:
        raise CommandError(f'--verify: no manifest.json or manifest.shard-I-of-N.json in {folder}')
    problems, expected = [], {}
    splits = {}
    for name, manifest in manifests.items():
        if manifest.get('failed') is None:
            problems.append(f'{folder / name}: unfinished (the run was stopped; run it again to complete it)')
            continue
        if manifest.get('files') is None:
            problems.append(f'{folder / name}: lists no file hashes (an older {PROG}); run it again to add them')
            continue
        if manifest.get('failed'):
            problems.append(f"{folder / name}: inputs failed: {', '.join(manifest['failed'])}")
        if manifest.get('shard'):
            splits.setdefault(manifest['shard'][1], set()).add(manifest['shard'][0])
        for rel, digest in manifest['files'].items():
            if expected.setdefault(rel, (digest, name))[0] != digest:
                problems.append(f'{folder / rel}: {name} and {expected[rel][1]} list different contents')
    for n, shards in sorted(splits.items()):
        absent = sorted(set(range(n)) - shards)
        if absent:
            problems.append(f"{folder}: shards {', '.join(f'{i}/{n}' for i in absent)} missing "
                            f'(no manifest.shard-I-of-{n}.json)')
    present = {p.relative_to(folder).as_posix() for p in folder.rglob('*')
               if p.is_file() and p.parent != folder}
    for rel in sorted(expected):
        if rel not in present:
            problems.append(f'{folder / rel}: missing ({expected[rel][1]} lists it)')
        elif sha256((folder / rel).read_bytes()) != expected[rel][0]:
            problems.append(f'{folder / rel}: content differs from {expected[rel][1]} (SHA-256)')
    problems += [f'{folder / rel}: not listed in any manifest' for rel in sorted(present - expected.keys())]
    print(f'checked {len(expected)} files of {len(manifests)} manifests in {folder}: {len(problems)} problems')
    return problems


def body(argv):
    args = parse_args(argv)
    if args.verify:
        problems = verify_folder(args.verify)
        for line in problems:
            print(f'{PROG}: {line}', file=sys.stderr)
        return 1 if problems else 0
    if args.input is None or args.out is None:
        raise CommandError('an input folder and --out are required (or --verify FOLDER)')
    shard = parse_shard(args.shard) if args.shard is not None else None
    try:
        deg = Degradation.from_opt(degradation_opt(args.opt, args.preset, args.scale, args.set))
    except CodecUnavailableError as err:  # an ImportError: one line ending in 'pip install av'
        raise CommandError(str(err)) from err
    failed = degrade_folder(deg, args.input, args.out, args.format, args.save_hr, args.workers, shard)
    if failed:
        print(f'{PROG}: failed inputs: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    """Entry point of ``rtsr-degrade`` and ``tools/degrade_dataset.py``."""
    return run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
