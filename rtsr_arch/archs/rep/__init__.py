"""The reparameterizable block library.

Every block is a :class:`ReparamBlock`: a training form of several linear branches and a deploy
form that is one plain conv, selected by ``deploy=`` at construction or converted in place by
:func:`reparameterize`. The merge math lives in :mod:`.fusion`. Adding a block = one small module
that builds its branches and implements ``forward_train`` and ``fuse``. :func:`reparameterize`
also honours any module's own ``reparameterize()`` method (whole-network transforms).
"""
from .acb import ACBlock
from .base import ReparamBlock, reparameterize, reparameterize_children
from .bsconv import BSConvU, BSConvURep, RepUpsampler
from .collapsible import COLLAPSIBLE_ALIASES, CollapsibleBlock
from .conv3xc import Conv3XC
from .dbb import LEDBB, DiverseBranchBlock
from .ecb import ECB
from .fmen_blocks import ERB, HFAB, format_up_blocks, hfab_warmup, parse_up_blocks
from .large_kernel import ReparamLargeKernelConv
from .nrb import NRB
from .repvgg import RepVGGBlock
from .reprfn_block import RepRFNBlock
from .rrrb import RRRB
from .rrrb_conv import RRRBConv
from .rvsr_repconv import RVSRRepConv

__all__ = ['ReparamBlock', 'reparameterize', 'reparameterize_children', 'ACBlock', 'CollapsibleBlock', 'ECB',
           'RepVGGBlock', 'RRRB', 'ERB', 'HFAB', 'NRB', 'RVSRRepConv', 'Conv3XC', 'RRRBConv',
           'BSConvU', 'BSConvURep', 'RepUpsampler', 'ReparamLargeKernelConv',
           'DiverseBranchBlock', 'LEDBB', 'RepRFNBlock', 'COLLAPSIBLE_ALIASES', 'hfab_warmup', 'parse_up_blocks',
           'format_up_blocks']
