#!/usr/bin/env python
r"""Convert an official third-party checkpoint into a checkpoint of this package.

    python tools/convert_official.py --input rt4ksr_x2.pth --out rt4ksr_x2_basicsr.pth      # importer auto-detected
    python tools/convert_official.py --arch LRSRN --input model_x4_deploy.pt --out lrsrn_x4.safetensors \
        --set act_type=gelu

The same program as the ``rtsr-convert`` console script: the logic lives in
:mod:`rtsr_arch.commands.convert` (``rtsr-convert --help`` lists every option).
"""
import sys

from rtsr_arch.commands.convert import main

__all__ = ['main']

if __name__ == '__main__':
    sys.exit(main())
