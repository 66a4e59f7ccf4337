"""Fixed blur filters."""
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ['GaussianBlur']


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
