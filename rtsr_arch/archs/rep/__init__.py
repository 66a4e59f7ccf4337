"""The reparameterizable block library.

Every block is a :class:`ReparamBlock`: a training form of several linear branches and a deploy
form that is one plain conv, selected by ``deploy=`` at construction or converted in place by
:func:`reparameterize`. The merge math lives in :mod:`.fusion`. Adding a block = one small module
that builds its branches and implements ``forward_train`` and ``fuse``. :func:`reparameterize`
also honours any module's own ``reparameterize()`` method (whole-network transforms).
"""
from .acb import ACBlock
from .base import ReparamBlock, reparameterize, reparameterize_children
from .collapsible import CollapsibleBlock
from .ecb import ECB
from .repvgg import RepVGGBlock
from .rrrb import RRRB

__all__ = ['ReparamBlock', 'reparameterize', 'reparameterize_children', 'ACBlock', 'CollapsibleBlock', 'ECB',
           'RepVGGBlock', 'RRRB']
