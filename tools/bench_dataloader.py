#!/usr/bin/env python
"""Training-dataloader throughput (samples/s) of the dataset types, on scikit-image sample photos.

    python tools/bench_dataloader.py [--seconds 12] [--batches 60] [--workers 2] [--batch-size 16] \
        [--gt-size 256] [--json bench_dataloader.json]

Builds a small data set in a temporary folder: the HR photos; their AIS 2024 x4 LR (qp31 ... qp63)
made by tools/degrade_dataset.py (``--format png``: the AVIF decoded once, as for training; SVT
preset 8 to keep the set-up short, which does not change read speed); and LMDBs of both by
tools/prepare_lmdb.py. Then it times a torch
DataLoader (random sampling with replacement, ``--workers`` processes, ``--batch-size``,
HR crops of ``--gt-size``) over:

  online JPEG   HROnlineDegradationDataset, NTIRE 2023 x2 (bicubic + JPEG q90) on the fly, folder
  AVIF LMDB     MultiLRPairedDataset, pre-degraded AVIF x4 (decoded PNG), 5 qps, LMDB
  AVIF folder   the same from folders
  online AVIF   HROnlineDegradationDataset, AIS 2024 x4 at SVT preset 8 on the fly (reference)

The first batch (worker start-up) is not timed; each loader stops after ``--seconds`` or
``--batches``. Prints a table and writes the numbers as JSON. The photos are 300-512 px, so each
sample decodes a smaller HR than a 2K DIV2K image (sub-images from prepare_lmdb.py do the same).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from rtsr_arch.data.multi_lr_paired_dataset import MultiLRPairedDataset
from rtsr_arch.data.online_degradation_dataset import HROnlineDegradationDataset

TOOLS = Path(__file__).resolve().parent
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'camera')
AIS24 = {'preset_name': 'ais24', 'preset': 8}


def write_photos(folder):
    folder.mkdir(parents=True)
    for name in PHOTOS:
        img = np.asarray(getattr(skdata, name)())
        img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        Image.fromarray(np.ascontiguousarray(img)).save(folder / f'{name}.png')


def degrade(hr, out):
    """OUT/qp31 ... OUT/qp63 of decoded AVIF LR PNGs, by tools/degrade_dataset.py."""
    subprocess.run([sys.executable, str(TOOLS / 'degrade_dataset.py'), str(hr), '--out', str(out), '--preset', 'ais24',
                    '--set', f"preset={AIS24['preset']}", '--format', 'png'], check=True, stdout=subprocess.DEVNULL)


def build_data(root):
    write_photos(root / 'hr')
    degrade(root / 'hr', root / 'lr')
    subprocess.run([sys.executable, str(TOOLS / 'prepare_lmdb.py'), '--hr', str(root / 'hr'),
                    '--lr-root', str(root / 'lr'), '--scale', '4', '--out', str(root / 'lmdb'), '--crop-size', '0'],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def datasets(root, gt_size):
    common = {'phase': 'train', 'gt_size': gt_size, 'use_hflip': True, 'use_rot': True}
    levels = sorted(p.name for p in (root / 'lr').iterdir() if p.is_dir())
    multi = {**common, 'scale': 4, 'sampling': 'uniform'}
    return {
        'online JPEG ntire23 x2 (folder)': lambda: HROnlineDegradationDataset({
            **common, 'scale': 2, 'dataroot_gt': str(root / 'hr'), 'io_backend': {'type': 'disk'},
            'degradation': {'preset_name': 'ntire23', 'scale': 2}}),
        'pre-degraded AVIF x4 (LMDB)': lambda: MultiLRPairedDataset({
            **multi, 'io_backend': {'type': 'lmdb'}, 'dataroot_gt': str(root / 'lmdb' / 'hr.lmdb'),
            'dataroots_lq': {name: str(root / 'lmdb' / f'{name}.lmdb') for name in levels}}),
        'pre-degraded AVIF x4 (folder)': lambda: MultiLRPairedDataset({
            **multi, 'io_backend': {'type': 'disk'}, 'dataroot_gt': str(root / 'hr'),
            'dataroots_lq': {name: str(root / 'lr' / name) for name in levels}}),
        f"online AVIF ais24 x4 preset {AIS24['preset']} (folder)": lambda: HROnlineDegradationDataset({
            **common, 'scale': 4, 'dataroot_gt': str(root / 'hr'), 'io_backend': {'type': 'disk'},
            'degradation': dict(AIS24)}),
    }


def bench(dataset, args):
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10 ** 6)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=args.workers, drop_last=True)
    batches = iter(loader)
    next(batches)  # worker start-up
    count, start = 0, time.perf_counter()
    for batch in batches:
        count += batch['gt'].shape[0]
        elapsed = time.perf_counter() - start
        if elapsed >= args.seconds or count >= args.batches * args.batch_size:
            break
    del batches
    return {'samples_per_s': count / elapsed, 'samples': count, 'seconds': elapsed,
            'lq_shape': list(batch['lq'].shape[1:]), 'gt_shape': list(batch['gt'].shape[1:])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=12.0, help='time limit per loader')
    parser.add_argument('--batches', type=int, default=60, help='batch limit per loader')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--gt-size', type=int, default=256, help='HR crop size (a multiple of 4)')
    parser.add_argument('--json', type=Path, default=Path('bench_dataloader.json'), help='where to write the results')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix='bench_dataloader_') as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        build_data(root)
        print(f'data set: {len(PHOTOS)} photos, 5 AVIF qps, built in {time.perf_counter() - start:.1f} s')
        rows = {}
        for name, make in datasets(root, args.gt_size).items():
            rows[name] = bench(make(), args)
    print(f'\nworkers {args.workers}, batch {args.batch_size}, gt_size {args.gt_size}, {os.cpu_count()} CPUs')
    print(f"{'dataset':44s} {'samples/s':>10s} {'batches/s':>10s}  LR patch")
    for name, row in rows.items():
        print(f"{name:44s} {row['samples_per_s']:10.1f} {row['samples_per_s'] / args.batch_size:10.2f}  "
              f"{'x'.join(map(str, row['lq_shape'][1:]))}")
    args.json.write_text(json.dumps({'settings': {k: str(v) for k, v in vars(args).items()}, 'cpus': os.cpu_count(),
                                     'torch': torch.__version__, 'results': rows}, indent=2))
    print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
