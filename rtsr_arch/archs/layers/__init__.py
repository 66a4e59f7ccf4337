"""Non-reparameterizable layers shared by the architectures, one module per concern."""
from .activations import ACTIVATIONS, make_activation
from .attention import ESA, ESA_MIN_INPUT_SIZE, ESA_VARIANTS, SqueezeExcite, make_divisible
from .blur import GaussianBlur
from .frl import DF2K_RGB_MEAN, FRLSkeleton, MeanShift, MeanShiftConv, ShiftConv2d1x1
from .modulation import SAFM, ffn_scale_for
from .normalization import LayerNorm2d
from .pooling import adaptive_max_pool2d_by, adaptive_max_pool2d_by_windows
from .resize import nearest_source_index, resize_nearest, resize_nearest_by_gather
from .upsamplers import conv_pixel_shuffle

__all__ = ['ACTIVATIONS', 'make_activation', 'SqueezeExcite', 'make_divisible', 'GaussianBlur', 'LayerNorm2d',
           'conv_pixel_shuffle', 'ESA', 'ESA_VARIANTS', 'ESA_MIN_INPUT_SIZE',
           'adaptive_max_pool2d_by', 'adaptive_max_pool2d_by_windows',
           'resize_nearest', 'resize_nearest_by_gather', 'nearest_source_index',
           'DF2K_RGB_MEAN', 'FRLSkeleton', 'MeanShift', 'MeanShiftConv', 'ShiftConv2d1x1',
           'SAFM', 'ffn_scale_for']
