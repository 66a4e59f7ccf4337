"""``rtsr-train`` / ``rtsr-test``: BasicSR's own pipelines with this package registered.

Experiments and results go under the current directory (so ``--auto_resume`` finds them; resume
states load on the CPU, see :mod:`rtsr_arch.utils.resume`), and
every ``type:`` of the option file is checked first, so an unknown name fails in one line that
lists the registered names of that kind. BasicSR's flags (``-opt``, ``--launcher``,
``--auto_resume``, ``--debug``, ``--force_yml``, ``--local_rank``) pass through unchanged.
"""
import argparse
import os
import sys

from rtsr_arch.utils.options import OptionsError, check_options, load_options


def _opt_path(argv):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    return parser.parse_known_args(argv)[0].opt


def _preflight(prog, argv):
    path = _opt_path(argv)
    if path is None:
        return  # let BasicSR's parser print its usage error
    try:
        check_options(load_options(path), path)
    except OptionsError as exc:
        sys.exit(f'{prog}: error: {exc}')


def train(argv=None):
    """Entry point of ``rtsr-train`` and ``python -m rtsr_arch.train``."""
    import rtsr_arch  # noqa: F401  (aliases + registration before basicsr is imported)
    argv = sys.argv[1:] if argv is None else argv
    _preflight('rtsr-train', argv)
    import basicsr.train

    from rtsr_arch.utils.resume import load_resume_state
    basicsr.train.load_resume_state = load_resume_state  # CPU-safe resume (see rtsr_arch.utils.resume)
    sys.argv = ['rtsr-train', *argv]
    basicsr.train.train_pipeline(os.getcwd())


def test(argv=None):
    """Entry point of ``rtsr-test`` and ``python -m rtsr_arch.test``."""
    import rtsr_arch  # noqa: F401
    argv = sys.argv[1:] if argv is None else argv
    _preflight('rtsr-test', argv)
    from basicsr.test import test_pipeline
    sys.argv = ['rtsr-test', *argv]
    test_pipeline(os.getcwd())
