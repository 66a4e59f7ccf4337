"""Non-reparameterizable layers shared by the architectures, one module per concern."""
from .activations import ACTIVATIONS, make_activation
from .blur import GaussianBlur
from .normalization import LayerNorm2d
from .upsamplers import conv_pixel_shuffle

__all__ = ['ACTIVATIONS', 'make_activation', 'GaussianBlur', 'LayerNorm2d', 'conv_pixel_shuffle']
