"""Small non-reparameterizable layers shared by the architectures."""
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ['ACTIVATIONS', 'make_activation', 'LayerNorm2d', 'GaussianBlur']


def _prelu(channels):
    return nn.PReLU(num_parameters=channels)


# name -> factory(channels); the slopes follow the official LRSRN / RT4KSR / ECBSR code.
ACTIVATIONS = {
    'linear': lambda channels: nn.Identity(),
    'relu': lambda channels: nn.ReLU(inplace=True),
    'lrelu': lambda channels: nn.LeakyReLU(0.05, inplace=True),
    'prelu': _prelu,
    'rrelu': lambda channels: nn.RReLU(lower=-0.05, upper=0.05),
    'gelu': lambda channels: nn.GELU(),
    'silu': lambda channels: nn.SiLU(inplace=True),
    'softplus': lambda channels: nn.Softplus(),
}


def make_activation(act_type, channels):
    """Build the activation named ``act_type`` for ``channels`` features (PReLU is per channel)."""
    key = 'linear' if act_type is None else str(act_type).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"act_type '{act_type}' is not supported; expected one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key](channels)


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


class GaussianBlur(nn.Module):
    """Depthwise Gaussian blur with reflect padding, equal to ``torchvision.transforms.GaussianBlur``.

    RT4KSR (paper §3.1) extracts high frequencies as ``x - blur(x)`` with kernel 5, sigma 1; its
    HF loss (§3.2, Eq. 1) uses the same operation. The kernel is a non-persistent buffer, so it
    never appears in checkpoints.
    """

    def __init__(self, kernel_size=5, sigma=1.0):
        super().__init__()
        half = (kernel_size - 1) / 2
        x = torch.linspace(-half, half, kernel_size, dtype=torch.float64)
        pdf = torch.exp(-0.5 * (x / sigma).pow(2))
        k1d = pdf / pdf.sum()
        self.register_buffer('kernel', torch.outer(k1d, k1d)[None, None], persistent=False)
        self.padding = kernel_size // 2

    def forward(self, x):
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, -1, -1)
        x = F.pad(x, [self.padding] * 4, mode='reflect')
        return F.conv2d(x, weight, groups=channels)

    def high_frequencies(self, x):
        """``x - blur(x)``: the structural high frequencies of ``x``."""
        return x - self(x)


def check_divisible(x, factor, arch):
    """Raise a one-line error when the spatial size of ``x`` is not a multiple of ``factor``."""
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f'{arch} needs input height and width divisible by {factor}; got {h}x{w}')
