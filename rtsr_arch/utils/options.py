"""Reading BasicSR option files and checking them before BasicSR runs, with one-line errors."""
import difflib
import inspect
from pathlib import Path

import yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from ..archs.contract import SRArch, check_arguments
from .checkpoint import atomic_write

__all__ = ['OptionsError', 'load_options', 'dump_options', 'check_options', 'build_network', 'parse_overrides',
           'REGISTRIES']


class OptionsError(ValueError):
    """A problem in an option file; the message is one line naming the file, key and value."""


def _registries():
    return {'architecture': ARCH_REGISTRY, 'dataset': DATASET_REGISTRY, 'loss': LOSS_REGISTRY,
            'metric': METRIC_REGISTRY, 'model': MODEL_REGISTRY}


REGISTRIES = ('architecture', 'dataset', 'loss', 'metric', 'model')


def load_options(path):
    """The YAML mapping at ``path``; a missing file or bad YAML is a one-line :class:`OptionsError`."""
    path = Path(path)
    if not path.is_file():
        raise OptionsError(f'{path}: no such option file')
    try:
        opt = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = f' (line {mark.line + 1})' if mark else ''
        raise OptionsError(f'{path}: invalid YAML{where}: {getattr(exc, "problem", exc)}') from exc
    if not isinstance(opt, dict):
        raise OptionsError(f'{path}: expected a mapping of options at the top level')
    return opt


def dump_options(opt, path):
    """Write ``opt`` as YAML (keys in insertion order), atomically (temporary file, then rename)."""
    text = yaml.safe_dump(opt, sort_keys=False, default_flow_style=False)
    atomic_write(path, lambda f: f.write(text.encode()))


def _check_type(kind, name, where):
    registry = _registries()[kind]
    if name in registry:
        return registry.get(name)
    names = sorted(registry.keys())
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ''
    raise OptionsError(f"{where}: '{name}' is not a registered {kind}{hint}; registered: {', '.join(names)}")


def _check_kwargs(cls, kwargs, where):
    params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise OptionsError(f"{where}: {cls.__name__} has no option {', '.join(map(repr, unknown))}; "
                           f"accepted: {', '.join(params)}")
    if isinstance(cls, type) and issubclass(cls, SRArch):  # declared types, ranges and presets
        try:
            check_arguments(cls, kwargs)
        except ValueError as exc:
            raise OptionsError(f'{where}: {exc}') from exc


def check_options(opt, source):
    """Check every ``type:`` of an option dict against BasicSR's registries (and network keywords
    against the constructor) so a typo fails in one line before BasicSR starts."""
    if 'model_type' in opt:
        _check_type('model', opt['model_type'], f'{source}: model_type')
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict):
            if 'type' not in value:
                raise OptionsError(f'{source}: {key}: missing key "type"')
            cls = _check_type('architecture', value['type'], f'{source}: {key}.type')
            _check_kwargs(cls, {k: v for k, v in value.items() if k != 'type'}, f'{source}: {key}')
    for name, dataset in (opt.get('datasets') or {}).items():
        if isinstance(dataset, dict) and 'type' in dataset:
            _check_type('dataset', dataset['type'], f'{source}: datasets.{name}.type')
    for name, loss in (opt.get('train') or {}).items():
        if name.endswith('_opt') and isinstance(loss, dict) and 'type' in loss:
            _check_type('loss', loss['type'], f'{source}: train.{name}.type')
    for i, loss in enumerate((opt.get('train') or {}).get('losses') or []):
        if not isinstance(loss, dict) or 'type' not in loss:
            raise OptionsError(f'{source}: train.losses[{i}]: expected a mapping with a "type"; got {loss!r}')
        _check_type('loss', loss['type'], f'{source}: train.losses[{i}].type')
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(metric, dict) and 'type' in metric:
            _check_type('metric', metric['type'], f'{source}: val.metrics.{name}.type')


def build_network(network_opt, source='network_g'):
    """Build a registered architecture from a ``network_g``-style dict, with one-line errors."""
    opt = dict(network_opt)
    if 'type' not in opt:
        raise OptionsError(f'{source}: missing key "type"')
    cls = _check_type('architecture', opt.pop('type'), f'{source}.type')
    _check_kwargs(cls, opt, source)
    try:
        return cls(**opt)
    except (TypeError, ValueError) as exc:
        raise OptionsError(f'{source}: {exc}') from exc


def parse_overrides(items):
    """``['key=value', ...]`` -> dict, each value parsed with ``yaml.safe_load`` (so ``gelu`` is a
    str, ``4`` an int, ``true`` a bool). ``type`` cannot be overridden."""
    overrides = {}
    for item in items or ():
        key, sep, text = item.partition('=')
        key = key.strip()
        if not sep or not key.isidentifier():
            raise OptionsError(f"override '{item}': expected key=value with a Python identifier as key")
        if key == 'type':
            raise OptionsError(f"override '{item}': the architecture is not an override (choose it with --arch)")
        try:
            overrides[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise OptionsError(f"override '{item}': invalid YAML value "
                               f"({getattr(exc, 'problem', None) or str(exc).splitlines()[0]})") from exc
    return overrides
