"""``rtsr-export``: a checkpoint's deploy form as one ONNX file, checked against PyTorch.

    rtsr-export MODEL --out X.onnx [--opset 18] [--fp16] [--check-image PNG] [--overwrite]
                      [--opt X.yml] [--set KEY=VALUE ...] [--arch NAME] [--param-key KEY]
                      [--exporter auto|legacy|dynamo] [--rtol R] [--atol A] [--device cpu|cuda]

MODEL is anything :func:`rtsr_arch.loader.load_model` accepts: this package's ``.pth`` /
``.safetensors``, a BasicSR checkpoint with its ``.yml`` beside it (or ``--opt`` naming the YAML
whose ``network_g`` builds it), or an official third-party checkpoint (auto-detected; ``--set``
overrides what the weights do not say, e.g. ``--set act_type=gelu`` for CASR's LRSRN teacher).
The file is written only when onnxruntime reproduces PyTorch on a real photograph at two sizes
(see :func:`rtsr_arch.export.export_onnx`); the command prints the opset, the input and output
dims and the largest difference. It never writes over MODEL (or its other inputs) and writes over
an existing file only with ``--overwrite``. Errors are one line, exit status 2.
"""
import sys

from ..export import DEFAULT_OPSET, EXPORTERS, OPSETS, export_onnx, load_check_image, require_onnx
from ..loader import load_model, resolve_checkpoint
from .common import Parser, add_model_arguments, check_outputs, model_arguments, run_command, torch_device

PROG = 'rtsr-export'

__all__ = ['main', 'build_parser', 'PROG']


def build_parser():
    parser = Parser(prog=PROG, description="Export a checkpoint's deploy form to one ONNX file (dynamic batch, "
                                           'height and width), checked against PyTorch with onnxruntime.')
    parser.add_argument('model', metavar='MODEL', help='checkpoint: .pth/.safetensors of this package, a BasicSR '
                                                       'checkpoint (with its .yml or --opt), or an official one')
    parser.add_argument('-o', '--out', required=True, help='the .onnx file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, choices=list(OPSETS), metavar='N',
                        help=f'ONNX opset ({OPSETS.start}-{OPSETS.stop - 1}, default {DEFAULT_OPSET})')
    parser.add_argument('--fp16', action='store_true', help='half weights and half input/output (fp16_safe networks)')
    parser.add_argument('--check-image', metavar='IMAGE',
                        help="photograph for the check (default: a 94x130 crop of scikit-image's astronaut)")
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out file')
    add_model_arguments(parser)
    parser.add_argument('--exporter', default='auto', choices=EXPORTERS,
                        help='auto (TorchScript exporter when available), legacy or dynamo (torch.export)')
    parser.add_argument('--rtol', type=float, help='check tolerance relative to the output peak '
                                                   '(default 1e-4, fp16 2e-2)')
    parser.add_argument('--atol', type=float, default=0.0, help='absolute check tolerance added to --rtol (0)')
    parser.add_argument('--device', default='cpu', help='device of the PyTorch network for export and check (cpu)')
    return parser


def _body(argv):
    args = build_parser().parse_args(argv)
    check_outputs([args.out], {'MODEL': args.model, '--opt': args.opt, '--check-image': args.check_image},
                  args.overwrite)
    require_onnx()  # onnx and onnxruntime, before loading anything
    check_image = None if args.check_image is None else load_check_image(args.check_image)  # fail early
    device = torch_device(args.device)
    model_kwargs = model_arguments(args)
    resolved = resolve_checkpoint(args.model, **model_kwargs)
    net = load_model(args.model, deploy=True, device=device, **model_kwargs)
    print(f"{PROG}: {net.network_opt['type']} x{net.upscale} from {args.model} ({resolved.how})")
    for note in resolved.notes:
        print(f'  note: {note}')
    report = export_onnx(net, args.out, opset=args.opset, fp16=args.fp16, check_image=check_image, atol=args.atol,
                         rtol=args.rtol, exporter=args.exporter)
    print(report.summary())
    print(f'max |onnxruntime - PyTorch| = {report.max_abs_diff:.3g}')
    return 0


def main(argv=None):
    return run_command(PROG, _body, argv)


if __name__ == '__main__':
    sys.exit(main())
