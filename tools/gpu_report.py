#!/usr/bin/env python
r"""The Python steps of ``tools/gpu_report.sh``: environment, ONNX Runtime timing, the report.

    python tools/gpu_report.py env WORK                 # print the environment, write WORK/env.json
    python tools/gpu_report.py onnx WORK [--dry-run]    # LRSRN x2 and RT4KSR x2 under ONNX Runtime
    python tools/gpu_report.py report WORK OUTDIR       # OUTDIR/gpu_report.{md,json}, runtime_4k.csv,
                                                        # latency_vs_params.png

``onnx``: each network (``tools/bench_onnx.py``'s paper default x2 deploy forms) is exported by
:func:`rtsr_arch.export.export_onnx` (checked against PyTorch before it is written; fp16 graph on a
GPU for fp16-safe networks, as the official protocol's ``.half()``) and timed on the 4K protocol's
input (1, 3, 1080, 1920) with input and output bound on the device (IO binding: no host copies,
as CUDA events around ``model(x)``), 10 warm-up and 100 timed runs, under the CUDA execution
provider and the TensorRT one (fp16, engine cache in WORK) when onnxruntime has them; an absent
provider is a "skipped: not available" row, one that fails a "failed: reason" row.
``--dry-run``: CPU provider, float32, 32x48 input, 1 + 3 runs. Rows are written to WORK/onnx.json
after each one (a time limit keeps what was measured).

``report`` gathers WORK/stages.tsv (the shell script's stage log), env.json, the rtsr-runtime
stages (WORK/runtime*/runtime_4k.json: the first stage's rows first, later stages add rows and
columns), onnx.json and video/bench_video.{md,json}.
"""
import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / 'tools'):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
# torch and rtsr_arch are imported where needed: importing rtsr_arch takes seconds, and the env
# step and a report without runtime rows do without it

RUNTIME_STAGES = ('runtime', 'compile', 'runtime_all')  # WORK/<stage>/runtime_4k.json, merged in this order
GPU_PROVIDERS = ('CUDAExecutionProvider', 'TensorrtExecutionProvider')
ONNX_SHAPE, DRY_SHAPE = (1, 3, 1080, 1920), (1, 3, 32, 48)


def write_bytes(path, data):
    """Write a report file atomically (WORK's scratch files are written plainly)."""
    from rtsr_arch.utils.checkpoint import atomic_write
    atomic_write(path, lambda f: f.write(data))


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return 'not installed'


def _nvidia_smi():
    if not shutil.which('nvidia-smi'):
        return None
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total,power.limit',
                              '--format=csv,noheader'], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment():
    """Versions and devices, by name."""
    import torch
    env = {'python': platform.python_version(), 'platform': platform.platform(), 'cpu_count': os.cpu_count(),
           'torch': torch.__version__,
           'cuda_available': torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_GiB=round(props.total_memory / 2 ** 30, 1),
                   compute_capability=f'{props.major}.{props.minor}', gpu_count=torch.cuda.device_count(),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    env['nvidia_smi'] = _nvidia_smi() or 'not available'
    for dist in ('triton', 'onnxruntime', 'onnxruntime-gpu', 'onnx', 'tensorrt', 'torchvision', 'numpy',
                 'opencv-python', 'opencv-python-headless', 'av', 'basicsr', 'rtsr_arch'):
        env[dist] = _version(dist)
    try:
        import onnxruntime
        env['onnxruntime_providers'] = onnxruntime.get_available_providers()
    except ImportError:
        env['onnxruntime_providers'] = []
    return env


def cmd_env(args):
    env = environment()
    for key, value in env.items():
        print(f'{key}: {value}')
    (args.work / 'env.json').write_text(json.dumps(env, indent=2))


# ------------------------------------------------------------------------------------ onnx

def time_session(session, x, device, warmup, repeat):
    """Per-run milliseconds of ``session`` on ``x`` with input and output bound on ``device``."""
    import onnxruntime as ort
    binding = session.io_binding()
    where = 'cuda' if device == 'cuda' else 'cpu'
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x, where, 0))
    binding.bind_output(session.get_outputs()[0].name, where, 0)
    samples = []
    for i in range(warmup + repeat):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _provider_options(provider, cache):
    if provider == 'TensorrtExecutionProvider':
        cache.mkdir(parents=True, exist_ok=True)
        return {'trt_fp16_enable': True, 'trt_engine_cache_enable': True, 'trt_engine_cache_path': str(cache)}
    return {}


def onnx_rows(args):
    """Yield one result row per (network, provider), skipped rows included."""
    import onnxruntime as ort
    import torch
    from bench_onnx import load_network
    from rtsr_arch.export import export_onnx

    available = ort.get_available_providers()
    if args.dry_run:
        providers, shape, warmup, repeat = ['CPUExecutionProvider'], DRY_SHAPE, 1, 3
    else:
        providers, shape, warmup, repeat = [p for p in GPU_PROVIDERS if p in available], ONNX_SHAPE, 10, 100
    skipped = [p for p in GPU_PROVIDERS if p not in providers]
    for name in ('LRSRN', 'RT4KSR'):
        net, source = load_network(name)
        fp16 = bool(getattr(net, 'fp16_safe', False)) and not args.dry_run
        label = f'{name} x{net.upscale}'
        for provider in skipped:
            reason = '--dry-run' if args.dry_run and provider in available else \
                f"not available (onnxruntime {ort.__version__} providers: {', '.join(available)})"
            yield {'model': label, 'provider': provider, 'status': f'skipped: {reason}'}
        if not providers:
            continue
        path = args.work / f'{name}_x{net.upscale}.onnx'
        report = export_onnx(net, path, fp16=fp16)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).numpy()
        x = x.astype('float16') if fp16 else x
        for provider in providers:
            row = {'model': label, 'weights': source, 'provider': provider, 'precision': report.precision,
                   'input': f'{shape[2]}x{shape[3]}', 'onnx_max_abs_diff': report.max_abs_diff}
            try:
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                session = ort.InferenceSession(str(path), sess_options=options, providers=[
                    (provider, _provider_options(provider, args.work / 'trt_cache')), 'CPUExecutionProvider'])
                if session.get_providers()[0] != provider:
                    raise RuntimeError(f'{provider} could not be loaded (session uses {session.get_providers()})')
                samples = time_session(session, x, 'cpu' if provider == 'CPUExecutionProvider' else 'cuda',
                                       warmup, repeat)
            except Exception as exc:  # noqa: BLE001 - a provider that fails is reported, the others still run
                message = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                row['status'] = f'failed: {message.strip()[:300]}'
                yield row
                continue
            mean = statistics.fmean(samples)
            row.update(status='ok', mean_ms=mean, median_ms=statistics.median(samples), fps=1000 / mean,
                       runs=len(samples))
            yield row


def cmd_onnx(args):
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as exc:
        rows = [{'model': '-', 'provider': '-', 'status': f'skipped: {exc}'}]
        (args.work / 'onnx.json').write_text(json.dumps(rows, indent=2))
        print(rows[0]['status'])
        return
    rows = []
    for row in onnx_rows(args):
        rows.append(row)
        (args.work / 'onnx.json').write_text(json.dumps(rows, indent=2))
        timing = f"{row['mean_ms']:.3f} ms ({row['precision']}, {row['input']})" if row['status'] == 'ok' \
            else row['status']
        print(f"{row['model']} | {row['provider']}: {timing}", flush=True)


# ------------------------------------------------------------------------------------ report

def read_stages(work):
    """``[{stage, status, seconds, cap, note}]`` from WORK/stages.tsv (tab-separated)."""
    stages = []
    path = work / 'stages.tsv'
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, seconds, cap, note = (line.split('\t') + [''] * 5)[:5]
        stages.append({'stage': name, 'status': status, 'seconds': int(seconds or 0), 'cap': int(cap or 0),
                       'note': note})
    return stages


def merge_runtime(work):
    """(rows, environment) of the rtsr-runtime stages: rows by model, first stage first; a later
    stage adds models and fills columns the earlier ones lack (compile_ms); the best optional path
    is then chosen again over the merged columns."""
    paths = [work / stage / 'runtime_4k.json' for stage in RUNTIME_STAGES]
    paths = [path for path in paths if path.is_file()]
    if not paths:
        return [], None
    from rtsr_arch.commands.runtime import set_best_optional
    rows, env = {}, None
    for path in paths:
        report = json.loads(path.read_text())
        env = env or report['environment']
        for row in report['results']:
            merged = rows.setdefault(row['model'], {})
            for key, value in row.items():
                merged.setdefault(key, value)
    return [set_best_optional(row) for row in rows.values()], env


def _table(rows, columns):
    def fmt(v):
        return f'{v:,.4g}' if isinstance(v, float) else (f'{v:,}' if isinstance(v, int) else str(v))
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    return lines + ['| ' + ' | '.join(fmt(r.get(c, '')) for c in columns) + ' |' for r in rows]


def ort_version(env):
    return next((env[k] for k in ('onnxruntime-gpu', 'onnxruntime') if env.get(k, 'not installed') != 'not installed'),
                '-')


def cmd_report(args):
    work, out = args.work, args.outdir
    out.mkdir(parents=True, exist_ok=True)
    stages = read_stages(work)
    env = json.loads((work / 'env.json').read_text()) if (work / 'env.json').is_file() else {}
    rows, runtime_env = merge_runtime(work)
    onnx = json.loads((work / 'onnx.json').read_text()) if (work / 'onnx.json').is_file() else []
    video_md = work / 'video' / 'bench_video.md'
    video_json = work / 'video' / 'bench_video.json'

    md = ['# GPU report', '', f"*{env.get('gpu', 'no CUDA GPU')} | driver: {env.get('nvidia_smi', '?')} | "
          f"torch {env.get('torch', '?')} | CUDA {env.get('cuda', '-')} | cuDNN {env.get('cudnn', '-')} | "
          f"Triton {env.get('triton', '-')} | onnxruntime {ort_version(env)}*", '',
          '## Stages', '']
    for s in stages:
        took = '' if s['status'] == 'skipped' else f" ({s['seconds']} s of {s['cap']} s)"
        md.append(f"- {s['stage']}: {s['status']}{took}" + (f": {s['note']}" if s['note'] else ''))
    md += ['', '## Environment', ''] + [f'- {k}: {v}' for k, v in env.items()]
    md += ['', '## Latency at 4K output: rtsr-runtime', '']
    if rows:
        from rtsr_arch.commands.runtime import write_reports
        with tempfile.TemporaryDirectory() as tmp:  # the runtime tool's own writer: csv and plot
            write_reports(rows, runtime_env, Path(tmp), {}, 0.0, quiet=True)
            md += (Path(tmp) / 'runtime_4k.md').read_text().splitlines()
            for name in ('runtime_4k.csv', 'latency_vs_params.png'):
                write_bytes(out / name, (Path(tmp) / name).read_bytes())
    else:
        md.append('no rows (see Stages)')
    md += ['', '## ONNX Runtime: LRSRN x2 and RT4KSR x2', '']
    md += _table(onnx, ['model', 'provider', 'precision', 'input', 'mean_ms', 'median_ms', 'fps', 'status']) \
        if onnx else ['no rows (see Stages)']
    md += ['', '## Video throughput: tools/bench_video.py', '']
    md += video_md.read_text().splitlines() if video_md.is_file() else ['no rows (see Stages)']
    write_bytes(out / 'gpu_report.md', ('\n'.join(md) + '\n').encode())
    report = {'stages': stages, 'environment': env, 'runtime': {'environment': runtime_env, 'results': rows},
              'onnx': onnx, 'video': json.loads(video_json.read_text()) if video_json.is_file() else None}
    write_bytes(out / 'gpu_report.json', json.dumps(report, indent=2).encode())
    print('\n'.join(md))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    env = sub.add_parser('env')
    env.add_argument('work', type=Path)
    onnx = sub.add_parser('onnx')
    onnx.add_argument('work', type=Path)
    onnx.add_argument('--dry-run', action='store_true')
    report = sub.add_parser('report')
    report.add_argument('work', type=Path)
    report.add_argument('outdir', type=Path)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    {'env': cmd_env, 'onnx': cmd_onnx, 'report': cmd_report}[args.command](args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
