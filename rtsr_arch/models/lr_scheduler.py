"""Per-iteration learning-rate schedulers used by the rtsr_arch training recipes.

BasicSR's ``BaseModel.setup_schedulers`` only knows ``MultiStepLR``/``MultiStepRestartLR``/
``CosineAnnealingRestartLR``; rtsr_arch models build their schedulers with :func:`build_scheduler`
instead, which resolves ``type`` among this module's schedulers (plus BasicSR's two) and then
among ``torch.optim.lr_scheduler``'s.

Every scheduler here is closed-form in ``last_epoch`` (= the number of ``step()`` calls, i.e. the
iteration index): the lr never depends on the previous lr, so a scheduler restored with
``load_state_dict`` (the base class's, which restores ``last_epoch``) continues bit-identically.
"""
import math

from basicsr.models import lr_scheduler as _basicsr_sched
from torch.optim import lr_scheduler as _torch_sched
from torch.optim.lr_scheduler import LRScheduler

__all__ = ['CosineRestartCyclesLR', 'CosineWarmupLR', 'KneeLR', 'build_scheduler', 'available_schedulers']


def _per_group(value, optimizer, name):
    """Broadcast a scalar (or check a per-param-group list) to one value per param group."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f'{name} has {len(value)} values but the optimizer has {n} param groups')
        return [float(v) for v in value]
    return [float(value)] * n


def _cosine(start, end, t, period):
    """Half cosine from ``start`` (t = 0) to ``end`` (t = period)."""
    return end + (start - end) * (1 + math.cos(math.pi * t / period)) / 2


class CosineRestartCyclesLR(LRScheduler):
    """Cosine annealing with warm restarts whose peak decays by ``gamma`` per cycle (LRSRN official).

    Per-iteration version of ``CosineAnnealingWarmupRestarts`` (pip package
    ``cosine_annealing_warmup``, katsura-jp) with ``cycle_mult = 1``. For iteration ``t``
    (``= last_epoch``), cycle ``c = t // cycle_iters``, position ``s = t % cycle_iters``, and per
    param group peak ``p = base_lr * gamma**c`` (``base_lr`` = the group's ``initial_lr``;
    the reference uses one ``max_lr`` for all groups, here each group keeps its own ratio):

    - ``s < warmup_iters``: linear warm-up ``min_lr + (p - min_lr) * s / warmup_iters``;
    - otherwise: ``min_lr + (p - min_lr) * (1 + cos(pi * (s - W) / (cycle_iters - W))) / 2``
      with ``W = warmup_iters`` (the end value ``min_lr`` is reached only in the limit: the next
      iteration is the restart);
    - ``t >= end`` with ``end = num_cycles * cycle_iters`` (or ``total_iters``, if given instead):
      constant ``min_lr``. With neither, the cycles go on forever.

    Converting the official epoch-based LRSRN setting (``first_cycle_steps = epochs // 5``,
    ``cycle_mult 1.0``, ``max_lr = lr``, ``min_lr 1e-6``, ``gamma 0.5``, ``warmup_steps 0``, stepped
    once per epoch): with ``I`` iterations per epoch (DIV2K 800 images x repeat 20 / batch 8 =
    2000), use ``cycle_iters = (epochs // 5) * I``, ``num_cycles = 5``, ``gamma = 0.5``,
    ``min_lr = 1e-6``, ``warmup_iters = 0`` and the optimizer lr = ``lr``; e.g. 800 epochs ->
    ``cycle_iters = 160 * 2000 = 320000`` (total 1.6M iterations), peaks 5e-4, 2.5e-4, 1.25e-4,
    6.25e-5, 3.125e-5. The per-epoch staircase of the original becomes a smooth per-iteration
    curve (same values at every epoch start). The paper's 10 % warm-up would be
    ``warmup_iters = cycle_iters // 10`` (warm-up at the start of every cycle, as the reference).

    Not reproduced: the reference sets every lr to ``min_lr`` right after construction, so its
    first epoch runs at ``min_lr`` (and cycle 0's peak is never used); here iteration 0 is the peak.

    Args:
        optimizer: wrapped optimizer; its param groups' lrs are the cycle-0 peaks.
        cycle_iters (int): iterations per cycle (>= 1).
        num_cycles (int | None): number of cycles, then constant ``min_lr``. Default: None.
        gamma (float): peak decay per restart. Default: 0.5.
        min_lr (float | list[float]): floor of every cycle (per group if a list). Default: 1e-6.
        warmup_iters (int): linear warm-up iterations at the start of each cycle
            (``0 <= warmup_iters < cycle_iters``). Default: 0.
        total_iters (int | None): alternative to ``num_cycles``: constant ``min_lr`` from this
            iteration on (the last cycle may be cut short). Default: None.
        last_epoch (int): as in torch's schedulers. Default: -1.
    """

    def __init__(self, optimizer, cycle_iters, num_cycles=None, gamma=0.5, min_lr=1e-6, warmup_iters=0,
                 total_iters=None, last_epoch=-1):
        cycle_iters, warmup_iters = int(cycle_iters), int(warmup_iters)
        if cycle_iters < 1:
            raise ValueError(f'cycle_iters must be >= 1, got {cycle_iters}')
        if not 0 <= warmup_iters < cycle_iters:
            raise ValueError(f'warmup_iters must be in [0, cycle_iters={cycle_iters}), got {warmup_iters}')
        if num_cycles is not None and total_iters is not None:
            raise ValueError('give num_cycles or total_iters, not both')
        if num_cycles is not None and int(num_cycles) < 1:
            raise ValueError(f'num_cycles must be >= 1, got {num_cycles}')
        if total_iters is not None and int(total_iters) < 1:
            raise ValueError(f'total_iters must be >= 1, got {total_iters}')
        self.cycle_iters = cycle_iters
        self.num_cycles = None if num_cycles is None else int(num_cycles)
        self.total_iters = None if total_iters is None else int(total_iters)
        self.gamma = float(gamma)
        self.min_lrs = _per_group(min_lr, optimizer, 'min_lr')
        self.warmup_iters = warmup_iters
        super().__init__(optimizer, last_epoch)

    @property
    def end_iter(self):
        """First iteration of the constant-``min_lr`` tail (None: cycles forever)."""
        if self.num_cycles is not None:
            return self.num_cycles * self.cycle_iters
        return self.total_iters

    def get_lr(self):
        t = max(self.last_epoch, 0)
        end = self.end_iter
        if end is not None and t >= end:
            return list(self.min_lrs)
        cycle, s = divmod(t, self.cycle_iters)
        scale = self.gamma**cycle
        w = self.warmup_iters
        lrs = []
        for base_lr, min_lr in zip(self.base_lrs, self.min_lrs):
            peak = base_lr * scale
            if s < w:
                lrs.append((peak - min_lr) * s / w + min_lr)
            else:
                lrs.append(_cosine(peak, min_lr, s - w, self.cycle_iters - w))
        return lrs

    _get_closed_form_lr = get_lr


class CosineWarmupLR(LRScheduler):
    """Linear warm-up then a single cosine decay (LRSRN paper section 3.3, warm-up ratio 0.1).

    For iteration ``t`` (``= last_epoch``), per param group (``base_lr`` = its ``initial_lr``):

    - ``t < warmup_iters``: ``base_lr * (f + (1 - f) * t / warmup_iters)``, ``f = warmup_start_factor``;
    - ``warmup_iters <= t <= total_iters``:
      ``min_lr + (base_lr - min_lr) * (1 + cos(pi * (t - W) / (total_iters - W))) / 2``;
    - ``t > total_iters``: ``min_lr``.

    The paper's setting is ``warmup_iters = total_iters // 10``.

    Args:
        optimizer: wrapped optimizer; its param groups' lrs are the peaks.
        total_iters (int): iteration at which the cosine reaches ``min_lr`` (>= 1).
        warmup_iters (int): linear warm-up iterations (``0 <= warmup_iters < total_iters``). Default: 0.
        min_lr (float | list[float]): final lr (per group if a list). Default: 0.
        warmup_start_factor (float): lr at iteration 0 as a fraction of ``base_lr``. Default: 0.
        last_epoch (int): as in torch's schedulers. Default: -1.
    """

    def __init__(self, optimizer, total_iters, warmup_iters=0, min_lr=0.0, warmup_start_factor=0.0, last_epoch=-1):
        total_iters, warmup_iters = int(total_iters), int(warmup_iters)
        if total_iters < 1:
            raise ValueError(f'total_iters must be >= 1, got {total_iters}')
        if not 0 <= warmup_iters < total_iters:
            raise ValueError(f'warmup_iters must be in [0, total_iters={total_iters}), got {warmup_iters}')
        self.total_iters = total_iters
        self.warmup_iters = warmup_iters
        self.min_lrs = _per_group(min_lr, optimizer, 'min_lr')
        self.warmup_start_factor = float(warmup_start_factor)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t = max(self.last_epoch, 0)
        w, f = self.warmup_iters, self.warmup_start_factor
        if t > self.total_iters:
            return list(self.min_lrs)
        if t < w:
            return [base_lr * (f + (1 - f) * t / w) for base_lr in self.base_lrs]
        return [_cosine(base_lr, min_lr, t - w, self.total_iters - w)
                for base_lr, min_lr in zip(self.base_lrs, self.min_lrs)]

    _get_closed_form_lr = get_lr


class KneeLR(LRScheduler):
    """RVSR's knee-shaped schedule: optional linear warm-up, a constant "explore" phase at the
    peak, then a linear decay towards 0 floored at ``min_lr`` (official ``KneeLRScheduler``,
    huai-chang/RVSR ``tools/schedulers.py``; AIS 2024 RTSR report §3.5: "5e-4 for the first 1000
    epochs, after which it linearly decays until reaching 1e-6").

    All counts are iterations. For iteration ``t`` (``= last_epoch``) the official step number is
    ``n = (t // interval + 1) * interval`` (1-based: the reference starts at step 1 and sets the
    lr of step 1 at construction); per param group (``p`` = its ``initial_lr``, ``W, E, T`` =
    ``warmup_iters, explore_iters, total_iters``, ``D = T - E - W``):

    - ``n <= W``: ``p * n / W`` (the first warm-up lr is ``p / W``, as the reference);
    - ``n <= W + E``: ``p``;
    - otherwise: ``max(min_lr, p - p / D * (n - W - E))`` (the line reaches 0 at ``n = T``, not
      ``min_lr``, as the reference; ``D = 0``: ``min_lr``).

    ``interval = 1`` is the per-iteration schedule. The reference steps once per epoch; with
    ``I`` iterations per epoch, ``interval = I`` and the epoch counts times ``I`` reproduce it
    exactly: the lr is constant within an epoch and equals the reference's lr of that epoch. The
    official RVSR setting (peak 5e-4, warm-up 0, explore 1000, total 5000 epochs, min 1e-6) with
    140 iterations per epoch (4,450 training images, batch 32: the released checkpoint is at
    global step 417,200 = epoch 2,980 x 140) is ``explore_iters = 140000``, ``total_iters =
    700000``, ``min_lr = 1e-6``, ``interval = 140`` (or ``interval = 1`` for a smooth ramp that
    differs from it by less than one epoch's decrement).

    Args:
        optimizer: wrapped optimizer; its param groups' lrs are the peaks (the reference's
            ``peak_lr``, which RVSR sets equal to the optimizer lr).
        explore_iters (int): iterations at the peak after the warm-up (>= 0).
        total_iters (int): iteration at which the decay line reaches 0 (>= warm-up + explore).
        warmup_iters (int): linear warm-up iterations (>= 0). Default: 0.
        min_lr (float | list[float]): floor of the decay (per group if a list). Default: 0.
        interval (int): iterations per reference step (>= 1). Default: 1.
        last_epoch (int): as in torch's schedulers. Default: -1.
    """

    def __init__(self, optimizer, explore_iters, total_iters, warmup_iters=0, min_lr=0.0, interval=1,
                 last_epoch=-1):
        explore_iters, total_iters, warmup_iters, interval = (int(explore_iters), int(total_iters),
                                                              int(warmup_iters), int(interval))
        if warmup_iters < 0 or explore_iters < 0:
            raise ValueError(f'warmup_iters and explore_iters must be >= 0, got {warmup_iters}, {explore_iters}')
        if total_iters < warmup_iters + explore_iters:
            raise ValueError(f'total_iters={total_iters} must be >= warmup_iters + explore_iters = '
                             f'{warmup_iters + explore_iters}')
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        self.explore_iters = explore_iters
        self.total_iters = total_iters
        self.warmup_iters = warmup_iters
        self.interval = interval
        self.min_lrs = _per_group(min_lr, optimizer, 'min_lr')
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t = max(self.last_epoch, 0)
        n = (t // self.interval + 1) * self.interval
        w, knee = self.warmup_iters, self.warmup_iters + self.explore_iters
        decay = self.total_iters - knee
        lrs = []
        for peak, min_lr in zip(self.base_lrs, self.min_lrs):
            if n <= w:
                lrs.append(peak * n / w)
            elif n <= knee:
                lrs.append(peak)
            elif decay == 0:
                lrs.append(min_lr)
            else:
                lrs.append(max(min_lr, peak + (-1 * peak / decay) * (n - knee)))
        return lrs

    _get_closed_form_lr = get_lr


def _own_schedulers():
    schedulers = {cls.__name__: cls for cls in (CosineRestartCyclesLR, CosineWarmupLR, KneeLR)}
    # BasicSR's restart schedulers, so BasicSR-style configs keep working
    for name in ('MultiStepRestartLR', 'CosineAnnealingRestartLR'):
        schedulers.setdefault(name, getattr(_basicsr_sched, name))
    return schedulers


def _torch_schedulers():
    names = [n for n in getattr(_torch_sched, '__all__', dir(_torch_sched)) if n not in ('LRScheduler', '_LRScheduler')]
    return {n: getattr(_torch_sched, n) for n in names if isinstance(getattr(_torch_sched, n, None), type)}


def available_schedulers():
    """Names :func:`build_scheduler` accepts: this module's (and BasicSR's) first, then torch's."""
    own = _own_schedulers()
    return list(own) + [n for n in _torch_schedulers() if n not in own]


def build_scheduler(optimizer, opt_dict):
    """Build a scheduler from ``{'type': name, **kwargs}`` (``opt_dict`` is not modified).

    ``name`` is looked up among this module's schedulers (plus BasicSR's ``MultiStepRestartLR`` and
    ``CosineAnnealingRestartLR``), then among ``torch.optim.lr_scheduler``'s; an unknown name
    raises a one-line ``ValueError`` listing the available ones.
    """
    kwargs = dict(opt_dict)
    name = kwargs.pop('type', None)
    cls = _own_schedulers().get(name) or _torch_schedulers().get(name)
    if cls is None:
        raise ValueError(f"unknown scheduler type {name!r}; available: {', '.join(available_schedulers())}")
    return cls(optimizer, **kwargs)
