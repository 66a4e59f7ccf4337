#!/usr/bin/env python
r"""Reparameterize a training checkpoint into its deploy form.

    python tools/reparam_ckpt.py --ckpt experiments/NAME/models/net_g_latest.pth \
        [--opt options/train/LRSRN/train_LRSRN_x2_stage1_L1.yml] [--out OUT.pth|OUT.safetensors] [--overwrite]

The same program as the ``rtsr-reparam`` console script: the logic lives in
:mod:`rtsr_arch.commands.reparam` (``rtsr-reparam --help`` lists every option).
"""
import sys

from rtsr_arch.commands.reparam import main

__all__ = ['main']

if __name__ == '__main__':
    sys.exit(main())
