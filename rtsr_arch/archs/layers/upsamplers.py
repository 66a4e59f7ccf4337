"""Upsampling tails."""
from torch import nn

__all__ = ['conv_pixel_shuffle']


def conv_pixel_shuffle(in_channels, out_channels, scale, kernel_size=3, bias=True):
    """kxk conv to ``out_channels * scale**2`` features, then PixelShuffle(scale) (ESPCN; the tail
    of RT4KSR and of most NTIRE efficient-SR entries). An ``nn.Sequential``, so the conv's keys are
    ``<name>.0.weight`` / ``.bias`` as in the official checkpoints."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels * scale ** 2, kernel_size, padding=kernel_size // 2,
                                   bias=bias),
                         nn.PixelShuffle(scale))
