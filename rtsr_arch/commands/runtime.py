"""``rtsr-runtime``: latency of real-time 4K SR networks, the NTIRE 2023 RTSR way, with efficiency metrics.

    rtsr-runtime --arch LRSRN [--set upscale=3 ...]     # one registered architecture, default configuration
    rtsr-runtime -opt options/test/LRSRN/test_LRSRN_x2.yml
    rtsr-runtime --ckpt LRSRN_x2_deploy.pth             # any checkpoint load_model reads (options embedded,
                                                        # a .yml beside it, or official: --set act_type=gelu)
    rtsr-runtime --all [--exclude LRSRN ...]            # every architecture of rtsr_arch
    rtsr-runtime --arch LRSRN RT4KSR --keep-going       # several; a failing model or path is a row note

The official protocol (default on CUDA): output 3840x2160, input (1, 3, 2160/s, 3840/s)
(``--portrait``: the official script's (1, 3, 3840/s, 2160/s)), rounded to the network's
``input_multiple``, the deploy (reparameterized) network in eval mode under no_grad, ``.half()``
(``--precision``), cudnn.benchmark, 50 warm-up and 244 timed passes with CUDA events and a
synchronize after each; the mean is the official figure. Optional paths (``--channels-last``,
``--compile MODE``, ``--cuda-graph``, ``--tensorrt``, ``--batch N``) are each checked against the eager output and
reported in their own columns, never mixed into the official figure. On CPU (``--device cpu``, or
no CUDA) latency is wall-clock on a ``--cpu-crop`` input (also rounded to ``input_multiple``) and
labelled as such; the ``input`` column is the timed input's size. Efficiency metrics follow the
NTIRE 2023 ESR counters (ofsoundof/NTIRE2023_ESR), at 256x256 (rounded likewise) and at 4K.
Writes OUT/runtime_4k.{md,csv,json} and OUT/latency_vs_params.png, rewritten after every model (a
run killed by a time limit keeps the models measured so far); with ``--psnr FILE`` (a JSON or CSV
of model name -> PSNR) also the NTIRE 2023 RTSR score and latency_vs_psnr.png. ``--keep-going``
(for unattended runs): a model or optional path that fails (out of memory, an optimized output
that disagrees) is recorded in the row's ``error`` column and the run goes on.
"""
import copy
import csv
import io
import json
import platform
import sys
from pathlib import Path

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from matplotlib.figure import Figure
from tqdm import tqdm

import rtsr_arch
from rtsr_arch.archs.contract import SRArch
from rtsr_arch.backends import BackendError, require_tensorrt, tensorrt_engine
from rtsr_arch.commands.common import CommandError, Parser, error_line, run_command
from rtsr_arch.loader import load_model, resolve_checkpoint
from rtsr_arch.utils.checkpoint import atomic_write
from rtsr_arch.utils.efficiency import (count_ntire_esr, memory_traffic, ntire23_rtsr_score, summarize_traffic,
                                        traffic_bound_ms)
from rtsr_arch.utils.options import OptionsError, build_network, load_options, parse_overrides
from rtsr_arch.utils.timing import (check_same_output, cuda_copy_bandwidth_gbs, cuda_matmul_tflops, require_cuda,
                                    time_cpu, time_cuda)

__all__ = ['main', 'sr_architectures', 'model_specs', 'input_shape', 'measure', 'set_best_optional', 'write_reports']

DESCRIPTION = 'Latency of real-time 4K SR networks, the NTIRE 2023 RTSR way, with efficiency metrics.'
PROG = 'rtsr-runtime'
OUT_H, OUT_W = 2160, 3840
DTYPES = {'fp16': torch.float16, 'fp32': torch.float32, 'bf16': torch.bfloat16, 'autocast': torch.float32}


def sr_architectures():
    """Every registered architecture of this package (a subclass of ``SRArch``), by name."""
    return sorted(name for name in ARCH_REGISTRY.keys()
                  if isinstance(ARCH_REGISTRY.get(name), type) and issubclass(ARCH_REGISTRY.get(name), SRArch))


def _count(net):
    return sum(p.numel() for p in net.parameters())


def from_options(opt, source):
    """``(deploy network with random weights, training-form parameter count)`` of a ``network_g``."""
    if opt.get('deploy'):
        train_params = _count(build_network({**opt, 'deploy': False}, f'{source}: network_g'))
        return build_network(opt, f'{source}: network_g').eval(), train_params
    net = build_network(opt, f'{source}: network_g')
    train_params = _count(net)
    return rtsr_arch.reparameterize(net).eval(), train_params


def from_checkpoint(path, overrides):
    """``(deploy network, training-form parameter count)`` of a checkpoint, through ``load_model``."""
    if overrides:
        how = resolve_checkpoint(path, overrides=overrides).how
        if not how.startswith('official'):
            raise CommandError(f'{path}: --set with --ckpt overrides what an official checkpoint does not store; '
                               f'this checkpoint is read with the {how}')
    net = load_model(path, deploy=True, overrides=overrides)
    opt = getattr(net, 'network_opt', None)
    if opt is None or 'deploy' not in opt:
        return net, _count(net)
    return net, _count(build_network({**opt, 'deploy': False}, f'{path}: network_g'))


def model_specs(args):
    """``[(label, build)]`` for the models asked for; ``build()`` returns ``(deploy network,
    training-form parameter count)``."""
    overrides = parse_overrides(args.set)
    if args.exclude and not args.all:
        raise CommandError('--exclude applies to --all')
    if args.all or (args.arch and len(args.arch) > 1):
        if overrides:
            raise CommandError('--set applies to one model (--arch NAME, -opt or --ckpt), not to several')
        unknown = sorted(set(args.exclude) - set(sr_architectures()))
        if unknown:
            raise CommandError(f"--exclude: {', '.join(unknown)}: not registered rtsr_arch architectures")
        names = [n for n in sr_architectures() if n not in args.exclude] if args.all else args.arch
        return [(name, lambda name=name: from_options({'type': name}, name)) for name in names]
    if args.arch:
        opt = {'type': args.arch[0], **overrides}
        label = args.arch[0] + ''.join(f' {k}={v}' for k, v in overrides.items())
        return [(label, lambda: from_options(opt, args.arch[0]))]
    if args.opt:
        opt = load_options(args.opt).get('network_g')
        if not isinstance(opt, dict):
            raise OptionsError(f'{args.opt}: no network_g section')
        return [(Path(args.opt).stem, lambda: from_options({**opt, **overrides}, args.opt))]
    return [(Path(args.ckpt).stem, lambda: from_checkpoint(args.ckpt, overrides))]


def _fit(n, multiple, minimum=1):
    """``n`` rounded to the nearest multiple of ``multiple`` (at least one), then raised to ``minimum``."""
    value = multiple * max(1, round(n / multiple))
    while value < minimum:
        value += multiple
    return value


def input_shape(net, portrait, batch=1, crop=None):
    """The input of the 3840x2160 protocol for ``net`` (``crop``: a ``crop`` x ``crop`` input
    instead), each side rounded to ``net.input_multiple`` and at least ``net.min_input_size``."""
    multiple = int(getattr(net, 'input_multiple', 1) or 1)
    minimum = int(getattr(net, 'min_input_size', 1) or 1)
    channels = (getattr(net, 'network_opt', None) or {}).get('num_in_ch', 3)
    h, w = (crop, crop) if crop else (OUT_H / net.upscale, OUT_W / net.upscale)
    h, w = _fit(h, multiple, minimum), _fit(w, multiple, minimum)
    return (batch, channels, w, h) if portrait and not crop else (batch, channels, h, w)


def cast(net, x, precision, channels_last=False):
    dtype = DTYPES[precision]
    net = copy.deepcopy(net).to(x.device, dtype)
    x = x.to(dtype)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if precision == 'autocast':
        def fn(inp):
            with torch.autocast(x.device.type, dtype=torch.float16 if x.device.type == 'cuda' else torch.bfloat16):
                return net(inp)
        return fn, x
    return net, x


def cuda_graph(fn, x):
    """Capture one forward in a CUDA graph; returns a replaying callable (static input and output)."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            fn(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_y = fn(static_x)

    def replay(inp):
        static_x.copy_(inp)
        graph.replay()
        return static_y
    return replay


def measure(label, net, train_params, args, hw):
    scale = net.upscale
    row = {'model': label, 'scale': scale, 'params_deploy': sum(p.numel() for p in net.parameters()),
           'params_train': train_params}
    small = count_ntire_esr(net, input_shape(net, args.portrait, crop=256))
    full = count_ntire_esr(net, input_shape(net, args.portrait))
    row.update(flops_256_G=small.flops / 1e9, acts_256_M=small.activations / 1e6, num_conv=small.num_conv,
               flops_4k_G=full.flops / 1e9, acts_4k_M=full.activations / 1e6)
    cuda = args.device == 'cuda'
    shape = input_shape(net, args.portrait, crop=None if cuda else args.cpu_crop)
    row['input'] = f'{shape[2]}x{shape[3]}'
    ops = memory_traffic(net, shape, DTYPES[args.precision] if args.precision != 'autocast' else torch.float16)
    totals = summarize_traffic(ops)
    row.update(traffic_MB=totals['bytes'] / 1e6, traffic_GFLOP=totals['flops'] / 1e9)
    if hw.get('bandwidth_gbs'):
        row['bound_ms'] = traffic_bound_ms(ops, hw['bandwidth_gbs'], hw['peak_tflops'])

    device = torch.device(args.device)
    x = torch.rand(shape, device=device)
    timer = (lambda f, inp: time_cuda(f, inp, args.warmup, args.repeat)) if cuda else \
        (lambda f, inp: time_cpu(f, inp, args.cpu_warmup, args.cpu_repeat))
    fn, xin = cast(net, x, args.precision)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        eager_out = fn(xin)
    stats = timer(fn, xin)
    row.update(latency_ms=stats.mean_ms, median_ms=stats.median_ms, p90_ms=stats.p90_ms, std_ms=stats.std_ms,
               fps=stats.fps)
    if cuda:
        row['peak_mem_MiB'] = torch.cuda.max_memory_allocated() / 2 ** 20
    if row.get('bound_ms'):
        row['measured_over_bound'] = stats.mean_ms / row['bound_ms']

    rtol = 1e-2 if args.precision in ('fp16', 'bf16', 'autocast') else 1e-4

    def checked(name, make):  # the optimized callable ``make(x)`` builds, checked against eager
        f, xi = make(x)
        with torch.no_grad():
            check_same_output(eager_out, f(xi), name, rtol)
        return timer(f, xi).mean_ms

    def batched():
        xb = torch.rand(input_shape(net, args.portrait, args.batch, None if cuda else args.cpu_crop), device=device)
        return timer(*cast(net, xb, args.precision, channels_last=args.channels_last)).fps

    def compiled(inp):
        f, xi = cast(net, inp, args.precision, channels_last=args.channels_last)
        return torch.compile(f, mode=args.compile), xi

    def graphed(inp):
        f, xi = cast(net, inp, args.precision, channels_last=args.channels_last)
        return cuda_graph(f, xi), xi

    def engine(inp):  # float32 in and out, fp16 kernels where the network is fp16-safe
        n, _, h, w = inp.shape
        return tensorrt_engine(net, opt_shape=(n, h, w), max_shape=(max(n, args.batch), h, w)), inp.float()

    paths = [('channels_last_ms', args.channels_last,
              lambda: checked('channels_last', lambda inp: cast(net, inp, args.precision, channels_last=True))),
             ('compile_ms', args.compile, lambda: checked(f'torch.compile({args.compile})', compiled)),
             ('cuda_graph_ms', args.cuda_graph, lambda: checked('CUDA graph', graphed)),
             ('tensorrt_ms', args.tensorrt, lambda: checked('TensorRT', engine)),
             (f'batch{args.batch}_fps', args.batch > 1, batched)]
    for key, wanted, run in paths:
        if not wanted:
            continue
        try:
            row[key] = run()
        except (RuntimeError, BackendError) as exc:
            if not args.keep_going:
                raise
            _note_error(row, f'{key}: {error_line(exc)}')
    return set_best_optional(row)


OPTIONAL_MS = ('channels_last_ms', 'compile_ms', 'cuda_graph_ms', 'tensorrt_ms')  # latencies of the optional paths


def set_best_optional(row):
    """Set (or drop) ``best_optional_ms`` and ``best_over_bound``: the fastest optional path of
    ``row`` when it beats the eager latency. Returns ``row``."""
    row.pop('best_optional_ms', None), row.pop('best_over_bound', None)
    best = min([row[k] for k in OPTIONAL_MS if k in row], default=None)
    if 'latency_ms' in row and best is not None and best < row['latency_ms']:
        row['best_optional_ms'] = best
        if row.get('bound_ms'):
            row['best_over_bound'] = best / row['bound_ms']
    return row


def _note_error(row, text):
    row['error'] = '; '.join(filter(None, [row.get('error'), text]))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def environment(args, hw):
    env = {'device': torch.cuda.get_device_name() if args.device == 'cuda' else platform.processor() or 'cpu',
           'torch': torch.__version__, 'cudnn': torch.backends.cudnn.version() if args.device == 'cuda' else None,
           'precision': args.precision, 'input': 'portrait' if args.portrait else 'landscape', **hw}
    if args.device == 'cuda':
        env['protocol'] = f'NTIRE23 RTSR: CUDA events, {args.warmup} warm-up, {args.repeat} timed, cudnn.benchmark'
    else:
        env['protocol'] = (f'CPU wall-clock on {args.cpu_crop}x{args.cpu_crop} inputs, {args.cpu_repeat} passes '
                           f'({torch.get_num_threads()} threads) - NOT the official protocol')
    return env


def write_reports(rows, env, out, psnrs, psnr_interp, quiet=False):
    """Write OUT/runtime_4k.{md,csv,json} and the plots (each atomically); print the table unless ``quiet``."""
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for row in rows:
        if row['model'] in psnrs and 'latency_ms' in row:
            row['psnr'] = psnrs[row['model']]
            row['score'] = ntire23_rtsr_score(row['psnr'], row['latency_ms'], psnr_interp)
    columns += ['psnr', 'score'] if psnrs else []
    header = '; '.join(f'{k}: {v}' for k, v in env.items() if v is not None)

    def fmt(v):
        return f'{v:,.4g}' if isinstance(v, float) else (f'{v:,}' if isinstance(v, int) else str(v))

    md = [f'<!-- {header} -->', f'*{header}*', '', '| ' + ' | '.join(columns) + ' |',
          '|' + '---|' * len(columns)]
    md += ['| ' + ' | '.join(fmt(r.get(c, '')) for c in columns) + ' |' for r in rows]
    text = io.StringIO()
    text.write(f'# {header}\n')
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    _write_text(out / 'runtime_4k.md', '\n'.join(md) + '\n')
    _write_text(out / 'runtime_4k.csv', text.getvalue())
    _write_text(out / 'runtime_4k.json', json.dumps({'environment': env, 'results': rows}, indent=2))
    timed = [r for r in rows if 'latency_ms' in r]
    plot(timed, env, out / 'latency_vs_params.png', 'params_deploy', 'deploy parameters')
    if psnrs:
        plot([r for r in timed if 'psnr' in r], env, out / 'latency_vs_psnr.png', 'psnr', 'PSNR (dB)')
    if not quiet:
        print('\n'.join(md))
        print(f'\nwrote {out}/runtime_4k.md, .csv, .json and latency_vs_params.png')


def _write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))


def plot(rows, env, path, key, xlabel):
    fig = Figure(figsize=(7, 4.5))  # no pyplot: no global backend or figure state
    ax = fig.subplots()
    for r in rows:
        ax.scatter(r[key], r['latency_ms'])
        ax.annotate(f"{r['model']} x{r['scale']}", (r[key], r['latency_ms']), fontsize=8,
                    xytext=(4, 4), textcoords='offset points')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('latency (ms)')
    official = env['protocol'].startswith('NTIRE23')
    ax.set_title(f"{env['device']} | {env['precision']} | torch {env['torch']} | "
                 + ('NTIRE 2023 protocol' if official else 'CPU wall-clock, not the official protocol'), fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=120)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def read_psnrs(path):
    """{model name: PSNR} from a JSON mapping or a CSV with ``model`` and ``psnr`` columns."""
    path = Path(path)
    try:
        if path.suffix == '.json':
            return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
        with open(path, newline='') as f:
            return {row['model']: float(row['psnr']) for row in csv.DictReader(f)}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CommandError(f'{path}: expected a JSON mapping or a CSV with model,psnr columns '
                           f'({error_line(exc)})') from exc



def body(argv):
    parser = Parser(prog=PROG, description=DESCRIPTION)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--arch', nargs='+', metavar='NAME',
                      help='registered architecture(s) (default configuration; change one with --set)')
    what.add_argument('-opt', '--opt', help="a BasicSR YAML: its network_g (random weights)")
    what.add_argument('--ckpt', help='a checkpoint: options embedded (rtsr-convert, rtsr-reparam), a .yml beside it, '
                                     'or an official checkpoint (auto-detected)')
    what.add_argument('--all', action='store_true', help='every architecture of rtsr_arch at its default configuration')
    parser.add_argument('--exclude', nargs='+', default=[], metavar='NAME', help='with --all: leave these out')
    parser.add_argument('--keep-going', action='store_true',
                        help="record a failing model or optional path in the row's error column and go on")
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='network option (with --arch or -opt) or importer override (official --ckpt)')
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--precision', choices=list(DTYPES), default='fp16',
                        help='fp16 = model.half() as the official script (default); autocast = fp32 weights')
    parser.add_argument('--portrait', action='store_true', help="the official script's (H, W) order, e.g. 1920x1080")
    parser.add_argument('--warmup', type=int, default=50)
    parser.add_argument('--repeat', type=int, default=244)
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--compile', nargs='?', const='max-autotune', default=None, metavar='MODE')
    parser.add_argument('--cuda-graph', action='store_true')
    parser.add_argument('--tensorrt', action='store_true',
                        help='also time a TensorRT engine built from the ONNX export (pip install -e ".[tensorrt]")')
    parser.add_argument('--batch', type=int, default=1, help='also measure frames/s at this batch size')
    parser.add_argument('--cpu-crop', type=int, default=128, help='CPU fallback input size (default 128)')
    parser.add_argument('--cpu-warmup', type=int, default=2)
    parser.add_argument('--cpu-repeat', type=int, default=5)
    parser.add_argument('--psnr', help='JSON or CSV (model,psnr) of PSNRs for the latency-vs-PSNR plot')
    parser.add_argument('--psnr-interp', type=float, default=31.697655,
                        help="bicubic PSNR of the test set, for the NTIRE 2023 RTSR score "
                             "(default: the organisers' notebook)")
    parser.add_argument('--out', default='results/runtime_4k', help='output folder')
    args = parser.parse_args(argv)

    try:
        if args.device == 'cuda' or args.cuda_graph:
            require_cuda('--device cuda' if args.device == 'cuda' else '--cuda-graph')
        if args.tensorrt:
            require_tensorrt('cuda')
        if args.device == 'cpu' and args.precision == 'fp16':
            print('note: fp16 convolutions are not available on CPU; timing fp32 instead', flush=True)
            args.precision = 'fp32'
        specs = model_specs(args)
        psnrs = read_psnrs(args.psnr) if args.psnr else {}
        hw = {}
        if args.device == 'cuda':
            hw = {'bandwidth_gbs': round(cuda_copy_bandwidth_gbs(), 1), 'peak_tflops': round(cuda_matmul_tflops(), 1)}
        rows, env = [], environment(args, hw)
        for label, build in tqdm(specs, desc='models', unit='model', disable=len(specs) == 1):
            try:
                net, train_params = build()
                rows.append(measure(label, net, train_params, args, hw))
                del net
            except (RuntimeError, ValueError) as exc:
                if not args.keep_going:
                    raise
                rows.append({'model': label})
                _note_error(rows[-1], error_line(exc))
            tqdm.write(f"{label}: " + (f"{rows[-1]['latency_ms']:.3f} ms" if 'latency_ms' in rows[-1]
                                       else f"failed: {rows[-1]['error']}"))
            if len(specs) > 1:  # what is measured so far survives a time limit
                write_reports(rows, env, Path(args.out), psnrs, args.psnr_interp, quiet=True)
    except RuntimeError as exc:  # no CUDA, an optimized path that disagrees, out of memory: one line
        raise CommandError(error_line(exc)) from exc
    write_reports(rows, env, Path(args.out), psnrs, args.psnr_interp)
    return 0


def main(argv=None):
    """Entry point of ``rtsr-runtime`` and ``tools/runtime_4k.py``."""
    return run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
