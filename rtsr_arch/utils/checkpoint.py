"""Checkpoint (and other file) IO with atomic writes and one-line errors."""
import os
import tempfile
from pathlib import Path

import torch

__all__ = ['atomic_write', 'atomic_save', 'load_checkpoint', 'load_state_dict_checked', 'CheckpointError']


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message is one line naming the problem."""


def atomic_write(path, write):
    """Write ``path`` atomically: ``write(f)`` fills a temporary binary file beside it, which is
    fsynced and renamed over ``path``; a reader (or a crash) sees the old file or the complete new
    one, never a truncated file. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
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


def atomic_save(obj, path):
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path, weights_only=True):
    """``torch.load`` on CPU, turning a missing or unreadable file into a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    try:
        return torch.load(path, map_location='cpu', weights_only=weights_only)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f'{path}: cannot be read as a torch checkpoint ({_reason(exc)})') from exc


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
