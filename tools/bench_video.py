#!/usr/bin/env python
r"""Video upscaling throughput per stage (decode / inference / encode), per network and backend.

    python tools/bench_video.py                         # 540p -> 1080p x2, 30 frames, LRSRN and RT4KSR, every backend
    python tools/bench_video.py --quick --out results/bench_video      # tiny clip: a smoke test, seconds
    python tools/bench_video.py --device cuda --frames 120 --batch 8
    python tools/bench_video.py --memory --out results/bench_video      # + peak RSS, LRSRN x2 1080p -> 4K, tiled

A clip is made first (:func:`rtsr_arch.video.pan_zoom_clip`: a pan and zoom over scikit-image's
astronaut), encoded with libx264 (CRF 18, yuv420p) in .mp4 with an AAC sine track, so decoding is
real H.264.
Each network (paper default x2 configurations, deploy form, as ``tools/bench_onnx.py`` loads them:
LRSRN C32 m4, RT4KSR size S with the official weights when the fixtures are present) then runs
through :func:`rtsr_arch.video.upscale_video`, the ``rtsr-upscale`` pipeline (decode, inference and
encode threads; libx264 ``--preset`` as given, default ``veryfast``), once per backend
(:func:`rtsr_arch.backends.make_upscaler`). Reported per row: frames/s end to end and per stage
(frames / busy seconds of that stage: the smallest is the bottleneck). ``--memory`` runs
``rtsr-upscale`` on a 1080p clip (LRSRN x2 -> 4K, ``--tile``) in a child process and reports its
peak resident memory (``ru_maxrss``), with and without tiling.

Output: a Markdown table (printed) and, with ``--out DIR``, ``bench_video.md`` and ``bench_video.json``.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / 'tools'):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_onnx import MODELS, cpu_name, load_network, parse_size  # noqa: E402
from rtsr_arch.backends import make_upscaler  # noqa: E402
from rtsr_arch.loader import save_model  # noqa: E402
from rtsr_arch.utils.checkpoint import atomic_write  # noqa: E402
from rtsr_arch.video import EncodeSettings, pan_zoom_clip, upscale_video  # noqa: E402

STAGES = ('decode', 'inference', 'encode')
H264 = dict(codec='libx264', pix_fmt='yuv420p', rate=Fraction(30000, 1001),
            options={'crf': '18', 'preset': 'ultrafast'})


def available_backends(device):
    """The backends to time on ``device``: torch; onnxruntime when installed (on CUDA: with its
    CUDA provider); tensorrt on CUDA when importable."""
    names = ['torch']
    try:
        import onnxruntime
        if device.type == 'cpu' or 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
            names.append('onnxruntime')
    except ImportError:
        pass
    try:
        import tensorrt  # noqa: F401
        if device.type == 'cuda':
            names.append('tensorrt')
    except ImportError:
        pass
    return names


def bench_row(net, source, workdir, arch, backend, device, batch, preset, dtype):
    """Upscale ``source`` with ``net`` on ``backend``; a result row (dict)."""
    upscale, used = make_upscaler(net, backend, device, dtype)
    providers = getattr(upscale.args[0], 'providers', None)  # onnxruntime's execution providers
    upscale(np.zeros((batch, 64, 64, 3), np.uint8))  # warm-up (allocations, ORT/TRT first run)
    output = Path(workdir) / f'{arch}_{backend}.mp4'
    report = upscale_video(source, output, upscale, EncodeSettings('libx264', preset=preset), batch=batch)
    rates = report.stage_rates()
    if providers:
        used += f" ({providers[0].replace('ExecutionProvider', '')})"
    return {'network': arch, 'backend': used, 'device': str(device), 'dtype': str(dtype).replace('torch.', ''),
            'frames': report.frames, 'seconds': round(report.seconds, 3),
            'fps': round(report.frames / report.seconds, 3),
            **{f'{k}_fps': round(rates[k], 2) for k in STAGES}}


def peak_rss(model, clip, out_dir, tile, batch, threads):
    """Peak RSS (MiB) of ``rtsr-upscale`` on ``clip`` in a child process (torch backend, libx264)."""
    code = ('import sys, resource; from rtsr_arch.commands.upscale import main; rc = main(sys.argv[1:]); '
            'print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)')
    argv = [sys.executable, '-c', code, str(model), str(clip), '--out', str(out_dir), '--backend', 'torch',
            '--overwrite', '--quiet', '--preset', 'ultrafast', '--batch', str(batch)]
    argv += ['--tile', str(tile)] if tile else []
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'PYTHONPATH': str(ROOT)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f'rtsr-upscale failed: {done.stderr.strip().splitlines()[-1:]}')
    return int(done.stdout.strip().splitlines()[-1]) / 1024  # Linux: KiB


def markdown(rows, memory, meta):
    lines = [f"{meta['device_name']}, {meta['threads']} thread(s), torch {meta['torch']}"
             f"{' (QUICK: smoke-test sizes)' if meta['quick'] else ''}; `{meta['command']}`"]
    if rows:
        lines += ['', f"Video throughput, {meta['input']} -> {meta['output']} (x2), {meta['frames']} frames, batch "
                      f"{meta['batch']}, libx264 preset {meta['preset']}:", '',
                  '| network | backend | device | frames/s end to end | decode frames/s | inference frames/s '
                  '| encode frames/s |', '|---|---|---|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['network']} x2 | {r['backend']} | {r['device']} | {r['fps']:.2f} | {r['decode_fps']:.1f} "
                     f"| {r['inference_fps']:.2f} | {r['encode_fps']:.1f} |")
    if memory:
        lines += ['', f"Peak RSS, rtsr-upscale LRSRN x2 on {memory['input']} -> {memory['output']} "
                      f"({memory['frames']} frames, CPU, torch backend):", '', '| run | peak RSS (MiB) |',
                  '|---|---:|']
        lines += [f"| {k} | {v:.0f} |" for k, v in memory['rss_mib'].items()]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny clip (4 frames of 64x96): a smoke test')
    parser.add_argument('--size', type=parse_size, default=None, metavar='HxW', help='input size (default 540x960)')
    parser.add_argument('--frames', type=int, default=None, help='frames in the clip (default 30)')
    parser.add_argument('--models', nargs='*', default=list(MODELS), choices=list(MODELS),
                        help='networks to time (none: only --memory)')
    parser.add_argument('--backends', nargs='+', default=None, choices=['torch', 'onnxruntime', 'tensorrt'],
                        help='default: every backend available on the device')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--preset', default='veryfast', help='libx264 preset of the output (default veryfast)')
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='torch/onnxruntime threads')
    parser.add_argument('--memory', action='store_true', help='also measure peak RSS of LRSRN x2 1080p -> 4K')
    parser.add_argument('--memory-tile', type=int, default=256, help='--tile of the memory run (default 256)')
    parser.add_argument('--memory-frames', type=int, default=12,
                        help='frames of the 1080p memory clip (default 12: the queues fill)')
    parser.add_argument('--no-official', action='store_true', help='initial weights even when the fixture exists')
    parser.add_argument('--out', metavar='DIR', help='write bench_video.md and bench_video.json here')
    args = parser.parse_args(argv)
    height, width = args.size or ((64, 96) if args.quick else (540, 960))
    frames = args.frames or (4 if args.quick else 30)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available on this machine')
    device = torch.device('cuda' if args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available())
                          else 'cpu')
    torch.set_num_threads(args.threads)
    backends = args.backends or available_backends(device)
    dtype = torch.float16 if device.type == 'cuda' else torch.float32  # rtsr-upscale's --precision auto

    rows, memory = [], None
    with tempfile.TemporaryDirectory(prefix='bench-video-') as tmp:
        clip = Path(tmp) / 'clip.mp4'
        pan_zoom_clip(clip, frames, (height, width), **H264)
        for arch in args.models:
            net, _ = load_network(arch, use_official=not args.no_official)
            net = net.to(device)
            for backend in backends:
                row = bench_row(net, clip, tmp, arch, backend, device, args.batch, args.preset,
                                dtype if net.fp16_safe else torch.float32)
                rows.append(row)
                print(f"{arch} {row['backend']} {row['device']}: {row['frames']} frames, {row['fps']:.2f} frames/s; "
                      + ', '.join(f'{k} {row[k + "_fps"]:.2f}' for k in STAGES), flush=True)
        if args.memory:
            mh, mw = (64, 96) if args.quick else (1080, 1920)
            mframes = 2 if args.quick else args.memory_frames
            big = Path(tmp) / 'clip_1080p.mp4'
            pan_zoom_clip(big, mframes, (mh, mw), **H264)
            model = Path(tmp) / 'lrsrn_x2.pth'
            save_model(load_network('LRSRN', use_official=False)[0], model)
            small = Path(tmp) / 'clip_small.mp4'
            pan_zoom_clip(small, 2, (64, 96), **H264)
            rss = {'baseline (imports; a 2-frame 96x64 clip)': peak_rss(model, small, Path(tmp) / 'rss', None, 1,
                                                                         args.threads)}
            for tile, batch in ((None, args.batch), (args.memory_tile, args.batch), (args.memory_tile, 1)):
                key = f"{f'--tile {tile}' if tile else 'untiled'}, --batch {batch}"
                rss[key] = peak_rss(model, big, Path(tmp) / 'rss', tile, batch, args.threads)
                print(f'peak RSS LRSRN x2 {mh}x{mw} -> {2 * mh}x{2 * mw}, {key}: {rss[key]:.0f} MiB', flush=True)
            memory = {'input': f'{mw}x{mh}', 'output': f'{2 * mw}x{2 * mh}', 'frames': mframes, 'rss_mib': rss}
    meta = {'input': f'{width}x{height}', 'output': f'{2 * width}x{2 * height}', 'frames': frames,
            'batch': args.batch, 'preset': args.preset, 'threads': args.threads, 'quick': args.quick,
            'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_name(),
            'torch': torch.__version__, 'python': platform.python_version(),
            'command': 'python tools/bench_video.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
            'date': time.strftime('%Y-%m-%d %H:%M:%S')}
    text = markdown(rows, memory, meta)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / 'bench_video.md', lambda f: f.write(text.encode()))
        payload = json.dumps({'meta': meta, 'rows': rows, 'memory': memory}, indent=2)
        atomic_write(out / 'bench_video.json', lambda f: f.write(payload.encode()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
