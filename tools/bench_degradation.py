#!/usr/bin/env python
"""Offline degradation throughput on one 3840x2160 HR frame, per core.

    python tools/bench_degradation.py [--qps 31 39 47 55 63] [--frames 2] [--preset 5] [--json bench_degradation.json]

The frame is a mosaic of native 384x216 crops (no upsampling) of scikit-image's sample photos
(astronaut, coffee, chelsea, rocket, stereo_motorcycle, hubble_deep_field, immunohistochemistry,
retina). The process is pinned to one core and every library runs single-threaded (SVT-AV1
``lp=1``, one dav1d thread), so frames/s is per core: a pool of N workers does about N times that.
Measured per QP: the AIS 2024 x4 pipeline (:class:`~rtsr_arch.data.degradations.Degradation`
``ais24``: swscale Lanczos-5 -> yuv420p -> libsvtav1 -> .avif) and its decode, with file size and
PSNR against the clean Lanczos-5 LR; then the NTIRE 2023 x2 / x3 pipeline (PIL bicubic + JPEG q90)
on the same frame. Times are medians over ``--frames`` runs.
"""
import argparse
import json
import os
import platform
import statistics
import time

import cv2
import numpy as np
import skimage.data

import rtsr_arch  # noqa: F401  (basicsr import fixes, before basicsr)
from rtsr_arch.data.codecs import library_versions
from rtsr_arch.data.degradations import Degradation
from basicsr.metrics import calculate_psnr

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'stereo_motorcycle', 'hubble_deep_field',
          'immunohistochemistry', 'retina')
TILE_H, TILE_W = 216, 384  # fits inside every photo (chelsea is 300x451), 10x10 tiles = 2160x3840


def mosaic_4k(seed=0):
    """3840x2160 uint8 RGB: 10x10 native crops, photo k % 8 at tile k, random crop offsets."""
    photos = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        photos.append(np.asarray(img[0] if name == 'stereo_motorcycle' else img)[..., :3])
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(10):
        tiles = []
        for c in range(10):
            img = photos[(r * 10 + c) % len(photos)]
            top = rng.integers(0, img.shape[0] - TILE_H + 1)
            left = rng.integers(0, img.shape[1] - TILE_W + 1)
            tiles.append(img[top:top + TILE_H, left:left + TILE_W])
        rows.append(np.concatenate(tiles, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def psnr(a, b):
    """RGB PSNR (peak 255, whole image) of two uint8 images: BasicSR's metric."""
    return float(calculate_psnr(a, b, crop_border=0, input_order='HWC'))


def timed(fn, runs):
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--qps', type=int, nargs='+', default=[31, 39, 47, 55, 63])
    p.add_argument('--frames', type=int, default=2, help='timed runs per measurement (median)')
    p.add_argument('--preset', type=int, default=5, help='SVT-AV1 preset')
    p.add_argument('--json', default='bench_degradation.json')
    args = p.parse_args(argv)

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    hr = mosaic_4k()
    ais24 = Degradation.from_opt({'preset_name': 'ais24', 'levels': args.qps, 'preset': args.preset})
    clean = ais24.resize(hr)
    rows = []
    print(f'HR {hr.shape[1]}x{hr.shape[0]} -> LR {clean.shape[1]}x{clean.shape[0]}, one core, '
          f'SVT-AV1 preset {args.preset}, median of {args.frames}')
    print(f"{'pipeline':<22} {'encode s':>9} {'decode ms':>10} {'frames/s/core':>14} {'KB':>8} {'PSNR dB':>8}")
    for qp in args.qps:
        enc_s, data = timed(lambda: ais24.encode(hr, qp), args.frames)
        dec_s, lr = timed(lambda: ais24.decode(data), args.frames)
        rows.append({'pipeline': f'ais24 x4 avif qp{qp}', 'encode_s': enc_s, 'decode_ms': dec_s * 1e3,
                     'frames_per_s_per_core': 1 / (enc_s + dec_s), 'kbytes': len(data) / 1e3,
                     'psnr_db': psnr(lr, clean), 'psnr_vs': 'clean Lanczos-5 LR'})
    for scale in (2, 3):
        ntire = Degradation.from_opt({'preset_name': 'ntire23', 'scale': scale})
        enc_s, data = timed(lambda: ntire.encode(hr, 90), args.frames)
        dec_s, lr = timed(lambda: ntire.decode(data), args.frames)
        rows.append({'pipeline': f'ntire23 x{scale} jpeg q90', 'encode_s': enc_s, 'decode_ms': dec_s * 1e3,
                     'frames_per_s_per_core': 1 / (enc_s + dec_s), 'kbytes': len(data) / 1e3,
                     'psnr_db': psnr(lr, ntire.resize(hr)), 'psnr_vs': 'clean bicubic LR'})
    for row in rows:
        print(f"{row['pipeline']:<22} {row['encode_s']:>9.3f} {row['decode_ms']:>10.1f} "
              f"{row['frames_per_s_per_core']:>14.2f} {row['kbytes']:>8.1f} {row['psnr_db']:>8.2f}")
    result = {'hr_size': [hr.shape[1], hr.shape[0]], 'svt_preset': args.preset, 'runs': args.frames,
              'cpu': platform.processor() or platform.machine(),
              'versions': {**library_versions(), 'rtsr_arch': rtsr_arch.__version__}, 'rows': rows}
    with open(args.json, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
