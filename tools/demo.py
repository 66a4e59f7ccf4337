#!/usr/bin/env python
"""One-command end-to-end demo: train a small LRSRN x2 on CPU, reparameterize it, beat bicubic.

    python tools/demo.py [--out demo_output] [--iters 2000] [--threads 2] [--seed 0]

No downloads and no GPU. Four phases, all written under OUT:

1. data: scikit-image's sample photos (they ship inside its wheel) degraded with the NTIRE 2023
   RTSR protocol (centre crop, PIL bicubic /2, JPEG q90; :func:`rtsr_arch.data.degradations.ntire23_lr`)
   into ``data/{train,val}/{hr,lr}`` PNGs. Training: astronaut, coffee, chelsea, rocket,
   hubble_deep_field, immunohistochemistry, retina, cut into aligned HR/LR tiles (the most
   textured ones, at most ``MAX_TILES`` per photo) so that reading a sample is cheap. Held out:
   the left and right views of ``stereo_motorcycle`` (the only other RGB photographs in the wheel).
2. train: ``train_LRSRN_x2_demo.yml`` (stock BasicSR ``SRModel``, CPU) run by
   ``python -m rtsr_arch.train`` in OUT, so ``experiments/`` lands there. The network is LRSRN x2
   C32 m4 'plain' relu with ``feature_size`` 32 (each RepConv block is 3x3 conv -> 1x1 conv +
   identity, no widening) instead of the paper's 256, trained with a larger learning rate and batch
   than the paper (cosine decay over the run): the paper's settings do not beat bicubic within
   minutes on a CPU. 3 to 9 minutes on 2 CPU threads (machine load), +0.9 dB over bicubic.
3. reparam: ``tools/reparam_ckpt.py`` (``rtsr-reparam``) -> ``LRSRN_x2_demo_deploy.pth`` + ``.yml``.
4. evaluate: the deploy network (read by :func:`rtsr_arch.loader.load_model`) on the held-out
   photos (whole image, float32, clamp, round to uint8), RGB PSNR with ``crop_border = scale``
   against PIL bicubic; prints a table and writes ``demo_results.json`` and ``comparison.png``.
   Exits 1 when the model does not beat bicubic on average.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image, ImageDraw, ImageFont

import rtsr_arch  # noqa: F401  (basicsr import fixes and registration, before basicsr)
from rtsr_arch.data.degradations import ntire23_lr
from rtsr_arch.loader import load_model
from rtsr_arch.utils.options import dump_options
from basicsr.metrics import calculate_psnr

SCRIPT_DIR = Path(__file__).resolve().parent
NAME = 'LRSRN_x2_demo'
SCALE = 2
TRAIN_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina')
HELD_OUT = ('motorcycle_left', 'motorcycle_right')
LR_TILE, LR_STEP, MAX_TILES = 96, 80, 16  # training tiles (LR pixels); the HR tile is SCALE times larger
CROP = 200  # HR size of the crops shown in comparison.png


def log(msg):
    print(f'[demo] {msg}', flush=True)


# ----------------------------------------------------------------------------------------------
# 1. data
def load_photo(name):
    if name.startswith('motorcycle_'):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name == 'motorcycle_left' else right
    else:
        img = getattr(skimage.data, name)()
    img = np.ascontiguousarray(np.asarray(img)[..., :3])
    if img.dtype != np.uint8 or img.ndim != 3:
        raise RuntimeError(f'scikit-image sample {name!r} is not an RGB uint8 photo: {img.dtype} {img.shape}')
    return img


def save_png(img, path):
    Image.fromarray(img).save(path, compress_level=1)


def tiles(hr, lr):
    """Aligned (hr_tile, lr_tile) pairs on an LR_STEP grid (last row/column flush with the edge),
    the MAX_TILES most textured ones (flat tiles such as retina's black corners teach nothing)."""
    h, w = lr.shape[:2]
    ys = sorted({*range(0, h - LR_TILE + 1, LR_STEP), h - LR_TILE})
    xs = sorted({*range(0, w - LR_TILE + 1, LR_STEP), w - LR_TILE})
    pairs = []
    for y in ys:
        for x in xs:
            hr_tile = hr[y * SCALE:(y + LR_TILE) * SCALE, x * SCALE:(x + LR_TILE) * SCALE]
            pairs.append((float(hr_tile.mean(axis=2).std()), hr_tile, lr[y:y + LR_TILE, x:x + LR_TILE]))
    pairs.sort(key=lambda p: -p[0])
    return [(h_, l_) for std, h_, l_ in pairs[:MAX_TILES] if std > 8]


def build_data(out):
    root = out / 'data'
    for split in ('train', 'val'):
        for kind in ('hr', 'lr'):
            d = root / split / kind
            d.mkdir(parents=True, exist_ok=True)
            for f in d.glob('*.png'):
                f.unlink()
    counts = {}
    for name in TRAIN_PHOTOS:
        hr, lr = ntire23_lr(load_photo(name), SCALE)
        pairs = tiles(hr, lr)
        for i, (hr_tile, lr_tile) in enumerate(pairs):
            save_png(hr_tile, root / 'train' / 'hr' / f'{name}_{i:02d}.png')
            save_png(lr_tile, root / 'train' / 'lr' / f'{name}_{i:02d}.png')
        counts[name] = len(pairs)
    held_out = {}
    for name in HELD_OUT:
        hr, lr = ntire23_lr(load_photo(name), SCALE)
        save_png(hr, root / 'val' / 'hr' / f'{name}.png')
        save_png(lr, root / 'val' / 'lr' / f'{name}.png')
        held_out[name] = (hr, lr)
    log(f'training tiles ({LR_TILE * SCALE}px HR / {LR_TILE}px LR): '
        + ', '.join(f'{k} {v}' for k, v in counts.items()) + f' = {sum(counts.values())}')
    log('held out: ' + ', '.join(f'{k} {v[0].shape[1]}x{v[0].shape[0]}' for k, v in held_out.items()))
    return held_out


# ----------------------------------------------------------------------------------------------
# 2. train
def train_options(out, args):
    data = (out / 'data').resolve()
    iters = args.iters
    return {
        'name': NAME,
        'model_type': 'SRModel',
        'scale': SCALE,
        'num_gpu': 0,
        'manual_seed': args.seed,
        'datasets': {
            'train': {
                'name': 'skimage_photos', 'type': 'PairedImageDataset',
                'dataroot_gt': str(data / 'train' / 'hr'), 'dataroot_lq': str(data / 'train' / 'lr'),
                'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                'gt_size': args.patch * SCALE, 'use_hflip': True, 'use_rot': True,
                'num_worker_per_gpu': 0, 'batch_size_per_gpu': args.batch,
                'dataset_enlarge_ratio': 100, 'prefetch_mode': None,
            },
            'val': {
                'name': 'motorcycle', 'type': 'PairedImageDataset',
                'dataroot_gt': str(data / 'val' / 'hr'), 'dataroot_lq': str(data / 'val' / 'lr'),
                'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
            },
        },
        'network_g': {
            'type': 'LRSRN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 4,
            'upscale': SCALE, 'act_type': 'relu', 'variant': 'plain', 'feature_size': args.feature_size,
        },
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': args.lr, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [iters], 'restart_weights': [1],
                          'eta_min': args.lr / 100},
            'total_iter': iters,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {
            'val_freq': max(iters // 4, 1), 'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': False,
                                 'better': 'higher'}},
        },
        'logger': {'print_freq': max(min(100, iters // 10), 1), 'save_checkpoint_freq': iters, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


def run(cmd, cwd, threads):
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads),
           'PYTHONUNBUFFERED': '1'}
    log('$ ' + ' '.join(map(str, cmd)))
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env)
    if proc.returncode:
        sys.exit(f'[demo] error: command failed with exit status {proc.returncode}')


# ----------------------------------------------------------------------------------------------
# 4. evaluate
def psnr(img, ref):
    return float(calculate_psnr(img, ref, crop_border=SCALE, input_order='HWC', test_y_channel=False))


def bicubic_upscale(lr):
    return np.asarray(Image.fromarray(lr).resize((lr.shape[1] * SCALE, lr.shape[0] * SCALE),
                                                 Image.Resampling.BICUBIC))


def super_resolve(net, lr):
    x = torch.from_numpy(np.array(lr)).permute(2, 0, 1).unsqueeze(0).float().div(255)
    with torch.no_grad():
        y = net(x).clamp(0, 1).mul(255).round()
    return y.squeeze(0).permute(1, 2, 0).to(torch.uint8).numpy()


def detail_crop(hr, size):
    """Top-left corner of the size x size window with the most gradient energy (coarse search)."""
    g = hr.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    step = size // 4
    best, corner = -1.0, (0, 0)
    for y in range(0, energy.shape[0] - size + 1, step):
        for x in range(0, energy.shape[1] - size + 1, step):
            e = float(energy[y:y + size, x:x + size].mean())
            if e > best:
                best, corner = e, (y, x)
    return corner


def font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def comparison_figure(rows, path, zoom=2):
    panel = CROP * zoom
    pad, label_h, title_h = 8, 28, 30
    width = 4 * panel + 5 * pad
    height = len(rows) * (title_h + label_h + panel + pad) + pad
    canvas = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(canvas)
    title_font, label_font = font(20), font(16)
    top = pad
    for row in rows:
        hr, lr, bic, sr = row['hr'], row['lr'], row['bicubic'], row['sr']
        y, x = detail_crop(hr, CROP)
        ly, lx, lc = y // SCALE, x // SCALE, CROP // SCALE
        crops = [lr[ly:ly + lc, lx:lx + lc]] + [im[y:y + CROP, x:x + CROP] for im in (bic, sr, hr)]
        crops = [Image.fromarray(c).resize((panel, panel), Image.Resampling.NEAREST) for c in crops]
        labels = ['LR (nearest neighbour)', f"bicubic {row['psnr_bicubic']:.2f} dB",
                  f"LRSRN deploy {row['psnr_model']:.2f} dB", 'HR']
        gain = row['psnr_model'] - row['psnr_bicubic']
        title = (f"{row['name']}: HR crop {CROP}x{CROP} at (x={x}, y={y}), shown x{zoom}; "
                 f"PSNR of the whole image, gain {gain:+.2f} dB")
        draw.text((pad, top + 4), title, fill='black', font=title_font)
        for i, (im, label) in enumerate(zip(crops, labels)):
            left = pad + i * (panel + pad)
            draw.text((left, top + title_h + 4), label, fill='black', font=label_font)
            canvas.paste(im, (left, top + title_h + label_h))
        top += title_h + label_h + panel + pad
    canvas.save(path)


def evaluate(out, held_out, deploy_ckpt):
    net = load_model(deploy_ckpt)  # the deploy checkpoint embeds its network_g
    n_params = sum(p.numel() for p in net.parameters())
    log(f'deploy network: {n_params:,} parameters')
    rows, results = [], []
    for name, (hr, lr) in held_out.items():
        bic, sr = bicubic_upscale(lr), super_resolve(net, lr)
        p_bic, p_sr = psnr(bic, hr), psnr(sr, hr)
        rows.append({'name': name, 'hr': hr, 'lr': lr, 'bicubic': bic, 'sr': sr,
                     'psnr_bicubic': p_bic, 'psnr_model': p_sr})
        results.append({'image': name, 'psnr_bicubic': round(p_bic, 4), 'psnr_model': round(p_sr, 4),
                        'gain': round(p_sr - p_bic, 4)})
    print()
    print(f"{'image':<20}{'bicubic dB':>12}{'LRSRN dB':>12}{'gain':>10}")
    for r in results:
        print(f"{r['image']:<20}{r['psnr_bicubic']:>12.2f}{r['psnr_model']:>12.2f}{r['gain']:>+10.2f}")
    mean_bic = float(np.mean([r['psnr_bicubic'] for r in rows]))
    mean_sr = float(np.mean([r['psnr_model'] for r in rows]))
    print(f"{'mean':<20}{mean_bic:>12.2f}{mean_sr:>12.2f}{mean_sr - mean_bic:>+10.2f}")
    print()
    comparison_figure(rows, out / 'comparison.png')
    return results, mean_bic, mean_sr, n_params


# ----------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='demo_output', help='output folder (default: demo_output)')
    parser.add_argument('--iters', type=int, default=2000, help='training iterations (default: 2000)')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads for torch (default: 2)')
    parser.add_argument('--seed', type=int, default=0, help='manual_seed of the training (default: 0)')
    tuning = parser.add_argument_group('training settings (the defaults are the measured demo settings)')
    tuning.add_argument('--lr', type=float, default=3e-3, help='peak learning rate (cosine decay to lr/100)')
    tuning.add_argument('--batch', type=int, default=16, help='batch size')
    tuning.add_argument('--patch', type=int, default=48, help='LR patch size')
    tuning.add_argument('--feature-size', type=int, default=32, help='inner width of the RepConv blocks')
    args = parser.parse_args(argv)
    if args.iters < 1 or args.threads < 1:
        parser.error('--iters and --threads must be positive')

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times = {}

    t0 = time.perf_counter()
    log(f'1/4 building the dataset in {out / "data"}')
    held_out = build_data(out)
    times['data'] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_yml = out / f'train_{NAME}.yml'
    dump_options(train_options(out, args), train_yml)
    train_yml.write_text(f'# LRSRN x2 CPU demo, written by tools/demo.py (--iters {args.iters} --seed {args.seed});\n'
                         '# from scratch on scikit-image sample photos, validated on the held-out motorcycle photos.\n'
                         + train_yml.read_text())
    log(f'2/4 training {args.iters} iterations on {args.threads} CPU threads ({train_yml.name})')
    run([sys.executable, '-m', 'rtsr_arch.train', '-opt', train_yml], out, args.threads)
    times['train'] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ckpt = out / 'experiments' / NAME / 'models' / 'net_g_latest.pth'
    deploy = out / f'{NAME}_deploy.pth'
    log('3/4 reparameterizing into the deploy form')
    run([sys.executable, SCRIPT_DIR / 'reparam_ckpt.py', '--ckpt', ckpt, '--opt', train_yml, '--out', deploy,
         '--overwrite'], out, args.threads)
    times['reparam'] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log('4/4 evaluating the deploy network on the held-out photos')
    results, mean_bic, mean_sr, n_params = evaluate(out, held_out, deploy)
    times['evaluate'] = time.perf_counter() - t0

    gain = mean_sr - mean_bic
    summary = {
        'iterations': args.iters, 'threads': args.threads, 'seed': args.seed,
        'settings': {'lr': args.lr, 'batch': args.batch, 'lr_patch': args.patch, 'feature_size': args.feature_size},
        'deploy_params': n_params, 'images': results,
        'mean_psnr_bicubic': round(mean_bic, 4), 'mean_psnr_model': round(mean_sr, 4), 'mean_gain': round(gain, 4),
        'seconds': {k: round(v, 1) for k, v in times.items()},
        'train_yml': str(train_yml), 'deploy_checkpoint': str(deploy), 'comparison': str(out / 'comparison.png'),
    }
    (out / 'demo_results.json').write_text(json.dumps(summary, indent=2) + '\n')
    log('time: ' + ', '.join(f'{k} {v:.0f} s' for k, v in times.items()) + f', total {sum(times.values()):.0f} s')
    log(f'wrote {out / "comparison.png"} and {out / "demo_results.json"}')
    if gain <= 0:
        log(f'FAIL: the model does not beat bicubic (mean gain {gain:+.2f} dB)')
        return 1
    log(f'OK: LRSRN beats bicubic by {gain:+.2f} dB on average')
    return 0


if __name__ == '__main__':
    sys.exit(main())
