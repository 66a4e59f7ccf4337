#!/usr/bin/env python
r"""A virtualenv holding only what the accelerator machine has preinstalled, to prove the offline
wheelhouse install on a development machine.

    python tools/accelerator_venv.py /tmp/accel-venv      # run with the project's Python
    /tmp/accel-venv/bin/python -c "import basicsr"        # fails: basicsr must come from the wheelhouse

The accelerator (see README, "GPU report") has PyTorch, torchvision, Triton, ONNX Runtime, OpenCV,
scikit-image (so numpy and scipy) and what those require, and nothing else. This tool creates a
fresh venv (no system site-packages) with the running Python's base interpreter and links into its
site-packages exactly those distributions (``--packages``) and their requirements (recursively,
environment markers evaluated, extras ignored), taken from the running environment; CUDA wheels
(``nvidia-*``, ``cuda-*``) come along with torch. Everything else (basicsr, lmdb, av, PyYAML,
matplotlib, this package, ...) is absent, so ``tools/gpu_report.sh`` must install it from the
wheelhouse.
"""
import argparse
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

PREINSTALLED = ['torch', 'torchvision', 'triton', 'onnxruntime', 'opencv-python', 'scikit-image', 'numpy', 'scipy']


def canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def closure(names):
    """The installed distributions ``names`` and everything they require, by canonical name."""
    found, stack = {}, [canonical(n) for n in names]
    if 'torch' in stack:  # torch's CUDA libraries, whichever wheels ship them
        stack += [canonical(d.metadata['Name']) for d in md.distributions()
                  if canonical(d.metadata['Name']).startswith(('nvidia-', 'cuda-'))]
    while stack:
        name = stack.pop()
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or Marker(str(req.marker)).evaluate({'extra': ''}):
                stack.append(canonical(req.name))
    return found


def top_level_entries(dist):
    """The names a distribution puts directly in site-packages (packages, modules, .dist-info, .pth)."""
    return sorted({Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith('..')})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('venv', type=Path, help='folder of the new virtualenv (must not exist)')
    parser.add_argument('--packages', nargs='+', default=PREINSTALLED, metavar='DIST',
                        help=f"distributions the accelerator has (default: {' '.join(PREINSTALLED)})")
    args = parser.parse_args(argv)
    if args.venv.exists():
        parser.error(f'{args.venv}: already exists')
    dists = closure(args.packages)
    missing = sorted(set(map(canonical, args.packages)) - set(dists))
    if missing:
        parser.error(f"not installed in {sys.prefix}: {', '.join(missing)}")
    base = getattr(sys, '_base_executable', sys.executable)
    subprocess.run([base, '-m', 'venv', str(args.venv)], check=True)
    site = Path(subprocess.run([str(args.venv / 'bin' / 'python'), '-c', 'import sysconfig; '
                                'print(sysconfig.get_paths()["purelib"])'],
                               check=True, capture_output=True, text=True).stdout.strip())
    linked = 0
    for dist in dists.values():
        for entry in top_level_entries(dist):
            source, target = Path(dist.locate_file(entry)), site / entry
            if source.exists() and not target.exists():
                target.symlink_to(source)
                linked += 1
    print(f"{args.venv}: {len(dists)} distributions linked ({linked} entries): "
          + ' '.join(sorted(dists)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
