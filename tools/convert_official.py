#!/usr/bin/env python
"""Convert an official third-party checkpoint into a BasicSR checkpoint of this package.

    python tools/convert_official.py --arch RT4KSR --input rt4ksr_x2.pth --out rt4ksr_x2_basicsr.pth
    python tools/convert_official.py --arch LRSRN --input model_x4_deploy.pt --out lrsrn_x4.pth \\
        --set act_type=gelu

The importer registered for ``--arch`` (``rtsr_arch.archs.official.OFFICIAL_IMPORTERS``) infers
the network options from the weights (``--set key=value`` overrides them; values are YAML), the
network is built and loaded strictly, and OUT.pth (``{'params': state_dict}``) and OUT.yml (the
``network_g`` and ``path`` sections to paste into a BasicSR option file) are written. Any error is
one line on stderr, exit status 2, and nothing is written.
"""
import argparse
import sys

PROG = 'convert_official'


def _fail(message):
    print(f"{PROG}: error: {' '.join(str(message).splitlines())}", file=sys.stderr)
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage + error is two lines; keep one
        _fail(message)


def main(argv=None):
    parser = _Parser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', required=True, help='architecture of the official checkpoint (e.g. RT4KSR, LRSRN)')
    parser.add_argument('--input', required=True, help='official checkpoint file')
    parser.add_argument('--out', required=True, help='BasicSR checkpoint to write (OUT.yml is written beside it)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override an inferred network option (value parsed as YAML); repeatable')
    args = parser.parse_args(argv)

    import rtsr_arch  # noqa: F401  (registers the architectures and their importers)
    from rtsr_arch.archs.official import get_official_importer, import_official, parse_overrides, save_basicsr_export
    from rtsr_arch.utils.checkpoint import load_checkpoint

    try:
        overrides = parse_overrides(args.set)
        get_official_importer(args.arch)  # an unknown arch fails before the file is read
        model, result = import_official(args.arch, load_checkpoint(args.input), overrides, args.input)
    except ValueError as exc:  # OfficialImportError, CheckpointError, OptionsError: one-line messages
        _fail(exc)

    try:
        yml = save_basicsr_export(model, result.network_opt, args.out)
    except ValueError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(f'{args.out}: cannot be written ({exc.strerror or exc})')

    for note in result.notes:
        print(f'note: {note}')
    print('network_g: ' + ', '.join(f'{k}: {v}' for k, v in result.network_opt.items()))
    print(f'parameters: {sum(p.numel() for p in model.parameters()):,}')
    print(f'wrote {args.out} and {yml}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
