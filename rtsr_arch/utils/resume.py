"""Resuming BasicSR trainings on any device.

BasicSR 1.4.2's ``basicsr.train.load_resume_state`` maps the state onto
``torch.cuda.current_device()``, so ``--auto_resume`` crashes without a GPU. ``rtsr-train`` uses
:func:`load_resume_state` instead: the same choice of state (the highest iteration in
``training_states/`` with ``--auto_resume``, else ``path.resume_state``), loaded on the CPU
(optimizers move their state to the parameters' device when loaded), and the same
``check_resume`` path rewriting, except for networks the model never saves (a distillation
teacher keeps its ``pretrain_network_t``).
"""
from pathlib import Path

from basicsr.utils.misc import check_resume
from basicsr.utils.registry import MODEL_REGISTRY

from .checkpoint import load_checkpoint

__all__ = ['latest_state', 'load_resume_state']


def latest_state(training_states):
    """The ``<iter>.state`` file with the highest iteration in the folder, or None."""
    folder = Path(training_states)
    states = [p for p in folder.glob('*.state') if p.stem.isdigit()] if folder.is_dir() else []
    return max(states, key=lambda p: int(p.stem), default=None)


def load_resume_state(opt):
    """Drop-in for ``basicsr.train.load_resume_state`` that needs no GPU."""
    path = opt['path'].get('resume_state')
    if opt.get('auto_resume'):
        path = latest_state(opt['path']['training_states'])
        if path is not None:
            opt['path']['resume_state'] = str(path)
    if path is None:
        return None
    state = load_checkpoint(path, weights_only=False)  # schedulers may hold Counters
    model_cls = MODEL_REGISTRY.get(opt['model_type']) if opt.get('model_type') in MODEL_REGISTRY else None
    keep = [n for n in getattr(model_cls, 'unsaved_networks', ()) if n in opt]
    if keep:
        ignored = opt['path'].get('ignore_resume_networks') or []
        opt['path']['ignore_resume_networks'] = list(ignored) + [n for n in keep if n not in ignored]
    check_resume(opt, state['iter'])
    return state
