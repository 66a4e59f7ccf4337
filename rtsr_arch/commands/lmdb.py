"""``rtsr-lmdb``: HR and LR images -> aligned sub-images, each set stored as a BasicSR LMDB.

    rtsr-lmdb --hr datasets/DIV2K/DIV2K_train_HR \\
        --lr-root datasets/DIV2K/AIS24_train_LR --scale 4 --out datasets/DIV2K/AIS24_train_sub \\
        [--crop-size 480 --step 240 --thresh-size 0 --compress-level 1]
    rtsr-lmdb --verify datasets/DIV2K/AIS24_train_sub --scale 4

Writes OUT/hr.lmdb and one OUT/<name>.lmdb per LR set (``--lr NAME=FOLDER``, repeatable, or every
sub-folder of ``--lr-root`` but ``hr``, e.g. qp31 ... qp63 as written by ``rtsr-degrade``). Images
pair by file stem; each HR is centre-cropped to a multiple of the scale and its LR must be HR / scale.
Sub-images follow BasicSR's ``scripts/data_preparation/extract_subimages.py`` (not in the pip
package): ``--crop-size`` windows every ``--step`` pixels, plus a last window flush with the
border when more than ``--thresh-size`` pixels remain; the LR window is the HR window / scale and
every set uses the same keys ``<stem>_s001``... (``--crop-size 0``: whole images, key ``<stem>``).
Values are PNG written by OpenCV as ``basicsr.utils.lmdb_util`` writes them, so BasicSR's
``LmdbBackend`` + ``imfrombytes`` read them; AVIF and JPEG LR are stored decoded (by
``Degradation.decode``) so reading needs no AVIF decoder. ``--verify`` decodes every key of every
LMDB in a folder, checks meta_info shapes, identical key sets and LR = HR / scale; exits 1 on any
problem. Bad input is a one-line error and exit status 2.

Robust on large data: each image's sub-images are committed in one transaction, and a full map
is doubled (``--map-size`` is only the start); ``meta_info.txt`` is written last (atomically), so
an LMDB without it is half-built, and BasicSR and this package refuse to read it. While a build
runs, ``OUT/.rtsr-lmdb-build.json`` records its settings; a build stopped by an error or a kill is
resumed by running the same command again (images already stored are skipped), a different
command on a half-built OUT is refused.
"""
import json
import re
import struct
import sys
from pathlib import Path

import lmdb
import numpy as np
from tqdm import tqdm

from rtsr_arch.commands.common import CommandError, Parser, run_command
from rtsr_arch.data.codecs import CodecUnavailableError
from rtsr_arch.data.degradations import crop_to_multiple
from rtsr_arch.data.image_io import DatasetError, ImageSet, decode_image, encode_png, lmdb_env
from rtsr_arch.utils.checkpoint import atomic_write

__all__ = ['main', 'build', 'verify', 'windows', 'LmdbWriter', 'BUILD_MARKER']

DESCRIPTION = 'HR and LR images -> aligned sub-images, each set stored as a BasicSR LMDB.'
PROG = 'rtsr-lmdb'
HR_NAME = 'hr'
BUILD_MARKER = '.rtsr-lmdb-build.json'
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels


class LmdbWriter:
    """A BasicSR LMDB written in transactions that a kill or an error never leaves half-done,
    whose map grows when full, and whose ``meta_info.txt`` (keys in put order, shapes read back from
    the stored PNG headers) is written by :meth:`close` only. Opening an existing half-built LMDB
    continues it: :attr:`stored` holds the keys already committed."""

    def __init__(self, path, map_size, compress_level):
        self.path, self.compress_level, self.keys = Path(path), compress_level, []
        self.env = lmdb.open(str(path), map_size=map_size)
        with self.env.begin() as txn:
            self.stored = {key.decode('ascii') for key in txn.cursor().iternext(values=False)}

    def put(self, items):
        """Store ``[(key, png bytes)]`` in one transaction; keys already stored are skipped."""
        items = [(k, v) for k, v in items if k not in self.stored]
        while items:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key.encode('ascii'), value)
                break
            except lmdb.MapFullError:  # the transaction was aborted: grow the map and write it again
                self.env.set_mapsize(2 * self.env.info()['map_size'])
        self.stored.update(k for k, _ in items)

    def close(self):
        """Write ``meta_info.txt`` for the keys given to :meth:`expect` and close."""
        lines = []
        with self.env.begin(buffers=True) as txn:
            for key in self.keys:
                header = bytes(txn.get(key.encode('ascii'))[16:26])  # the PNG IHDR chunk's fields
                w, h, _, colour = struct.unpack('>IIBB', header)
                lines.append(f'{key}.png ({h},{w},{_PNG_CHANNELS[colour]}) {self.compress_level}\n')
        self.env.close()
        atomic_write(self.path / 'meta_info.txt', lambda f: f.write(''.join(lines).encode()))

    def expect(self, key):
        """Record ``key`` for meta_info.txt (in order), stored now or by an earlier run."""
        self.keys.append(key)


def windows(size, crop, step, thresh):
    """Window starts along one side, as BasicSR's extract_subimages.py."""
    starts = list(range(0, size - crop + 1, step))
    if size - (starts[-1] + crop) > thresh:
        starts.append(size - crop)
    return starts


def check_lr_size(lr_set, hr_set, key, lr_size, hr_size, scale):
    if (lr_size[0] * scale, lr_size[1] * scale) != tuple(hr_size):
        raise DatasetError(f'{lr_set.where(key)}: LR {lr_size[0]}x{lr_size[1]} is not HR / {scale} of '
                           f'{hr_set.where(key)} ({hr_size[0]}x{hr_size[1]} after cropping to a multiple of {scale})')


def lr_sets(args):
    sets = dict(spec.split('=', 1) if '=' in spec else (Path(spec).name, spec) for spec in args.lr)
    if args.lr_root:
        root = Path(args.lr_root)
        if not root.is_dir():
            raise DatasetError(f'--lr-root: no such folder {root}')
        sets.update((p.name, str(p)) for p in sorted(root.iterdir()) if p.is_dir() and p.name != HR_NAME)
    if HR_NAME in sets:
        raise DatasetError(f'--lr: the name {HR_NAME!r} is reserved for the HR set')
    return {name: ImageSet(path, 'disk', f'--lr {name}') for name, path in sets.items()}


def build(args):
    scale, crop, step = args.scale, args.crop_size, args.step
    for flag, value in (('--crop-size', crop), ('--step', step), ('--thresh-size', args.thresh_size)):
        if value < 0 or (flag != '--thresh-size' and value % scale):
            raise DatasetError(f'{flag}: {value} must be a non-negative multiple of the scale {scale}')
    if crop and not step:
        raise DatasetError('--step: must be positive with --crop-size')
    hr_set = ImageSet(args.hr, 'disk', '--hr')
    lrs = lr_sets(args)
    bad = [k for k in hr_set.keys if not re.fullmatch(r'[A-Za-z0-9_\-]+', k)]
    if bad:
        raise DatasetError(f'{hr_set.where(bad[0])}: LMDB keys may hold only letters, digits, _ and -; rename the file')
    for lr in lrs.values():
        missing = [k for k in hr_set.keys if k not in lr.files]
        if missing:
            raise DatasetError(f'{lr.opt_key}: no LR for {hr_set.where(missing[0])} in {lr.root}')
    for key in tqdm(hr_set.keys, unit='image', desc='sizes') if lrs else ():  # headers only, before writing
        h, w = hr_set.size(key)
        for lr in lrs.values():
            check_lr_size(lr, hr_set, key, lr.size(key), (h - h % scale, w - w % scale), scale)
    out = Path(args.out)
    targets = {HR_NAME: out / f'{HR_NAME}.lmdb', **{name: out / f'{name}.lmdb' for name in lrs}}
    settings = {'hr': str(Path(args.hr).resolve()), 'lr': {n: str(Path(s.root).resolve()) for n, s in lrs.items()},
                'scale': scale, 'crop_size': crop, 'step': step, 'thresh_size': args.thresh_size,
                'compress_level': args.compress_level}
    marker = out / BUILD_MARKER
    resuming = marker.is_file()
    if resuming and json.loads(marker.read_text()) != settings:
        raise DatasetError(f'--out: {out} holds a half-built LMDB set from other settings ({marker}); '
                           'rerun that command to complete it, or remove the folder')
    for path in targets.values():
        if path.exists() and not resuming:
            raise DatasetError(f'--out: {path} already exists')
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, lambda f: f.write(json.dumps(settings, indent=1).encode()))
    writers = {name: LmdbWriter(path, args.map_size, args.compress_level) for name, path in targets.items()}
    if resuming:
        print(f'{PROG}: resuming a half-built {out}: {len(writers[HR_NAME].stored)} keys already stored', flush=True)
    skipped, count = [], 0
    try:
        for key in tqdm(hr_set.keys, unit='image', desc='images'):
            h, w = hr_set.size(key)
            if crop and min(h - h % scale, w - w % scale) < crop:
                skipped.append(key)
                continue
            if crop:
                boxes = [(top, left, crop, crop) for top in windows(h - h % scale, crop, step, args.thresh_size)
                         for left in windows(w - w % scale, crop, step, args.thresh_size)]
                sub_keys = [f'{key}_s{index:03d}' for index in range(1, len(boxes) + 1)]
            else:
                boxes, sub_keys = [(0, 0, h - h % scale, w - w % scale)], [key]
            for writer in writers.values():
                for sub_key in sub_keys:
                    writer.expect(sub_key)
            count += len(sub_keys)
            if all(k in writer.stored for writer in writers.values() for k in sub_keys):
                continue  # stored by an earlier, interrupted run
            hr = crop_to_multiple(hr_set.read(key), scale)
            images = {HR_NAME: hr}
            for name, lr_set in lrs.items():
                images[name] = lr_set.read(key)
                check_lr_size(lr_set, hr_set, key, images[name].shape[:2], hr.shape[:2], scale)
            for name, img in images.items():
                f = 1 if name == HR_NAME else scale
                writers[name].put([(sub_key, encode_png(np.ascontiguousarray(
                    img[top // f:(top + bh) // f, left // f:(left + bw) // f]), args.compress_level))
                    for sub_key, (top, left, bh, bw) in zip(sub_keys, boxes)])
    except BaseException:  # leave the LMDBs half-built (no meta_info.txt) for a rerun to complete
        for writer in writers.values():
            writer.env.close()
        raise
    for writer in writers.values():
        writer.close()
    marker.unlink()
    if skipped:
        print(f'{PROG}: warning: skipped {len(skipped)} images smaller than --crop-size {crop} '
              f'(first: {hr_set.where(skipped[0])})', file=sys.stderr)
    print(f"wrote {count} keys to each of {', '.join(str(p) for p in targets.values())}")


def verify(folder, scale):
    """Problems found in the LMDBs of ``folder`` (hr.lmdb + LR sets), as lines."""
    folder = Path(folder)
    paths = sorted(folder.glob('*.lmdb')) if folder.suffix != '.lmdb' else [folder]
    if not paths:
        raise DatasetError(f'--verify: no *.lmdb in {folder}')
    sets = {p.stem: ImageSet(p, 'lmdb', f'--verify {p.name}') for p in paths}
    problems, shapes = [], {}
    for name, image_set in sets.items():
        with lmdb_env(image_set.root).begin() as txn:
            for key in tqdm(image_set.keys, unit='key', desc=name):
                try:
                    img = decode_image(txn.get(key.encode('ascii')), image_set.where(key))
                except DatasetError as exc:
                    problems.append(str(exc))
                    continue
                shapes[name, key] = img.shape[:2]
                if img.shape[:2] != image_set.sizes[key]:
                    problems.append(f'{image_set.where(key)}: decodes to {img.shape[:2]}, '
                                    f'meta_info says {image_set.sizes[key]}')
    hr = sets.get(HR_NAME)
    for name, image_set in sets.items():
        if hr is None or name == HR_NAME:
            continue
        if set(image_set.keys) != set(hr.keys):
            diff = sorted(set(image_set.keys) ^ set(hr.keys))
            problems.append(f'{image_set.root}: keys differ from {hr.root} ({len(diff)} keys, first: {diff[0]})')
        for key in set(image_set.keys) & set(hr.keys):
            lr_shape, hr_shape = shapes.get((name, key)), shapes.get((HR_NAME, key))
            if scale and lr_shape and hr_shape and (lr_shape[0] * scale, lr_shape[1] * scale) != hr_shape:
                problems.append(f'{image_set.where(key)}: LR {lr_shape} is not HR {hr_shape} / {scale}')
    print(f"checked {sum(len(s.keys) for s in sets.values())} keys in {len(sets)} LMDBs: "
          f"{len(problems)} problems")
    return problems


def body(argv):
    parser = Parser(prog=PROG, description=DESCRIPTION)
    parser.add_argument('--hr', help='HR image folder')
    parser.add_argument('--lr', action='append', default=[], metavar='NAME=FOLDER',
                        help='an LR set (repeatable; NAME defaults to the folder name)')
    parser.add_argument('--lr-root', help='a folder whose sub-folders are LR sets (e.g. qp31 ... qp63)')
    parser.add_argument('--scale', type=int, help='HR / LR size ratio')
    parser.add_argument('--out', help='output folder for hr.lmdb and <NAME>.lmdb')
    parser.add_argument('--crop-size', type=int, default=480, help='HR sub-image size; 0 keeps whole images')
    parser.add_argument('--step', type=int, default=240, help='HR sub-image stride')
    parser.add_argument('--thresh-size', type=int, default=0, help='add a border window when more pixels remain')
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression level (BasicSR: 1)')
    parser.add_argument('--map-size', type=int, default=1 << 30,
                        help='initial LMDB map size in bytes (doubled whenever full)')
    parser.add_argument('--verify', metavar='FOLDER', help='check the LMDBs in FOLDER instead of building')
    args = parser.parse_args(argv)
    try:
        if args.verify:
            problems = verify(args.verify, args.scale)
            for line in problems[:20]:
                print(f'{PROG}: {line}', file=sys.stderr)
            return 1 if problems else 0
        if not (args.hr and args.out and args.scale and args.scale > 0):
            raise CommandError('--hr, --out and a positive --scale are required (or --verify FOLDER)')
        build(args)
    except CodecUnavailableError as exc:  # an ImportError: one line ending in 'pip install av'
        raise CommandError(str(exc)) from exc
    return 0


def main(argv=None):
    """Entry point of ``rtsr-lmdb`` and ``tools/prepare_lmdb.py``."""
    return run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
