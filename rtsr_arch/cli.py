"""``rtsr-train`` / ``rtsr-test``: BasicSR's training loop (:mod:`rtsr_arch.training.pipeline`:
its ``train_pipeline`` with exact resume of the data order) and BasicSR's own ``test_pipeline``,
with this package registered.

Experiments and results go under the current directory (so ``--auto_resume`` finds them; resume
states load on the CPU, see :mod:`rtsr_arch.utils.resume`). BasicSR's flags (``-opt``,
``--launcher``, ``--auto_resume``, ``--debug``, ``--force_yml``, ``--local_rank``) pass through
unchanged.

Errors are one line ``rtsr-train: error: ...`` on stderr and a non-zero exit status, wherever
they happen: the option file is checked first (:func:`rtsr_arch.utils.preflight.preflight`:
sections, types, ranges, registered names, ``num_gpu`` against the machine, dataset folders,
the pretrained checkpoint), and an error raised inside BasicSR's loop (a dataset, a model, a
checkpoint, a full disk) is turned into one line at this boundary (:func:`error_message`); its
traceback goes to the run's log file. A sample of BasicSR's ``PairedImageDataset`` that cannot
be read (a truncated or corrupt image) names its two files. BasicSR's log goes to stdout. ``--debug`` or
``RTSR_DEBUG=1`` shows the traceback instead.
"""
import argparse
import logging
import os
import re
import sys
import traceback

from rtsr_arch.utils.options import load_options

__all__ = ['train', 'test', 'error_message']

_LOAD_MISMATCH = re.compile(r'Error\(s\) in loading state_dict for (\w+)')


def _args(argv):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    parser.add_argument('--force_yml', nargs='+')
    parser.add_argument('--debug', action='store_true')
    return parser.parse_known_args(argv)[0]


def _first_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ''


def error_message(exc):
    """One line for an exception raised inside BasicSR's pipeline: this package's errors as they
    are, BasicSR's and torch's predictable ones translated, anything else with its type."""
    from torch.cuda import OutOfMemoryError

    text = str(exc)
    if 'Original Traceback' in text:  # re-raised from a DataLoader worker: the worker's own error line
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        return last.partition(': ')[2] or last
    if isinstance(exc, ValueError) and type(exc).__module__.startswith('rtsr_arch'):
        return _first_line(text)  # OptionsError, CheckpointError, DatasetError, ...: one line already
    if isinstance(exc, OSError) and exc.filename is not None:
        return f'{exc.filename}: {exc.strerror or exc}'
    if isinstance(exc, OutOfMemoryError):
        return 'out of memory on the GPU: lower datasets.train.batch_size_per_gpu or gt_size'
    if isinstance(exc, MemoryError):
        return 'out of memory: lower datasets.train.batch_size_per_gpu, gt_size or num_worker_per_gpu'
    match = _LOAD_MISMATCH.search(text)
    if match:
        detail = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        return (f'the checkpoint does not match {match.group(1)} (path.pretrain_network_* / network_*): '
                f"{detail[0] if detail else ''}")
    if 'NVIDIA driver' in text or 'not compiled with CUDA' in text:
        return 'CUDA is not available on this machine: set num_gpu: auto (or 0) to run on the CPU'
    if isinstance(exc, KeyError):
        return f'missing option {exc}: a key BasicSR needs is not in the option file'
    if isinstance(exc, ValueError) and len(exc.args) > 1:  # BasicSR's ('Scale mismatches. ...', '...')
        return ''.join(map(str, exc.args))
    line = _first_line(text)
    if isinstance(exc, (ValueError, AssertionError)) and line:
        return line
    return f'{type(exc).__name__}: {line}' if line else type(exc).__name__


def _log_traceback():
    """Write the current traceback to the run's log files; their paths (may be empty)."""
    files = []
    for handler in logging.getLogger('basicsr').handlers:
        if isinstance(handler, logging.FileHandler):
            handler.stream.write(traceback.format_exc())
            handler.flush()
            files.append(handler.baseFilename)
    return files


def _name_files_of_failed_samples():
    """Make BasicSR's ``PairedImageDataset`` name the files of a sample it cannot read (its
    decoder returns None for a corrupt image, which fails later without a name)."""
    from basicsr.data.paired_image_dataset import PairedImageDataset

    from rtsr_arch.data.image_io import DatasetError
    get = PairedImageDataset.__getitem__
    if getattr(get, 'names_files', False):
        return

    def getitem(self, index):
        try:
            return get(self, index)
        except Exception as exc:
            if isinstance(exc, DatasetError):
                raise
            paths = self.paths[index]
            raise DatasetError(f"{paths['gt_path']} / {paths['lq_path']}: cannot be read as an HR/LR pair "
                               f'({error_message(exc)})') from exc
    getitem.names_files = True
    PairedImageDataset.__getitem__ = getitem


class _Stdout:
    """Whatever ``sys.stdout`` is at the time of each write."""

    def write(self, text):
        sys.stdout.write(text)

    def flush(self):
        sys.stdout.flush()


def _quiet_console():
    """BasicSR's console log on stdout and OpenCV's decoder warnings off (a corrupt image is named
    in the error line), so stderr holds only warnings and errors of this package."""
    try:
        import cv2.utils.logging
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        pass
    logger = logging.getLogger('basicsr')
    if 'addHandler' in vars(logger):
        return
    add = logger.addHandler

    def add_handler(handler):
        if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
            handler.setStream(_Stdout())
        add(handler)
    logger.addHandler = add_handler


def _run(prog, phase, argv, pipeline):
    import rtsr_arch  # noqa: F401  (aliases + registration before basicsr is imported)
    from rtsr_arch.utils.preflight import preflight

    argv = sys.argv[1:] if argv is None else list(argv)
    args = _args(argv)
    debug = args.debug or bool(os.environ.get('RTSR_DEBUG'))
    try:
        if args.opt is not None:  # else BasicSR's parser prints its usage error
            preflight(load_options(args.opt), args.opt, phase, args.force_yml)
        _quiet_console()
        _name_files_of_failed_samples()
        sys.argv = [prog, *argv]
        pipeline()
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001  (the boundary: every error becomes one line)
        if debug:
            raise
        logs = _log_traceback()
        where = f' (traceback in {logs[0]})' if logs else ''
        sys.exit(f'{prog}: error: {error_message(exc)}{where}')


def train(argv=None):
    """Entry point of ``rtsr-train`` and ``python -m rtsr_arch.train``."""
    def pipeline():
        from rtsr_arch.training.pipeline import train_pipeline  # BasicSR's, resumable exactly
        train_pipeline(os.getcwd(), sys.argv[1:])
    _run('rtsr-train', 'train', argv, pipeline)


def test(argv=None):
    """Entry point of ``rtsr-test`` and ``python -m rtsr_arch.test``."""
    def pipeline():
        from basicsr.test import test_pipeline
        test_pipeline(os.getcwd())
    _run('rtsr-test', 'test', argv, pipeline)
