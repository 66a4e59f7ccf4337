"""Activations by name, with the slopes of the official code of each paper."""
from torch import nn

__all__ = ['ACTIVATIONS', 'PARAMETER_FREE_ACTIVATIONS', 'make_activation']


def _or(value, default):
    return default if value is None else value


# name -> factory(channels, slope): ``slope`` is the negative slope of lrelu (default 0.05, the
# RFDN/RLFN value; FMEN and LMRLFN use 0.1), the initial slope of prelu (default 0.25, PyTorch's)
# and the bound of rrelu's uniform range (default 0.05, LRSRN's [-0.05, 0.05]).
ACTIVATIONS = {
    'linear': lambda channels, slope: nn.Identity(),
    'relu': lambda channels, slope: nn.ReLU(inplace=True),
    'lrelu': lambda channels, slope: nn.LeakyReLU(_or(slope, 0.05), inplace=True),
    'prelu': lambda channels, slope: nn.PReLU(channels, _or(slope, 0.25)),
    'rrelu': lambda channels, slope: nn.RReLU(-_or(slope, 0.05), _or(slope, 0.05)),
    'gelu': lambda channels, slope: nn.GELU(),
    'silu': lambda channels, slope: nn.SiLU(inplace=True),
    'softplus': lambda channels, slope: nn.Softplus(),
}

# the activations without parameters: those a network may apply with one module to maps of
# several widths (a per-channel PReLU cannot)
PARAMETER_FREE_ACTIVATIONS = tuple(name for name in ACTIVATIONS if name != 'prelu')


def make_activation(act_type, channels, slope=None):
    """The activation named ``act_type`` for ``channels`` features (PReLU is per channel);
    ``None`` means 'linear'. An unknown name is a one-line ValueError listing the names."""
    key = 'linear' if act_type is None else str(act_type).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"act_type '{act_type}' is not supported; expected one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key](channels, slope)
