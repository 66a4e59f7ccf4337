"""Normalization layers."""
import torch
from torch import nn

__all__ = ['LayerNorm2d']


class LayerNorm2d(nn.Module):
    """Layer normalization over the channels of every pixel (NAFNet's LayerNorm2d, used by RT4KSR).

    Biased variance, ``eps`` inside the square root, per-channel affine ``weight``/``bias``.
    """

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)
