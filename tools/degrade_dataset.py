#!/usr/bin/env python
r"""Degrade an HR image folder offline into one LR folder per JPEG quality / AVIF qp.

    python tools/degrade_dataset.py HR_DIR --out OUT --preset ais24 [--format encoded|png] [--save-hr] [--workers N]
    python tools/degrade_dataset.py HR_DIR --out OUT --preset ntire23 --scale 2

The same program as the ``rtsr-degrade`` console script: the logic lives in
:mod:`rtsr_arch.commands.degrade` (``rtsr-degrade --help`` lists every option).
"""
import sys

from rtsr_arch.commands.degrade import main

__all__ = ['main']

if __name__ == '__main__':
    sys.exit(main())
