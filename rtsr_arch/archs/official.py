"""Importers of official third-party checkpoints, one per architecture, registered by arch name.

An importer takes the object ``torch.load`` returned for an official file and the user's
``--set`` overrides, and returns a :class:`OfficialImport`: a state dict in this package's layout
and the ``network_g`` options, of which everything the weights determine (channels, blocks,
scale, form) is inferred from them. Used by ``tools/convert_official.py``.

:func:`import_official` runs an importer and loads its result strictly into the built network;
:func:`parse_overrides` reads ``key=value`` overrides; :func:`save_basicsr_export` writes the
BasicSR checkpoint and the matching ``network_g`` / ``path`` options.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

__all__ = ['OfficialImport', 'OfficialImportError', 'OFFICIAL_IMPORTERS', 'register_official_importer',
           'strip_prefix', 'count_indexed', 'unwrap_state_dict', 'infer_upscale', 'parse_overrides',
           'get_official_importer', 'import_official', 'save_basicsr_export']

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


class OfficialImportError(ValueError):
    """An official checkpoint that cannot be imported as asked; the message is one line."""


def _one_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_overrides(items):
    """``['key=value', ...]`` -> dict, each value parsed with ``yaml.safe_load`` (so ``gelu`` is a
    str, ``4`` an int, ``true`` a bool). ``type`` cannot be overridden: the importer decides it."""
    overrides = {}
    for item in items or ():
        key, sep, text = item.partition('=')
        key = key.strip()
        if not sep or not key.isidentifier():
            raise OfficialImportError(f"override '{item}': expected key=value with a Python identifier as key")
        if key == 'type':
            raise OfficialImportError(f"override '{item}': 'type' is set by the importer "
                                      f"(choose it with the arch name)")
        try:
            overrides[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise OfficialImportError(f"override '{item}': invalid YAML value "
                                      f"({getattr(exc, 'problem', None) or _one_line(exc)})") from exc
    return overrides


def get_official_importer(arch):
    """The importer registered for ``arch``; an unknown name lists the available ones."""
    if arch not in OFFICIAL_IMPORTERS:
        raise OfficialImportError(f"no importer for architecture '{arch}'; available importers: "
                                  f"{', '.join(sorted(OFFICIAL_IMPORTERS))}")
    return OFFICIAL_IMPORTERS[arch]


def import_official(arch, checkpoint, overrides=None, source='checkpoint'):
    """Run the importer registered for ``arch`` on a loaded official ``checkpoint``, build the
    network from the inferred options and load the converted weights strictly.

    Returns ``(model, OfficialImport)``. Every failure (unknown arch, foreign checkpoint, options
    the network rejects, missing/unexpected keys or shape mismatches) is a ``ValueError`` with a
    one-line message: :class:`OfficialImportError`, ``OptionsError`` or ``CheckpointError``.
    """
    from rtsr_arch.utils.checkpoint import load_state_dict_checked
    from rtsr_arch.utils.options import build_network

    importer = get_official_importer(arch)
    try:
        result = importer(checkpoint, dict(overrides or {}))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise OfficialImportError(f'{source}: cannot be imported as {arch}: {_one_line(exc)}') from exc
    model = build_network(result.network_opt, source=f'{source}: network_g')
    load_state_dict_checked(model, result.state_dict, source)
    return model, result


def save_basicsr_export(model, network_opt, out_path):
    """Write ``out_path`` as a BasicSR checkpoint ``{'params': state_dict}`` and, beside it with
    the suffix ``.yml``, the options to use it: ``network_g`` (``network_opt``) and ``path``
    (``pretrain_network_g`` = absolute path of the checkpoint, ``param_key_g: params``,
    ``strict_load_g: true``). Both files are written atomically. Returns the ``.yml`` path."""
    from rtsr_arch.utils.checkpoint import atomic_save
    from rtsr_arch.utils.options import dump_options

    out_path = Path(out_path).absolute()
    yml_path = out_path.with_suffix('.yml')
    if yml_path == out_path:
        raise OfficialImportError(f'{out_path}: the checkpoint cannot have the .yml suffix of its option file')
    options = {'network_g': dict(network_opt),
               'path': {'pretrain_network_g': str(out_path), 'param_key_g': 'params', 'strict_load_g': True}}
    atomic_save({'params': model.state_dict()}, out_path)
    try:
        dump_options(options, yml_path)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return yml_path
