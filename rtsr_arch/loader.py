"""One loader for every checkpoint, one writer for this package's checkpoints.

:func:`load_model` accepts

- this package's checkpoints: ``.pth`` (``{'params': ..., 'params_ema': ..., 'network_g': ...}``,
  BasicSR's layout plus the options that rebuild the network) or ``.safetensors`` (the options in
  the file's metadata); a plain BasicSR checkpoint with the ``.yml`` written beside it (its
  ``network_g``, ``path.param_key_g``) or with ``network_opt`` given;
- official third-party checkpoints, auto-detected by the importers of
  :mod:`rtsr_arch.archs.official`;

and returns the network in eval mode, reparameterized unless asked otherwise. Every tool, the
demo, the latency tool and KDModel's teacher load through it. :func:`save_model` writes ``.pth``
or ``.safetensors`` (by suffix), atomically, with the options embedded.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save as safetensors_bytes
from safetensors.torch import safe_open

from .archs.official import IMPORTERS, OfficialImportError, find_importers, get_importer, official_state_dict
from .archs.rep import reparameterize
from .utils.checkpoint import CheckpointError, atomic_write, load_checkpoint, load_state_dict_checked
from .utils.options import build_network, load_options

__all__ = ['load_model', 'save_model', 'save_checkpoint', 'resolve_checkpoint', 'import_checkpoint', 'import_official',
           'Resolved', 'read_checkpoint', 'network_opt_of']

PARAM_KEYS = ('params_ema', 'params')  # this package's checkpoints: the EMA weights first


@dataclass
class Resolved:
    """A checkpoint understood: the options that build its network, its weights in this
    package's layout, how it was recognised (``how``) and notes for the user."""
    network_opt: dict
    state_dict: dict
    how: str
    notes: list = field(default_factory=list)


def read_checkpoint(path):
    """``(checkpoint, metadata)`` of a ``.pth``/``.pt``/``.ckpt`` (torch, weights only, on CPU) or
    ``.safetensors`` file (its tensors and string metadata); one-line errors."""
    path = Path(path)
    if path.suffix != '.safetensors':
        return load_checkpoint(path), {}
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    try:
        with safe_open(str(path), 'pt') as f:
            metadata = f.metadata() or {}
        return load_safetensors(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f'{path}: cannot be read as safetensors ({str(exc).splitlines()[0]})') from exc


def network_opt_of(model):
    """The ``network_g`` options that rebuild ``model`` in its current form."""
    opt = getattr(model, 'network_opt', None)
    if opt is None:
        raise CheckpointError(f'{type(model).__name__} does not record its network options (not an rtsr_arch '
                              f'architecture); pass network_opt')
    return opt


def _param_key(checkpoint, wanted, source):
    if wanted is not None:
        if wanted not in checkpoint:
            found = ', '.join(k for k in checkpoint if isinstance(checkpoint[k], dict)) or 'none'
            raise CheckpointError(f"{source}: no '{wanted}' entry (entries holding weights: {found})")
        return wanted
    return next((k for k in PARAM_KEYS if k in checkpoint), None)


def _package_weights(checkpoint, param_key, source):
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{source}: expected a state dict, got {type(checkpoint).__name__}')
    key = _param_key(checkpoint, param_key, source)
    try:
        return official_state_dict(checkpoint[key] if key else checkpoint, ())
    except OfficialImportError as exc:
        raise CheckpointError(f'{source}: {exc}') from exc


def resolve_checkpoint(path, network_opt=None, param_key=None, arch='auto', overrides=None):
    """Understand the checkpoint at ``path`` without building anything: see :func:`load_model`.

    Order: ``network_opt`` given; options embedded by :func:`save_model`; the ``.yml`` beside the
    file (``network_g``, ``path.param_key_g``); else an official importer (``arch``, or the unique
    one whose detection matches with ``arch='auto'``)."""
    path = Path(path)
    source = str(path)
    checkpoint, metadata = read_checkpoint(path)
    yml = path.with_suffix('.yml')
    if network_opt is not None:
        return Resolved(dict(network_opt), _package_weights(checkpoint, param_key, source), 'given network options')
    if 'network_g' in metadata:
        try:
            opt = json.loads(metadata['network_g'])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f'{source}: metadata network_g is not JSON ({exc.msg})') from exc
        return Resolved(opt, _package_weights(checkpoint, None, source), 'options in the safetensors metadata')
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('network_g'), dict):
        return Resolved(dict(checkpoint['network_g']), _package_weights(checkpoint, param_key, source),
                        'options embedded in the checkpoint')
    if yml.is_file() and yml != path:
        options = load_options(yml)
        if isinstance(options.get('network_g'), dict):
            key = param_key or (options.get('path') or {}).get('param_key_g')
            return Resolved(dict(options['network_g']), _package_weights(checkpoint, key, source),
                            f'network_g of {yml.name}')
    result, importer = import_checkpoint(checkpoint, arch, overrides, source, param_key)
    return Resolved(result.network_opt, result.state_dict, f'official {importer} checkpoint', result.notes)


def import_checkpoint(checkpoint, arch='auto', overrides=None, source='checkpoint', param_key=None):
    """Run the importer for ``arch`` (``'auto'``: the unique one whose detection matches) on an
    official ``checkpoint``; returns ``(OfficialImport, arch)``. ``param_key`` picks the entry of
    a checkpoint holding several weight sets instead of the importer's preference. No match,
    several matches and importer failures are one-line :class:`OfficialImportError`."""
    overrides = dict(overrides or {})
    if param_key is not None:
        if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get(param_key), dict)):
            raise OfficialImportError(f"{source}: no '{param_key}' entry holding weights")
        checkpoint = checkpoint[param_key]
    if arch == 'auto':
        matches = find_importers(checkpoint)
        if not matches:
            raise OfficialImportError(f'{source}: no importer recognises this checkpoint (importers: '
                                      f"{', '.join(sorted(IMPORTERS))}); if it is this package's, pass its options "
                                      f'(the .yml written beside it, or --opt)')
        if len(matches) > 1:
            raise OfficialImportError(f"{source}: several importers match ({', '.join(m.arch for m, _ in matches)}); "
                                      f'choose one with --arch')
        importer, sd = matches[0]
    else:
        importer = get_importer(arch)
        try:
            sd = official_state_dict(checkpoint, importer.param_keys)
        except OfficialImportError as exc:
            raise OfficialImportError(f'{source}: {exc}') from exc
    try:
        return importer.convert(sd, overrides), importer.arch
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        text = str(exc).strip().splitlines()
        raise OfficialImportError(f'{source}: cannot be imported as {importer.arch}: '
                                  f'{text[0] if text else type(exc).__name__}') from exc


def import_official(checkpoint, arch='auto', overrides=None, source='checkpoint', param_key=None):
    """Import an official ``checkpoint`` (a loaded object) and build its network, loaded strictly.
    Returns ``(model, OfficialImport, arch)``."""
    result, arch = import_checkpoint(checkpoint, arch, overrides, source, param_key)
    model = build_network(result.network_opt, source=f'{source}: network_g')
    load_state_dict_checked(model, result.state_dict, source)
    return model, result, arch


def load_model(path, deploy=True, device='cpu', dtype=torch.float32, network_opt=None, param_key=None,
               arch='auto', overrides=None):
    """The network stored at ``path``, loaded strictly, in eval mode, on ``device`` in ``dtype``.

    Args:
        path: a checkpoint of this package (``.pth``/``.safetensors``), a BasicSR checkpoint with
            its ``.yml`` beside it, or an official checkpoint (auto-detected).
        deploy: True (default): reparameterized (fused in float64, then cast); None: as stored;
            False: the training form (a deploy-form checkpoint is then an error).
        network_opt: ``network_g`` options to use instead of what the file says.
        param_key: which entry (``params``, ``params_ema``, ...) holds the weights (default: the
            ``.yml``'s ``path.param_key_g``, else ``params_ema`` when present, else ``params``).
        arch, overrides: importer choice and ``key=value`` overrides for official checkpoints.
    """
    resolved = resolve_checkpoint(path, network_opt, param_key, arch, overrides)
    # loaded and fused in float64 (exact for any stored precision), cast once at the end
    model = build_network(resolved.network_opt, source=f'{path}: network_g').double()
    load_state_dict_checked(model, resolved.state_dict, str(path))
    if deploy is False and resolved.network_opt.get('deploy'):
        raise CheckpointError(f'{path}: is in deploy form; its training form cannot be recovered')
    if deploy:
        reparameterize(model)
    return model.to(device=device, dtype=dtype).eval()


def save_model(model, path, network_opt=None):
    """Write ``model``'s weights with the options that rebuild it (default ``model.network_opt``)
    to ``path``; see :func:`save_checkpoint`."""
    return save_checkpoint(path, model.state_dict(), network_opt or network_opt_of(model))


def save_checkpoint(path, params, network_opt, extra_params=None):
    """Write the state dict ``params`` and its ``network_opt`` to ``path`` atomically:
    ``.safetensors`` (the tensors, with ``network_g`` as JSON in the metadata) or else torch
    ``.pth`` (``{'params': ..., **extra_params, 'network_g': ...}``, which BasicSR reads as usual).
    ``extra_params``: other state dicts by key (``params_ema``), ``.pth`` only."""
    path = Path(path)
    opt = dict(network_opt)
    state = {k: v.detach().cpu().contiguous() for k, v in params.items()}
    if path.suffix == '.safetensors':
        if extra_params:
            raise CheckpointError(f'{path}: a safetensors file holds one set of weights; '
                                  f"cannot add {', '.join(extra_params)}")
        data = safetensors_bytes(state, metadata={'network_g': json.dumps(opt), 'format': 'rtsr_arch'})
        return atomic_write(path, lambda f: f.write(data))
    payload = {'params': state, **(extra_params or {}), 'network_g': opt}
    return atomic_write(path, lambda f: torch.save(payload, f))
