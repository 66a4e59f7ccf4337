"""``rtsr-convert``: an official third-party checkpoint -> a checkpoint of this package.

    rtsr-convert --input rt4ksr_x2.pth --out rt4ksr_x2_basicsr.pth                 # importer auto-detected
    rtsr-convert --input model_x4_deploy.pt --out lrsrn_x4.safetensors --set act_type=gelu
    rtsr-convert --arch RT4KSR --input rt4ksr_x2.pth --out rt4ksr_x2.pth --overwrite

``--arch auto`` (default) picks the unique importer of :mod:`rtsr_arch.archs.official` whose
detection matches the weights and says which; ``--arch NAME`` forces one. The importer infers the
network options from the weights (``--set key=value`` overrides them; values are YAML), the
network is built and loaded strictly, and OUT (``.pth``: ``{'params', 'network_g'}``, BasicSR's
layout plus the options; or ``.safetensors``: the options in its metadata) is written with OUT.yml
beside it: a complete ``rtsr-test`` option file (see
:func:`~rtsr_arch.commands.common.rtsr_test_options`; ``--test-gt``/``--test-lq`` give its test
set). A network in training form (reparameterizable blocks not fused) is said so, in the output
and in OUT.yml's header, with the ``rtsr-reparam`` command that fuses it. The input is never
written over, existing outputs only with ``--overwrite``; any error is one line on stderr, exit
status 2, and nothing is written.
"""
import copy
import sys

from rtsr_arch.archs.official import get_importer
from rtsr_arch.archs.rep import reparameterize
from rtsr_arch.commands.common import (Parser, add_test_set_arguments, check_outputs, checkpoint_paths,
                                       rtsr_test_options, run_command, given_test_set, write_checkpoint_and_yml)
from rtsr_arch.loader import import_official, read_checkpoint
from rtsr_arch.utils.options import network_upscale, parse_overrides

__all__ = ['main', 'convert_official', 'in_training_form']

DESCRIPTION = 'An official third-party checkpoint -> a checkpoint of this package.'
PROG = 'rtsr-convert'


def in_training_form(model):
    """Whether reparameterizing ``model`` changes its weights (blocks left to fuse)."""
    return set(reparameterize(copy.deepcopy(model)).state_dict()) != set(model.state_dict())


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
    add_test_set_arguments(parser)
    args = parser.parse_args(argv)

    out, yml = checkpoint_paths(args.out)
    check_outputs((out, yml), {'--input': args.input}, args.overwrite)
    folders = given_test_set(args)
    overrides = parse_overrides(args.set)
    model, result, arch = convert_official(args.input, args.arch, overrides)

    options, header = rtsr_test_options(out.stem, result.network_opt, out, 'params',
                                        network_upscale(result.network_opt), folders)
    header = [f'{args.input} converted by {PROG}.', *header]
    training = in_training_form(model)
    fuse = f'rtsr-reparam --ckpt {out} writes the fused (deploy) checkpoint and its .yml.'
    if training:
        header.append(f'Training form (deploy: false): evaluated as is (same output, slower); {fuse}')
    write_checkpoint_and_yml(out, yml, model.state_dict(), result.network_opt, options, header=header)
    if args.arch == 'auto':
        print(f'detected: {arch}')
    for note in result.notes:
        print(f'note: {note}')
    print('network_g: ' + ', '.join(f'{k}: {v}' for k, v in result.network_opt.items()))
    print(f'parameters: {sum(p.numel() for p in model.parameters()):,}')
    print(f'wrote {out} and {yml}')
    if training:
        print(f'note: the network is in training form; {fuse}')
    return 0


def main(argv=None):
    """Entry point of ``rtsr-convert`` and ``tools/convert_official.py``."""
    return run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
