"""``rtsr-convert``: an official third-party checkpoint -> a checkpoint of this package.

    rtsr-convert --input rt4ksr_x2.pth --out rt4ksr_x2_basicsr.pth                 # importer auto-detected
    rtsr-convert --input model_x4_deploy.pt --out lrsrn_x4.safetensors --set act_type=gelu
    rtsr-convert --arch RT4KSR --input rt4ksr_x2.pth --out rt4ksr_x2.pth --overwrite

``--arch auto`` (default) picks the unique importer of :mod:`rtsr_arch.archs.official` whose
detection matches the weights and says which; ``--arch NAME`` forces one. The importer infers the
network options from the weights (``--set key=value`` overrides them; values are YAML), the
network is built and loaded strictly, and OUT (``.pth``: ``{'params', 'network_g'}``, BasicSR's
layout plus the options; or ``.safetensors``: the options in its metadata) is written with OUT.yml
beside it (``network_g`` and ``path`` to paste into a BasicSR option file). The input is never
written over, existing outputs only with ``--overwrite``; any error is one line on stderr, exit
status 2, and nothing is written.
"""
import sys
from pathlib import Path

from rtsr_arch.archs.official import get_importer
from rtsr_arch.commands.common import (Parser, check_outputs, checkpoint_paths, run_command,
                                       write_checkpoint_and_yml)
from rtsr_arch.loader import import_official, read_checkpoint
from rtsr_arch.utils.options import parse_overrides

__all__ = ['main', 'convert_official', 'basicsr_options']

DESCRIPTION = 'An official third-party checkpoint -> a checkpoint of this package.'
PROG = 'rtsr-convert'


def basicsr_options(network_opt, checkpoint, param_key='params'):
    """The ``network_g`` and ``path`` sections that load ``checkpoint`` in a BasicSR option file."""
    return {'network_g': dict(network_opt),
            'path': {'pretrain_network_g': str(Path(checkpoint).absolute()), 'param_key_g': param_key,
                     'strict_load_g': True}}


def convert_official(source, arch='auto', overrides=None):
    """Read and import the official checkpoint at ``source``: ``(model, OfficialImport, arch)``."""
    if arch != 'auto':
        get_importer(arch)  # an unknown name fails before the file is read
    checkpoint, _ = read_checkpoint(source)
    return import_official(checkpoint, arch, overrides, str(source))


def body(argv):
    parser = Parser(prog=PROG, description=DESCRIPTION)
    parser.add_argument('--arch', default='auto',
                        help="importer to use (e.g. RT4KSR, LRSRN); default 'auto': the one whose detection matches")
    parser.add_argument('--input', required=True, help='official checkpoint file')
    parser.add_argument('--out', required=True,
                        help='checkpoint to write: .pth (BasicSR layout + options) or .safetensors; OUT.yml is '
                             'written beside it')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override an inferred network option (value parsed as YAML); repeatable')
    parser.add_argument('--overwrite', action='store_true', help='replace existing output files')
    args = parser.parse_args(argv)

    out, yml = checkpoint_paths(args.out)
    check_outputs((out, yml), {'--input': args.input}, args.overwrite)
    overrides = parse_overrides(args.set)
    model, result, arch = convert_official(args.input, args.arch, overrides)

    write_checkpoint_and_yml(out, yml, model.state_dict(), result.network_opt,
                             basicsr_options(result.network_opt, out))
    if args.arch == 'auto':
        print(f'detected: {arch}')
    for note in result.notes:
        print(f'note: {note}')
    print('network_g: ' + ', '.join(f'{k}: {v}' for k, v in result.network_opt.items()))
    print(f'parameters: {sum(p.numel() for p in model.parameters()):,}')
    print(f'wrote {out} and {yml}')
    return 0


def main(argv=None):
    """Entry point of ``rtsr-convert`` and ``tools/convert_official.py``."""
    return run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
