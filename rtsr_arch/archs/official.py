"""Importers of official third-party checkpoints: one per architecture, each with a detection
condition on the state-dict keys and shapes.

An importer is registered next to its architecture with :func:`register_importer`. It receives
the official state dict already unwrapped (``params``, ``params_ema``, ``state_dict``,
``model_state_dict``, Lightning checkpoints) and stripped of wrapper prefixes (``module.``,
``network.``, ``model.``) by :func:`official_state_dict`, plus the user's ``key=value``
overrides, and returns an :class:`OfficialImport`: the state dict in this package's layout and
the ``network_g`` options, of which everything the weights determine (channels, blocks, scale,
form) is inferred; what they cannot determine is listed in ``assumed`` with a note.

:func:`find_importers` returns the importers whose detection matches a checkpoint; building and
loading the network is :func:`rtsr_arch.loader.import_official`.
"""
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..utils.checkpoint import PickledPlaceholder, module_state_dict

__all__ = ['OfficialImport', 'Importer', 'IMPORTERS', 'register_importer', 'official_state_dict', 'find_importers',
           'get_importer', 'top_level_names', 'count_indexed', 'infer_upscale', 'OfficialImportError',
           'PickledModuleStateDict']

WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model', 'net', 'network')
WRAPPER_PREFIXES = ('module.', 'network.', 'model.')


class OfficialImportError(ValueError):
    """An official checkpoint that cannot be imported as asked; the message is one line."""


@dataclass
class OfficialImport:
    """What an importer returns: ``state_dict`` in this package's layout, the ``network_opt``
    (``network_g``) to build, the keywords it had to ``assume`` (not determined by the weights)
    and ``notes`` for the user."""
    state_dict: dict
    network_opt: dict
    notes: list = field(default_factory=list)
    assumed: tuple = ()


@dataclass
class Importer:
    arch: str
    convert: Callable  # (state_dict, overrides) -> OfficialImport
    detect: Callable  # (state_dict) -> bool
    param_keys: tuple  # which entry of a {'params', 'params_ema'} checkpoint holds the official weights


IMPORTERS = {}


def register_importer(arch, detect, param_keys=('params', 'params_ema')):
    """Decorator: register ``convert(state_dict, overrides) -> OfficialImport`` for ``arch``,
    used for every checkpoint whose unwrapped state dict satisfies ``detect(state_dict)``.
    ``param_keys``: the preferred entries of checkpoints that hold several (the one the official
    inference code uses first)."""

    def decorator(convert):
        IMPORTERS[arch] = Importer(arch, convert, detect, tuple(param_keys))
        return convert

    return decorator


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


class PickledModuleStateDict(dict):
    """The state dict of a whole pickled ``nn.Module`` (``torch.save(model)``, e.g. PRFDN's NTIRE
    2023 file) that :func:`rtsr_arch.utils.checkpoint.restricted_load` read without running any
    code from the file; ``pickled_class`` is the module's class as the pickle names it."""
    pickled_class = ''


def _pickled_module_class(obj):
    """The class name of a pickled ``nn.Module`` placeholder (restricted reader), else ''."""
    if isinstance(obj, PickledPlaceholder) and all(isinstance(vars(obj).get(k), dict)
                                                   for k in ('_parameters', '_buffers', '_modules')):
        return obj.pickled_name
    return ''


def official_state_dict(checkpoint, param_keys=('params', 'params_ema')):
    """The tensor dict inside ``checkpoint``: its first ``param_keys`` entry that is a state dict,
    else a wrapper's (``state_dict`` — Lightning and most training scripts —, ``model_state_dict``,
    ...), else the dict itself; with a wrapper prefix (``module.``, ``network.``, ``model.``)
    removed when every key has it. A whole pickled ``nn.Module`` read by the restricted reader
    gives its module state dict, as a :class:`PickledModuleStateDict` naming the class."""
    pickled = _pickled_module_class(checkpoint)
    if pickled:
        checkpoint = module_state_dict(checkpoint)
    if not isinstance(checkpoint, dict):
        raise OfficialImportError(f'expected a state dict or a training checkpoint holding one, '
                                  f'got {type(checkpoint).__name__}')
    found = next((checkpoint[k] for k in (*param_keys, *WRAPPER_KEYS) if _is_state_dict(checkpoint.get(k))), None)
    if found is None:
        if not _is_state_dict(checkpoint):
            raise OfficialImportError(f"no state dict found (top-level keys: {', '.join(map(str, list(checkpoint)[:6]))})")
        found = checkpoint
    sd = dict(found)
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
    if pickled:
        sd = PickledModuleStateDict(sd)
        sd.pickled_class = pickled
    return sd


def find_importers(checkpoint):
    """``[(importer, state_dict)]`` for every registered importer whose detection matches."""
    matches = []
    for importer in IMPORTERS.values():
        try:
            sd = official_state_dict(checkpoint, importer.param_keys)
            if importer.detect(sd):
                matches.append((importer, sd))
        except (OfficialImportError, KeyError, IndexError, AttributeError, TypeError, ValueError):
            continue
    return matches


def get_importer(arch):
    """The importer registered for ``arch``; an unknown name lists the available ones."""
    if arch not in IMPORTERS:
        raise OfficialImportError(f"no importer for architecture '{arch}'; available importers: "
                                  f"{', '.join(sorted(IMPORTERS))}")
    return IMPORTERS[arch]


# ----------------------------------------------------------------------------- helpers for importers

def top_level_names(state_dict):
    """The set of first key components (``{'head', 'backbone', 'transition'}`` for LRSRN)."""
    return {k.split('.', 1)[0] for k in state_dict}


def count_indexed(state_dict, prefix):
    """Number of distinct ``i`` in keys ``<prefix>.<i>.…`` (e.g. blocks of an ``nn.Sequential``)."""
    found = {k[len(prefix) + 1:].split('.')[0] for k in state_dict if k.startswith(prefix + '.')}
    return len([i for i in found if i.isdigit()])


def infer_upscale(out_channels, num_out_ch, shuffle_per_scale=1):
    """Scale s from a PixelShuffle conv with ``num_out_ch * (shuffle_per_scale * s)**2`` outputs."""
    ratio, rest = divmod(out_channels, num_out_ch)
    root = math.isqrt(ratio)
    if rest or root * root != ratio or root % shuffle_per_scale:
        raise OfficialImportError(f'{out_channels} output channels do not fit {num_out_ch} image channels times a '
                                  f'square pixel-shuffle factor')
    return root // shuffle_per_scale
