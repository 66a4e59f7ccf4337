#!/usr/bin/env python
r"""Cut HR and LR images into aligned sub-images and store each set as a BasicSR LMDB.

    python tools/prepare_lmdb.py --hr HR_DIR --lr-root LR_ROOT --scale 4 --out OUT [--crop-size 480 --step 240]
    python tools/prepare_lmdb.py --verify OUT --scale 4

The same program as the ``rtsr-lmdb`` console script: the logic lives in
:mod:`rtsr_arch.commands.lmdb` (``rtsr-lmdb --help`` lists every option).
"""
import sys

from rtsr_arch.commands.lmdb import main

__all__ = ['main']

if __name__ == '__main__':
    sys.exit(main())
