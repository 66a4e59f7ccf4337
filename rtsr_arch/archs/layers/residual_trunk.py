"""The trunk shared by RFDN (Liu, Tang, Wu, ECCV-W 2020) and the efficient-SR networks built on it
(RLFN, DIPNet, PFDN, RepRFN, DLFAN, PRFDN, LKDN-S) and by FMEN / LMRLFN: a head conv, a body of
blocks, a tail conv with a skip from the head, an upsampler::

    f = head(x)                       (x * img_range first for networks computing on [0, 255])
    y = upsampler(tail(body(f)) + f)  (then / img_range)

``body`` runs the numbered blocks in a chain; a network whose body is more (RFDN's fusion of every
block's output, DLFAN's archway connections, FMEN's warm-up) overrides :meth:`ResidualTrunk.body`.
The head, tail and upsampler keep each network's official names, listed in ``trunk_names``.
"""
from torch import nn

__all__ = ['ResidualTrunk']


class ResidualTrunk(nn.Module):
    """The forward above; a subclass registers its modules under its official names and declares:

    - ``trunk_names``: the names of (head, tail, upsampler), e.g. ``('conv_1', 'conv_2', 'upsampler')``;
    - ``block_prefix``: blocks added by :meth:`add_blocks` are ``<prefix>1`` .. ``<prefix>n``;
    - ``img_range``: 255 for a network that computes on [0, 255] (the input is multiplied by it
      inside and the output divided), else 1 (no scaling at all).
    """

    trunk_names = ('conv_1', 'conv_2', 'upsampler')
    block_prefix = 'block_'
    img_range = 1.0

    def add_blocks(self, blocks):
        """Register ``blocks`` as ``<block_prefix>1`` .. ``<block_prefix>n`` (in ``block_names``)."""
        self.block_names = [f'{self.block_prefix}{i}' for i in range(1, len(blocks) + 1)]
        for name, block in zip(self.block_names, blocks):
            self.add_module(name, block)

    def blocks(self):
        """The blocks added by :meth:`add_blocks`, in order."""
        return [getattr(self, name) for name in self.block_names]

    def body(self, fea):
        """The blocks in a chain from ``fea``."""
        for block in self.blocks():
            fea = block(fea)
        return fea

    def block_outputs(self, fea):
        """Every block's output, the blocks run in a chain from ``fea`` (for bodies that fuse them)."""
        outs = []
        for block in self.blocks():
            fea = block(fea)
            outs.append(fea)
        return outs

    def forward(self, x):
        head, tail, upsampler = (getattr(self, name) for name in self.trunk_names)
        scaled = self.img_range != 1
        fea = head(x * self.img_range if scaled else x)
        y = upsampler(tail(self.body(fea)) + fea)
        return y / self.img_range if scaled else y
