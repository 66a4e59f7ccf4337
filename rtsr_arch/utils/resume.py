"""Resuming BasicSR trainings on any device, from the newest readable state.

BasicSR 1.4.2's ``basicsr.train.load_resume_state`` maps the state onto
``torch.cuda.current_device()``, so ``--auto_resume`` crashes without a GPU. ``rtsr-train`` uses
:func:`load_resume_state` instead: the same choice of state (the highest iteration in
``training_states/`` with ``--auto_resume``, else ``path.resume_state``), loaded on the CPU
(optimizers move their state to the parameters' device when loaded), and the same
``check_resume`` path rewriting, except for networks the model never saves (a distillation
teacher keeps its ``pretrain_network_t``).

With ``--auto_resume`` a newest state that cannot be read (truncated, corrupt) is passed over
with one warning line for the previous readable one, and the temporary files of saves that a
kill interrupted (see :func:`~rtsr_arch.utils.checkpoint.orphaned_temporaries`) are removed from
``training_states/`` and ``models/`` (by rank 0, before any new save).
"""
import sys
from pathlib import Path

from basicsr.utils.misc import check_resume
from basicsr.utils.registry import MODEL_REGISTRY

from .checkpoint import CheckpointError, load_checkpoint, orphaned_temporaries

__all__ = ['saved_states', 'remove_orphans', 'load_resume_state']


def saved_states(training_states):
    """The ``<iter>.state`` files of the folder, newest (highest iteration) first."""
    folder = Path(training_states)
    states = [p for p in folder.glob('*.state') if p.stem.isdigit()] if folder.is_dir() else []
    return sorted(states, key=lambda p: int(p.stem), reverse=True)


def _warn(opt, message):
    if opt.get('rank', 0) == 0:
        print(f'rtsr-train: warning: {message}', file=sys.stderr, flush=True)


def _newest_readable(opt):
    """``(path, state)`` of the newest readable state of ``training_states/``, or ``(None, None)``."""
    passed = []
    for path in saved_states(opt['path']['training_states']):
        try:
            state = load_checkpoint(path, weights_only=False)  # schedulers may hold Counters
            if not isinstance(state, dict) or 'iter' not in state:
                raise CheckpointError(f'{path}: not a training state (no "iter")')
        except CheckpointError as exc:
            passed.append(str(exc))
            continue
        if passed:
            _warn(opt, f"{'; '.join(passed)}; resuming from {path.name} instead")
        return path, state
    if passed:
        _warn(opt, f"{'; '.join(passed)}; no readable training state, starting from scratch")
    return None, None


def remove_orphans(opt):
    """Remove the temporary files of interrupted saves (rank 0 only); returns them."""
    if opt.get('rank', 0) != 0:
        return []
    found = [p for key in ('training_states', 'models') if opt['path'].get(key)
             for p in orphaned_temporaries(opt['path'][key])]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def load_resume_state(opt):
    """Drop-in for ``basicsr.train.load_resume_state`` that needs no GPU (see the module docstring)."""
    if opt.get('auto_resume'):
        remove_orphans(opt)
        path, state = _newest_readable(opt)
        if path is not None:
            opt['path']['resume_state'] = str(path)
    else:
        path = opt['path'].get('resume_state')
        if path is None:
            return None
        state = load_checkpoint(path, weights_only=False)
    if path is None:
        return None
    model_cls = MODEL_REGISTRY.get(opt['model_type']) if opt.get('model_type') in MODEL_REGISTRY else None
    keep = [n for n in getattr(model_cls, 'unsaved_networks', ()) if n in opt]
    if keep:
        ignored = opt['path'].get('ignore_resume_networks') or []
        opt['path']['ignore_resume_networks'] = list(ignored) + [n for n in keep if n not in ignored]
    check_resume(opt, state['iter'])
    return state
