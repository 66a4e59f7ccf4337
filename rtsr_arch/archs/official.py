"""Importers of official third-party checkpoints, one per architecture, registered by arch name.

An importer takes the object ``torch.load`` returned for an official file and the user's
``--set`` overrides, and returns a :class:`OfficialImport`: a state dict in this package's layout
and the ``network_g`` options, of which everything the weights determine (channels, blocks,
scale, form) is inferred from them. Used by ``tools/convert_official.py``.
"""
import math
from dataclasses import dataclass, field

__all__ = ['OfficialImport', 'OFFICIAL_IMPORTERS', 'register_official_importer', 'strip_prefix',
           'count_indexed', 'unwrap_state_dict', 'infer_upscale']

OFFICIAL_IMPORTERS = {}


@dataclass
class OfficialImport:
    state_dict: dict
    network_opt: dict
    notes: list = field(default_factory=list)


def register_official_importer(arch_name):
    """Decorator: register ``fn(checkpoint, overrides) -> OfficialImport`` for ``arch_name``."""

    def decorator(fn):
        OFFICIAL_IMPORTERS[arch_name] = fn
        return fn

    return decorator


def unwrap_state_dict(checkpoint, keys=('state_dict', 'model_state_dict', 'params_ema', 'params')):
    """The tensor dict inside a training checkpoint (first of ``keys`` present), or the dict itself."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f'expected a dict of tensors or a training checkpoint, got {type(checkpoint).__name__}')
    for key in keys:
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def strip_prefix(state_dict, prefix):
    """Remove ``prefix`` (e.g. DataParallel's ``module.``) from every key that has it."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def count_indexed(state_dict, prefix):
    """Number of distinct ``i`` in keys ``<prefix>.<i>.…`` (e.g. blocks of an ``nn.Sequential``)."""
    found = {k[len(prefix) + 1:].split('.')[0] for k in state_dict if k.startswith(prefix + '.')}
    return len([i for i in found if i.isdigit()])


def infer_upscale(out_channels, num_out_ch, shuffle_per_scale=1):
    """Scale s from a PixelShuffle conv with ``num_out_ch * (shuffle_per_scale * s)**2`` outputs."""
    ratio, rest = divmod(out_channels, num_out_ch)
    root = math.isqrt(ratio)
    if rest or root * root != ratio or root % shuffle_per_scale:
        raise ValueError(f'{out_channels} output channels do not fit {num_out_ch} image channels times a '
                         f'square pixel-shuffle factor')
    return root // shuffle_per_scale
