"""What every command shares: a one-line-error argument parser and one error printer.

A command is ``main(argv=None) -> int``, written as ``return run_command(PROG, body, argv)`` where
``body(argv)`` parses its arguments with :class:`Parser` and returns the exit status. A
``ValueError`` (the package's one-line errors: ``CheckpointError``, ``OptionsError``,
``OfficialImportError``, ...) or ``OSError`` raised by the body becomes ``PROG: error: <one line>``
on stderr and exit status 2; ``RTSR_DEBUG=1`` shows the traceback instead.
"""
import argparse
import os
import re
import sys
from pathlib import Path

import torch

from ..loader import save_checkpoint
from ..utils.options import OptionsError, dump_options, load_options, parse_overrides

__all__ = ['Parser', 'CommandError', 'run_command', 'error_line', 'same_file', 'check_outputs', 'checkpoint_paths',
           'write_checkpoint_and_yml', 'add_test_set_arguments', 'given_test_set', 'rtsr_test_options',
           'add_model_arguments', 'model_arguments', 'torch_device', 'CHECKPOINT_SUFFIXES']

CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.safetensors')


class CommandError(ValueError):
    """A usage error detected by a command; the message is one line."""


def error_line(exc):
    """One line describing ``exc``: its message's first line (an OSError names the file)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f'{exc.filename}: {exc.strerror or exc}'
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


class Parser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line (``PROG: error: ...``), exit status 2."""

    def error(self, message):
        raise CommandError(message)


def run_command(prog, body, argv=None):
    """Run ``body(argv)`` and turn the package's errors into ``prog: error: <one line>`` (exit 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return body(argv) or 0
    except (ValueError, OSError) as exc:
        if os.environ.get('RTSR_DEBUG'):
            raise
        print(f'{prog}: error: {error_line(exc)}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------- outputs

def same_file(a, b):
    """Whether paths ``a`` and ``b`` name the same file (existing or not)."""
    a, b = Path(a), Path(b)
    try:
        return (a.exists() and b.exists() and os.path.samefile(a, b)) or a.resolve() == b.resolve()
    except OSError:
        return False


def check_outputs(outputs, inputs, overwrite=False):
    """Raise a one-line :class:`CommandError` when one of ``outputs`` is one of ``inputs``
    (``{flag: path}``; never written over, even with ``--overwrite``) or exists and ``overwrite``
    is false."""
    for out in map(Path, outputs):
        for flag, path in inputs.items():
            if path is not None and same_file(out, path):
                raise CommandError(f'{out}: is the {flag} file; refusing to write over it (choose another --out)')
        if out.is_dir():
            raise CommandError(f'{out}: is a directory; expected a file name')
        if out.exists() and not overwrite:
            raise CommandError(f'{out}: already exists; pass --overwrite to replace it')


def checkpoint_paths(out):
    """``(checkpoint, yml)`` for ``--out``; the checkpoint must end in .pth, .pt or .safetensors."""
    out = Path(out)
    if out.suffix not in CHECKPOINT_SUFFIXES:
        raise CommandError(f"{out}: the output checkpoint must end in {', '.join(CHECKPOINT_SUFFIXES)}")
    return out, out.with_suffix('.yml')


def write_checkpoint_and_yml(out, yml, params, network_opt, options, extra_params=None, header=None):
    """Write the checkpoint (options embedded), then the option file ``options`` (``header``:
    comment lines) beside it; if the YAML cannot be written, a checkpoint that did not exist
    before is removed again."""
    existed = out.exists()
    save_checkpoint(out, params, network_opt, extra_params)
    try:
        dump_options(options, yml, header)
    except BaseException:
        if not existed:
            out.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- option files for rtsr-test

PLACEHOLDER_SET = {'dataroot_gt': 'datasets/CHANGE_ME/HR', 'dataroot_lq': 'datasets/CHANGE_ME/LR'}
DEFAULT_METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                   'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}


def add_test_set_arguments(parser):
    """``--test-gt`` / ``--test-lq``: the folders of the test set of the option file written."""
    parser.add_argument('--test-gt', metavar='DIR', help='HR folder of the test set in OUT.yml (with --test-lq)')
    parser.add_argument('--test-lq', metavar='DIR', help='LR folder, same file names as the HR (PairedImageDataset)')


def given_test_set(args):
    """``{'dataroot_gt', 'dataroot_lq'}`` from ``--test-gt``/``--test-lq`` (absolute), or None."""
    if (args.test_gt is None) != (args.test_lq is None):
        raise CommandError('--test-gt and --test-lq go together (the HR and LR folders of one test set)')
    if args.test_gt is None:
        return None
    return {'dataroot_gt': str(Path(args.test_gt).absolute()), 'dataroot_lq': str(Path(args.test_lq).absolute())}


def rtsr_test_options(name, network_opt, checkpoint, param_key, scale, folders=None, source_options=None):
    """``(options, header lines)``: a complete ``rtsr-test`` option file for ``checkpoint``.

    Its test sets are ``folders`` (:func:`given_test_set`) when given, else the validation sets
    of ``source_options`` (a training option file), else one ``PairedImageDataset`` whose
    ``datasets/CHANGE_ME`` folders the header asks to change; ``num_gpu: auto``; SR images saved
    (``val.save_img: true``); the metrics of ``source_options`` or PSNR and SSIM on RGB."""
    source_options = source_options or {}
    datasets = {} if folders else {key: dict(d) for key, d in (source_options.get('datasets') or {}).items()
                                   if key != 'train' and isinstance(d, dict)}
    folders = folders or PLACEHOLDER_SET
    if not datasets:
        datasets = {'test_1': {'name': Path(folders['dataroot_gt']).parent.name or 'test', 'type': 'PairedImageDataset',
                               **folders, 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}}
    options = {'name': name, 'model_type': 'RTSRModel', 'scale': scale, 'num_gpu': 'auto', 'manual_seed': 0,
               'datasets': datasets, 'network_g': dict(network_opt),
               'path': {'pretrain_network_g': str(Path(checkpoint).resolve()), 'param_key_g': param_key,
                        'strict_load_g': True},
               'val': {'save_img': True, 'suffix': name,
                       'metrics': (source_options.get('val') or {}).get('metrics') or DEFAULT_METRICS}}
    header = [f'rtsr-test -opt THIS_FILE: evaluates {Path(checkpoint).name} on every dataset below; metrics in the',
              f'log, SR images as PNG under results/{name}/visualization/ (in the current directory).']
    if datasets.get('test_1', {}).get('dataroot_gt') == PLACEHOLDER_SET['dataroot_gt']:
        header.append('CHANGE ME: datasets.test_1 dataroot_gt / dataroot_lq (HR and LR folders with the same file '
                      'names), or write this file again with --test-gt DIR --test-lq DIR.')
    if Path(checkpoint).suffix == '.safetensors':
        header.append('BasicSR (rtsr-test) loads .pth checkpoints only: write the checkpoint as .pth to test it.')
    return options, header


# ----------------------------------------------------------------------------- models and devices

def add_model_arguments(parser):
    """``--opt``, ``--param-key``, ``--arch``, ``--set``: how a command reads MODEL (see
    :func:`rtsr_arch.loader.load_model`)."""
    parser.add_argument('--opt', metavar='YML', help="an option file whose network_g builds MODEL's network")
    parser.add_argument('--param-key', help='checkpoint entry holding the weights (params, params_ema, ...)')
    parser.add_argument('--arch', default='auto', help='official importer to use (default: auto-detect)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='network option override (official checkpoints; with --opt, applied to its network_g); '
                             'repeatable')


def model_arguments(args):
    """The :func:`~rtsr_arch.loader.load_model` keywords given by :func:`add_model_arguments`."""
    overrides = parse_overrides(args.set)
    network_opt, param_key = None, args.param_key
    if args.opt:
        options = load_options(args.opt)
        if not isinstance(options.get('network_g'), dict):
            raise OptionsError(f'{args.opt}: no network_g mapping')
        network_opt = {**options['network_g'], **overrides}
        param_key = param_key or (options.get('path') or {}).get('param_key_g')
    return dict(network_opt=network_opt, param_key=param_key, arch=args.arch, overrides=overrides)


def torch_device(name):
    """``torch.device(name)`` for ``cpu``, ``cuda`` or ``cuda:N``; one line when CUDA is missing."""
    if not re.fullmatch(r'cpu|cuda(:\d+)?', name):
        raise CommandError(f"--device: '{name}' is not cpu, cuda or cuda:N")
    if name.startswith('cuda'):
        if not torch.cuda.is_available():
            raise CommandError(f'--device {name}: CUDA is not available on this machine '
                               f'(torch {torch.__version__}, torch.cuda.is_available() is False)')
        index = int(name.partition(':')[2] or 0)
        if index >= torch.cuda.device_count():
            raise CommandError(f'--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)')
    return torch.device(name)
