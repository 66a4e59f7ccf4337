#!/usr/bin/env python
r"""Latency of real-time 4K SR networks, the NTIRE 2023 RTSR way, with efficiency metrics.

    python tools/runtime_4k.py --arch LRSRN [--set upscale=3 ...]     # one registered architecture
    python tools/runtime_4k.py -opt options/test/LRSRN/test_LRSRN_x2.yml
    python tools/runtime_4k.py --ckpt LRSRN_x2_deploy.pth             # any checkpoint load_model reads
    python tools/runtime_4k.py --all                                  # every architecture of rtsr_arch

The same program as the ``rtsr-runtime`` console script: the logic lives in
:mod:`rtsr_arch.commands.runtime` (``rtsr-runtime --help`` lists every option).
"""
import sys

from rtsr_arch.commands.runtime import main

__all__ = ['main']

if __name__ == '__main__':
    sys.exit(main())
