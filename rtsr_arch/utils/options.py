"""Reading BasicSR option files and checking them before BasicSR runs, with one-line errors."""
import difflib
import inspect
from pathlib import Path

import yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from ..archs.contract import SRArch, check_arguments
from .checkpoint import atomic_write

__all__ = ['OptionsError', 'load_options', 'dump_options', 'check_options', 'check_structure', 'network_upscale',
           'build_network', 'parse_overrides', 'REGISTRIES']


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


def dump_options(opt, path, header=None):
    """Write ``opt`` as YAML (keys in insertion order), atomically (temporary file, then rename);
    ``header``: lines written first as ``#`` comments."""
    text = yaml.safe_dump(opt, sort_keys=False, default_flow_style=False)
    if header:
        text = ''.join(f'# {line}'.rstrip() + '\n' for line in header) + '\n' + text
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


def check_options(opt, source, phase=None):
    """Check an option dict before BasicSR starts, so a mistake fails in one line naming the key:
    its sections, types and ranges (:func:`check_structure`), every ``type:`` against BasicSR's
    registries, network keywords against the architecture's declared signature, and ``scale``
    against the network's ``upscale``. ``phase``: ``'train'`` or ``'test'`` (default: ``'train'``
    when there is a ``datasets.train``)."""
    check_structure(opt, source, phase)
    if 'model_type' in opt:
        _check_type('model', opt['model_type'], f'{source}: model_type')
    for key, value in opt.items():
        if key.startswith('network_') and isinstance(value, dict):
            if 'type' not in value:
                raise OptionsError(f'{source}: {key}: missing key "type"')
            cls = _check_type('architecture', value['type'], f'{source}: {key}.type')
            _check_kwargs(cls, {k: v for k, v in value.items() if k != 'type'}, f'{source}: {key}')
    upscale = network_upscale(opt['network_g']) if isinstance(opt.get('network_g'), dict) else None
    if upscale is not None and opt.get('scale') != upscale:
        raise OptionsError(f"{source}: scale: {opt.get('scale')!r} contradicts network_g ({opt['network_g']['type']} "
                           f'upscale {upscale}); the two must be equal')
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


def network_upscale(network_opt):
    """The ``upscale`` a ``network_g`` mapping builds (presets and the constructor's default
    resolved), or None when the architecture has no ``upscale`` keyword."""
    cls = ARCH_REGISTRY.get(network_opt['type'])
    kwargs = {k: v for k, v in network_opt.items() if k != 'type'}
    if isinstance(cls, type) and issubclass(cls, SRArch):
        kwargs = check_arguments(cls, kwargs)
    param = inspect.signature(cls).parameters.get('upscale')
    if param is None:
        return None
    return kwargs.get('upscale', param.default)


# ----------------------------------------------------------------------------- sections, types, ranges

_ANY = object()
_INT, _NUMBER, _STR, _BOOL, _MAP = 'an int', 'a number', 'a string', 'true or false', 'a mapping'
_WHOLE = 'a whole number'  # an int, or a float such as BasicSR's `!!float 5e3`


def _is(kind, value):
    if kind is _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is _WHOLE:
        return _is(_INT, value) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, {_STR: str, _BOOL: bool, _MAP: dict}[kind])


def _field(node, key, kind, where, required=True, minimum=None, choices=None):
    """``node[key]`` checked: present (if ``required``), of ``kind``, ``>= minimum``, or one of
    ``choices`` (accepted besides ``kind``); returns the value (None when absent)."""
    if key not in node or node[key] is None:
        if required:
            raise OptionsError(f'{where}{key}: missing; expected {kind}')
        return None
    value = node[key]
    if choices is not None and value in choices:
        return value
    alternatives = f" or {' or '.join(map(repr, choices))}" if choices else ''
    if not _is(kind, value):
        hint = " (write numbers like 5e-4 as !!float 5e-4 or 0.0005: YAML reads 5e-4 as text)" \
            if kind is _NUMBER and isinstance(value, str) else ''
        raise OptionsError(f'{where}{key}: {value!r} is not {kind}{alternatives}{hint}')
    if minimum is not None and value < minimum:
        raise OptionsError(f'{where}{key}: {value!r}: expected {kind} >= {minimum}{alternatives}')
    return value


def check_structure(opt, source, phase=None):
    """The sections BasicSR's pipelines read, with their types and ranges: a missing section, a
    string where a number or boolean belongs, a batch or crop size of 0, a negative
    ``total_iter``, ... are one-line :class:`OptionsError` naming the key and what was expected."""
    datasets = opt.get('datasets')
    phase = phase or ('train' if isinstance(datasets, dict) and 'train' in datasets else 'test')
    top = f'{source}: '
    _field(opt, 'name', _STR, top)
    _field(opt, 'model_type', _STR, top)
    _field(opt, 'scale', _INT, top, minimum=1)
    _field(opt, 'num_gpu', _INT, top, minimum=0, choices=('auto',))
    _field(opt, 'manual_seed', _INT, top, required=False, minimum=0)
    _field(opt, 'network_g', _MAP, top)
    _field(opt, 'path', _MAP, top)
    for key, value in opt['path'].items():
        if (key.startswith(('pretrain_network_', 'resume_state')) and value is not None
                and not isinstance(value, str)):
            raise OptionsError(f'{top}path.{key}: {value!r} is not a file path')
        if key.startswith('param_key_') and value is not None and not isinstance(value, str):
            raise OptionsError(f'{top}path.{key}: {value!r} is not a checkpoint entry name (params, params_ema)')
        if key.startswith('strict_load_'):
            _field(opt['path'], key, _BOOL, f'{top}path.', required=False)
    if not _field(opt, 'datasets', _MAP, top):
        raise OptionsError(f'{top}datasets: no dataset; expected at least one')
    for name, dataset in datasets.items():
        where = f'{top}datasets.{name}.'
        _field(datasets, name, _MAP, f'{top}datasets.')
        _field(dataset, 'name', _STR, where)
        _field(dataset, 'type', _STR, where)
        if phase == 'train' and name != 'train' and not name.startswith('val'):
            raise OptionsError(f"{top}datasets.{name}: a training run has 'train' and 'val*' datasets; "
                               f"rename it val_{name} or remove it")
        if name == 'train' and phase == 'train':
            _field(dataset, 'batch_size_per_gpu', _INT, where, minimum=1)
            _field(dataset, 'num_worker_per_gpu', _INT, where, required=False, minimum=0)
            _field(dataset, 'gt_size', _INT, where, required=False, minimum=1)
            _field(dataset, 'dataset_enlarge_ratio', _NUMBER, where, required=False, minimum=1)
            for flag in ('use_hflip', 'use_rot'):
                _field(dataset, flag, _BOOL, where, required=False)
    if phase == 'train':
        if 'train' not in datasets:
            raise OptionsError(f'{top}datasets.train: missing; rtsr-train needs a training set')
        train = _field(opt, 'train', _MAP, top)
        _field(train, 'total_iter', _WHOLE, f'{top}train.', minimum=1)
        _field(train, 'warmup_iter', _INT, f'{top}train.', required=False, minimum=-1)
        _field(train, 'ema_decay', _NUMBER, f'{top}train.', required=False, minimum=0)
        optim = _field(train, 'optim_g', _MAP, f'{top}train.')
        _field(optim, 'type', _STR, f'{top}train.optim_g.')
        if _field(optim, 'lr', _NUMBER, f'{top}train.optim_g.') <= 0:
            raise OptionsError(f"{top}train.optim_g.lr: {optim['lr']!r}: expected a number > 0")
        logger = _field(opt, 'logger', _MAP, top)
        _field(logger, 'print_freq', _WHOLE, f'{top}logger.', minimum=1)
        _field(logger, 'save_checkpoint_freq', _WHOLE, f'{top}logger.', minimum=1)
        if opt.get('val') is not None:
            _field(opt, 'val', _MAP, top)
            _field(opt['val'], 'val_freq', _WHOLE, f'{top}val.', minimum=1)
    else:
        _field(opt, 'val', _MAP, top)
    if opt.get('val') is not None:
        _field(opt['val'], 'save_img', _BOOL, f'{top}val.', required=phase == 'test')
        _field(opt['val'], 'metrics', _MAP, f'{top}val.', required=False)


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
