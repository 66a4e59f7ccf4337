"""Normalization layers."""
import torch
from torch import nn

__all__ = ['LayerNorm2d']


class LayerNorm2d(nn.Module):
    """Layer normalization over the channels of every pixel (NAFNet's LayerNorm2d, used by RT4KSR).

    Biased variance, ``eps`` inside the square root, per-channel affine ``weight``/``bias``.

    ``float32_stats=True``: a float16/bfloat16 input is normalized in float32 and the result cast
    back (float32 and float64 inputs are unaffected). For features whose squared deviations exceed
    the float16 range (|x - mean| > 256, e.g. networks computing on [0, 255] images: GateFormer,
    EXnet), where the plain form returns inf variances and zero outputs in float16.
    """

    def __init__(self, channels, eps=1e-6, float32_stats=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.float32_stats = float32_stats

    def forward(self, x):
        if self.float32_stats and x.dtype in (torch.float16, torch.bfloat16):
            return self._normalize(x.float()).to(x.dtype)
        return self._normalize(x)

    def _normalize(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)
