"""Checkpoint (and other file) IO with atomic writes and one-line errors, and a restricted reader
for checkpoints that torch's weights-only unpickler refuses (:func:`restricted_load`)."""
import collections
import copyreg
import io
import os
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

__all__ = ['atomic_write', 'atomic_save', 'orphaned_temporaries', 'load_checkpoint', 'load_state_dict_checked', 'CheckpointError',
           'restricted_load', 'PickledPlaceholder', 'module_state_dict', 'find_tensors']


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message is one line naming the problem."""


def atomic_write(path, write):
    """Write ``path`` atomically: ``write(f)`` fills a temporary binary file beside it, which is
    fsynced and renamed over ``path``; a reader (or a crash) sees the old file or the complete new
    one, never a truncated file. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_TMP_SUFFIX = '.tmp'


def orphaned_temporaries(folder):
    """The temporary files :func:`atomic_write` leaves in ``folder`` when killed mid-write
    (``.<name>.<random>.tmp``); only call it when no write can be in progress there."""
    folder = Path(folder)
    return sorted(folder.glob(f'.*{_TMP_SUFFIX}')) if folder.is_dir() else []


def atomic_save(obj, path):
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path, weights_only=True):
    """``torch.load`` on CPU, turning a missing or unreadable file into a one-line error.

    With ``weights_only=True`` (the default) the file is read by torch's weights-only unpickler;
    if that refuses it because the pickle names classes or functions outside torch's allowlist (a
    PyTorch-Lightning checkpoint's hyper-parameters or optimizer, a whole pickled ``nn.Module``),
    the file is read again by :func:`restricted_load`, which allows only the globals that rebuild
    tensors (and plain containers) and replaces every other global by an inert
    :class:`PickledPlaceholder`: no code from the file is ever run, every tensor is recovered.
    ``weights_only=False`` is torch's full unpickler, for trusted files only (this package's own
    training states)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    try:
        return torch.load(path, map_location='cpu', weights_only=weights_only)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler refused a global (or a corrupt file)
        if not weights_only or not zipfile.is_zipfile(path):
            raise CheckpointError(f'{path}: cannot be read as a torch checkpoint ({_reason(exc)})') from exc
        try:
            return restricted_load(path)
        except Exception as retry:
            raise CheckpointError(f'{path}: cannot be read as a torch checkpoint ({_reason(exc)}; restricted '
                                  f'reader: {_reason(retry)})') from retry
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f'{path}: cannot be read as a torch checkpoint ({_reason(exc)})') from exc


# ----------------------------------------------------------------------------- restricted reader

class PickledPlaceholder:
    """Inert stand-in for a class or function that :func:`restricted_load` does not allow.

    Each foreign global ``module.name`` becomes its own subclass (``pickled_name`` holds the
    name); calling it or creating it records the arguments instead of running anything. What the
    pickle then stores into the object is kept: its state (``__setstate__``: a dict state also
    lands in ``__dict__``, so a pickled ``nn.Module``'s ``_parameters``, ``_buffers`` and
    ``_modules`` are attributes, see :func:`module_state_dict`), dict items (``pickled_items``)
    and list items (``pickled_list``). Calling an instance returns another placeholder."""

    pickled_name = '?'

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, 'pickled_args', args)
        object.__setattr__(obj, 'pickled_kwargs', kwargs)
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        object.__setattr__(self, 'pickled_state', state)
        slots = None
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state, slots = state
        for part in (state, slots):
            if isinstance(part, dict):
                self.__dict__.update({k: v for k, v in part.items() if isinstance(k, str)})

    def __setitem__(self, key, value):
        self.__dict__.setdefault('pickled_items', {})[key] = value

    def append(self, value):
        self.__dict__.setdefault('pickled_list', []).append(value)

    def extend(self, values):
        self.__dict__.setdefault('pickled_list', []).extend(values)

    def __call__(self, *args, **kwargs):
        return _placeholder_type(f'{self.pickled_name}()')(*args, **kwargs)

    def __repr__(self):
        return f'<placeholder for {self.pickled_name}>'


_PLACEHOLDER_ATTRS = ('pickled_args', 'pickled_kwargs', 'pickled_state', 'pickled_items', 'pickled_list')


def _placeholder_type(full_name):
    return type(full_name.rsplit('.', 1)[-1], (PickledPlaceholder,),
                {'pickled_name': full_name, '__module__': 'rtsr_arch.utils.checkpoint.placeholders'})


class _StorageType:
    """What a pickled storage class (``torch.FloatStorage``, ...) resolves to: its dtype only."""

    def __init__(self, name):
        self.dtype = torch.serialization.StorageType(name).dtype


def _typed_storage(storage):
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f'a tensor refers to {type(storage).__name__}, not to a storage of the file')
    return storage


def _ints(values, what):
    if not isinstance(values, (tuple, list)) or not all(type(v) is int for v in values):
        raise pickle.UnpicklingError(f'tensor {what} must be ints, got {values!r}')
    return tuple(values)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return torch._utils._rebuild_tensor(_typed_storage(storage), _ints([storage_offset], 'offset')[0],
                                        _ints(size, 'size'), _ints(stride, 'stride'))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    # hooks are never serialized by torch (an empty OrderedDict); stored ones would be placeholders
    tensor = _rebuild_tensor(storage, storage_offset, size, stride)
    tensor.requires_grad = bool(requires_grad)
    if isinstance(metadata, dict) and metadata and all(isinstance(v, bool) for v in metadata.values()):
        torch._utils.set_tensor_metadata(tensor, metadata)
    return tensor


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f'a parameter wraps {type(data).__name__}, not a tensor')
    return torch.nn.Parameter(data, bool(requires_grad))


def _rebuild_from_type_v2(func, new_type, args, state):
    """Tensor subclasses and tensors with Python attributes: the plain tensor (or Parameter);
    the subclass and the attributes are dropped."""
    result = func(*args)
    if isinstance(result, torch.Tensor) and new_type is torch.nn.Parameter:
        return torch.nn.Parameter(result, result.requires_grad)
    return result


_SAFE_TYPES = (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes, bytearray, slice, range,
               collections.OrderedDict, collections.defaultdict, collections.Counter, collections.deque,
               torch.Size, torch.device)


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocols 0 and 1) for placeholders and the allowed types only."""
    if isinstance(cls, type) and issubclass(cls, PickledPlaceholder):
        obj = cls.__new__(cls)
        if state is not None:
            obj.pickled_base_state = state
        return obj
    if cls in _SAFE_TYPES and (base is object or base in _SAFE_TYPES):
        return copyreg._reconstructor(cls, base, state)
    raise pickle.UnpicklingError(f'cannot reconstruct {cls!r} from {base!r}')


_ALLOWED_GLOBALS = {
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch._tensor', '_rebuild_from_type_v2'): _rebuild_from_type_v2,
    ('torch.nn.parameter', 'Parameter'): torch.nn.Parameter,
    ('torch', 'Size'): torch.Size,
    ('torch', 'device'): torch.device,
    ('copyreg', '_reconstructor'): _reconstructor,
    **{('collections', t.__name__): t for t in _SAFE_TYPES if t.__module__ == 'collections'},
    **{('builtins', t.__name__): t for t in _SAFE_TYPES if t.__module__ == 'builtins'},
}
_PY2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`_ALLOWED_GLOBALS`, storage classes (to their dtype), and torch's
    dtype/layout/memory-format constants; every other global becomes a placeholder type.
    ``persistent_load`` reads storages from the zip archive."""

    def __init__(self, file, archive, prefix):
        super().__init__(file, encoding='utf-8')
        self._archive, self._prefix = archive, prefix
        self._storages = {}
        self._placeholders = {}

    def find_class(self, module, name):
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[module, name]
        if module == 'torch' and name.endswith('Storage'):
            try:
                return _StorageType(name)
            except (KeyError, AttributeError, RuntimeError):
                pass
        if module == 'torch' and '.' not in name:
            value = getattr(torch, name, None)
            if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
                return value
        key = f'{module}.{name}'
        if key not in self._placeholders:
            self._placeholders[key] = _placeholder_type(key)
        return self._placeholders[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5):
            raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
        kind, storage_type, key, _location, numel = pid
        kind = kind.decode('ascii') if isinstance(kind, bytes) else kind
        if kind != 'storage' or not isinstance(storage_type, _StorageType) or not isinstance(key, str) \
                or type(numel) is not int:
            raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
        if key not in self._storages:
            name = f'{self._prefix}data/{key}'
            try:
                raw = self._archive.read(name)
            except KeyError:
                raise pickle.UnpicklingError(f'storage record {name} is missing') from None
            if len(raw) != numel * storage_type.dtype.itemsize:
                raise pickle.UnpicklingError(f'storage record {name} has {len(raw)} bytes, '
                                             f'expected {numel} x {storage_type.dtype}')
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            self._storages[key] = torch.storage.TypedStorage(wrap_storage=data.untyped_storage(),
                                                             dtype=storage_type.dtype, _internal=True)
        storage = self._storages[key]
        if storage.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f'storage {key} is read as two dtypes')
        return storage


def restricted_load(path):
    """Read a ``torch.save`` file (zip format, torch >= 1.6) without running any code from it.

    The pickle is read by a restricted unpickler that resolves only the globals that rebuild
    tensors and parameters (``torch._utils._rebuild_tensor{,_v2}``, ``_rebuild_parameter``, ...,
    each re-checked: a tensor must view a storage of the file, hooks are dropped), storage types,
    torch's dtype constants and plain containers (dict, list, tuple, set, OrderedDict, ...);
    every other global (a Lightning hyper-parameter class, an optimizer, a module class,
    ``os.system``, ``builtins.getattr``, ...) becomes an inert :class:`PickledPlaceholder` that
    records what the pickle stores into it. Storages are read from the archive onto the CPU
    whatever device they were saved from. Tensors are then reachable through the returned
    containers and the placeholders' attributes (:func:`find_tensors`, :func:`module_state_dict`).

    Legacy (non-zip) files, TorchScript archives and big-endian files are refused with one line
    (:func:`load_checkpoint` does not retry legacy files: torch's own refusal names the global).
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise pickle.UnpicklingError('not a zip-format torch checkpoint (the restricted reader needs torch >= 1.6 '
                                     'files)')
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith('data.pkl') and n.count('/') <= 1]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f'expected one data.pkl record, found {len(pickles)}')
        prefix = pickles[0][:-len('data.pkl')]
        if f'{prefix}constants.pkl' in names:
            raise pickle.UnpicklingError('a TorchScript archive, not a checkpoint (use torch.jit.load on trusted '
                                         'files)')
        if f'{prefix}byteorder' in names and archive.read(f'{prefix}byteorder').decode().strip() != sys.byteorder:
            raise pickle.UnpicklingError('saved with another byte order')
        data = archive.read(pickles[0])
        return _RestrictedUnpickler(io.BytesIO(data), archive, prefix).load()


def module_state_dict(obj, prefix=''):
    """The state dict of a pickled ``nn.Module`` read by :func:`restricted_load` (a placeholder
    whose ``_parameters``, ``_buffers`` and ``_modules`` the pickle restored): parameters and
    persistent buffers with the keys ``nn.Module.state_dict`` gives, recursively."""
    attrs = vars(obj)
    if not all(isinstance(attrs.get(k), dict) for k in ('_parameters', '_buffers', '_modules')):
        raise ValueError(f'{obj!r} is not a pickled nn.Module')
    out = collections.OrderedDict()
    skip = attrs.get('_non_persistent_buffers_set') or set()
    for name, value in list(attrs['_parameters'].items()) + [
            (k, v) for k, v in attrs['_buffers'].items() if k not in skip]:
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach() if isinstance(value, torch.nn.Parameter) else value
    for name, child in attrs['_modules'].items():
        if child is not None:
            out.update(module_state_dict(child, f'{prefix}{name}.'))
    return out


def find_tensors(obj, prefix=''):
    """``{path: tensor}`` of every tensor reachable from ``obj``: dict values (path components are
    the keys), list/tuple/set items (their indices), and placeholders' attributes, arguments,
    state and items; a pickled ``nn.Module`` contributes its :func:`module_state_dict`."""
    found, seen = collections.OrderedDict(), set()

    def walk(value, path):
        if isinstance(value, torch.Tensor):
            found.setdefault(path, value)
            return
        if id(value) in seen:
            return
        seen.add(id(value))
        join = (lambda k: f'{path}.{k}') if path else str
        if isinstance(value, PickledPlaceholder):
            try:
                for k, v in module_state_dict(value).items():
                    found.setdefault(join(k), v)
                return
            except ValueError:
                pass
            attrs = {k: v for k, v in vars(value).items() if k not in _PLACEHOLDER_ATTRS}
            walk(attrs, path)
            for k in ('pickled_args', 'pickled_kwargs', 'pickled_items', 'pickled_list'):
                walk(getattr(value, k, None), join(k))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, join(k))
        elif isinstance(value, (list, tuple, set, frozenset, collections.deque)):
            for i, v in enumerate(value):
                walk(v, join(i))

    walk(obj, prefix)
    return found


def _reason(exc):
    """The informative line of torch's (often multi-line) load error."""
    text = str(exc)
    marker = 'WeightsUnpickler error:'
    if marker in text:  # weights-only unpickling: the cause follows the marker
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    return reason if len(reason) <= 160 else reason[:157] + '...'


def _sample(keys, n=4):
    keys = sorted(keys)
    more = f' (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def load_state_dict_checked(model, state_dict, source):
    """Strict ``load_state_dict`` whose failure is one line: how many keys are missing and
    unexpected (with examples) and which shapes differ, prefixed by ``source``."""
    own = model.state_dict()
    missing = own.keys() - state_dict.keys()
    unexpected = state_dict.keys() - own.keys()
    shapes = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}' for k in own.keys() & state_dict.keys()
              if tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing keys ({_sample(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys ({_sample(unexpected)})')
    if shapes:
        problems.append(f'{len(shapes)} shape mismatches ({_sample(shapes, 2)})')
    if problems:
        raise CheckpointError(f"{source}: does not match {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)
    return model
