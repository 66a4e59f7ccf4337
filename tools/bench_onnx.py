#!/usr/bin/env python
r"""onnxruntime (CPU) vs PyTorch (CPU) latency of the same deploy network on the same input.

    python tools/bench_onnx.py                                  # LRSRN x2 and RT4KSR x2, 256x256 and 540x960
    python tools/bench_onnx.py --sizes 540x960 --threads 1 all --reps 20 --json bench.json

Each network (paper default configuration, deploy form: LRSRN x2 C32 m4 'plain' = the NTIRE 2023
x2 submission's shape; RT4KSR x2 size S = C24 B4, with the official ``rt4ksr_x2.pth`` weights when
the fixtures folder is present, else its initial weights: latency does not depend on the values)
is exported with :func:`rtsr_arch.export.export_onnx` (so the graph timed is one that matched
PyTorch) and both runtimes are timed in ONE process with paired, alternating runs: each repetition
times PyTorch and onnxruntime back to back, in alternating order, with the same intra-op thread
count (``torch.set_num_threads(n)``, ``intra_op_num_threads=n``); load drifts on a shared machine
then hit both sides of a pair alike. Reported per row: median ms of each and the median over pairs
of ``torch_ms / ort_ms`` (> 1: onnxruntime is faster) with its interquartile range.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rtsr_arch.archs.rep import reparameterize  # noqa: E402
from rtsr_arch.export import export_onnx  # noqa: E402
from rtsr_arch.loader import load_model  # noqa: E402
from rtsr_arch.utils.options import build_network  # noqa: E402

MODELS = {
    'LRSRN': {'type': 'LRSRN', 'upscale': 2},  # C32, m4, plain, relu: the paper's x2 network
    'RT4KSR': {'type': 'RT4KSR', 'upscale': 2},  # size S: C24, B4, gelu
}
OFFICIAL = {'RT4KSR': 'rt4ksr_x2.pth'}
DEFAULT_FIXTURES = ROOT.parent / 'shared/fixtures/official'  # beside the checkout, as the tests


def fixtures_dir():
    return Path(os.environ.get('RTSR_OFFICIAL_FIXTURES') or DEFAULT_FIXTURES)


def load_network(name, use_official=True):
    """``(net, source)``: the deploy form of the paper default x2 network ``name``."""
    official = fixtures_dir() / OFFICIAL.get(name, '-')
    if use_official and official.is_file():
        return load_model(official), f'official {official.name}'
    torch.manual_seed(0)
    return reparameterize(build_network(MODELS[name])).eval(), 'initial weights'


def parse_size(text):
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}': expected HxW, e.g. 540x960") from None
    return h, w


def parse_threads(text):
    if text == 'all':
        return os.cpu_count() or 1
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads '{text}': expected a positive int or 'all'") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"threads '{text}': expected a positive int or 'all'")
    return n


def _session(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=['CPUExecutionProvider'])


def time_pair(net, session, x, reps, warmup):
    """Paired, alternating timings (ms) of PyTorch and onnxruntime on ``x``."""
    x_np = x.numpy()
    name = session.get_inputs()[0].name

    def run_torch():
        with torch.inference_mode():
            net(x)

    def run_ort():
        session.run(None, {name: x_np})

    for _ in range(warmup):
        run_torch()
        run_ort()
    t_ms, o_ms = [], []
    for i in range(reps):
        order = ((run_torch, t_ms), (run_ort, o_ms)) if i % 2 == 0 else ((run_ort, o_ms), (run_torch, t_ms))
        for fn, out in order:
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return t_ms, o_ms


def _quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def cpu_name():
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--sizes', nargs='+', type=parse_size, default=[(256, 256), (540, 960)], metavar='HxW')
    parser.add_argument('--threads', nargs='+', type=parse_threads, default=[1, os.cpu_count() or 1],
                        metavar='N|all', help="intra-op threads for both runtimes (default: 1 and all)")
    parser.add_argument('--reps', type=int, default=10, help='timed pairs per row (default 10)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--no-official', action='store_true', help='initial weights even when the fixture exists')
    parser.add_argument('--json', help='also write the rows as JSON')
    args = parser.parse_args(argv)
    threads = list(dict.fromkeys(args.threads))

    import onnxruntime as ort
    env = {'cpu': cpu_name(), 'cpu_count': os.cpu_count(), 'torch': torch.__version__, 'onnxruntime': ort.__version__,
           'loadavg': os.getloadavg()[0] if hasattr(os, 'getloadavg') else None}
    print(f"CPU: {env['cpu']} ({env['cpu_count']} logical cores, load {env['loadavg']:.2f}) | torch {env['torch']} | "
          f"onnxruntime {env['onnxruntime']} | float32, batch 1, {args.reps} paired reps")
    rows = []
    previous_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            net, source = load_network(name, not args.no_official)
            torch.set_num_threads(max(threads))
            report = export_onnx(net, Path(tmp) / f'{name}.onnx')
            print(f'{name} x{net.upscale} deploy ({source}): exported, opset {report.opset}, '
                  f'max |ort - torch| {report.max_abs_diff:.2g} on a photo')
            for n in threads:
                torch.set_num_threads(n)
                session = _session(report.path, n)
                for h, w in args.sizes:
                    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
                    t_ms, o_ms = time_pair(net, session, x, args.reps, args.warmup)
                    ratios = [t / o for t, o in zip(t_ms, o_ms)]
                    q1, q3 = _quartiles(ratios)
                    rows.append({'model': f'{name} x{net.upscale}', 'weights': source, 'input': f'{h}x{w}',
                                 'threads': n, 'torch_ms': statistics.median(t_ms), 'ort_ms': statistics.median(o_ms),
                                 'ratio': statistics.median(ratios), 'ratio_q1': q1, 'ratio_q3': q3,
                                 'torch_ms_all': t_ms, 'ort_ms_all': o_ms})
    torch.set_num_threads(previous_threads)

    header = '| model | input | threads | PyTorch ms | onnxruntime ms | torch_ms / ort_ms (IQR) |'
    print(header)
    print('|---|---|---:|---:|---:|---|')
    for r in rows:
        print(f"| {r['model']} | {r['input']} | {r['threads']} | {r['torch_ms']:.1f} | {r['ort_ms']:.1f} | "
              f"{r['ratio']:.2f} ({r['ratio_q1']:.2f}-{r['ratio_q3']:.2f}) |")
    if args.json:
        Path(args.json).write_text(json.dumps({'env': env, 'rows': rows}, indent=1))
    return rows


if __name__ == '__main__':
    main()
    sys.exit(0)
