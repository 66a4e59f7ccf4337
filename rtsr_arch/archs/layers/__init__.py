"""Non-reparameterizable layers shared by the architectures, one module per concern."""
from .activations import ACTIVATIONS, PARAMETER_FREE_ACTIVATIONS, make_activation
from .attention import ESA, ESA_MIN_INPUT_SIZE, ESA_VARIANTS, SqueezeExcite, make_divisible
from .blur import GaussianBlur
from .frl import DF2K_RGB_MEAN, FRLMLP, FRLSkeleton, MeanShift, MeanShiftConv, NormFreeGroup, ShiftConv2d1x1
from .modulation import (NTIRE23_SAFM_LEVELS, NTIRE23_SAFM_POOL_SHIFT, SAFM, SAFMNSkeleton, check_ffn_scale,
                         check_safm_width, conv_channel_mixer, ffn_scale_for, safm_min_input_size)
from .normalization import LayerNorm2d
from .pooling import adaptive_max_pool2d_by, adaptive_max_pool2d_by_windows
from .residual_trunk import ResidualTrunk
from .resize import nearest_source_index, resize_nearest, resize_nearest_by_gather
from .rfdn import RFDB, RFDN_ACTIVATIONS, RFDN_MODULES, RFDNTrunk
from .rlfb import LocalFeatureBlock
from .upsamplers import conv_pixel_shuffle

__all__ = ['ACTIVATIONS', 'PARAMETER_FREE_ACTIVATIONS', 'make_activation', 'SqueezeExcite', 'make_divisible',
           'GaussianBlur', 'LayerNorm2d', 'conv_pixel_shuffle', 'ESA', 'ESA_VARIANTS', 'ESA_MIN_INPUT_SIZE',
           'adaptive_max_pool2d_by', 'adaptive_max_pool2d_by_windows',
           'resize_nearest', 'resize_nearest_by_gather', 'nearest_source_index',
           'DF2K_RGB_MEAN', 'FRLSkeleton', 'FRLMLP', 'NormFreeGroup', 'MeanShift', 'MeanShiftConv', 'ShiftConv2d1x1',
           'SAFM', 'ffn_scale_for', 'check_ffn_scale', 'NTIRE23_SAFM_LEVELS', 'NTIRE23_SAFM_POOL_SHIFT',
           'safm_min_input_size', 'check_safm_width', 'SAFMNSkeleton', 'conv_channel_mixer',
           'ResidualTrunk', 'LocalFeatureBlock', 'RFDB', 'RFDNTrunk', 'RFDN_ACTIVATIONS', 'RFDN_MODULES']
