"""rtsr_arch.models.lr_scheduler: per-iteration schedulers checked against independent formulas."""
import copy
import io
import math

import pytest
import torch

import rtsr_arch  # noqa: F401  (basicsr import aliases before anything imports basicsr)
from rtsr_arch.models.lr_scheduler import (CosineRestartCyclesLR, CosineWarmupLR, KneeLR, available_schedulers,
                                           build_scheduler)

OFFICIAL_PEAKS = (5e-4, 2.5e-4, 1.25e-4, 6.25e-5, 3.125e-5)


def make_optimizer(lrs=(5e-4, ), seed=0):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(4)) for _ in lrs]
    return torch.optim.Adam([{'params': [p], 'lr': lr} for p, lr in zip(params, lrs)])


def run(opt, sched, n):
    """lrs used at iterations 0..n-1 (one list per iteration), stepping optimizer then scheduler."""
    out = []
    for _ in range(n):
        out.append([g['lr'] for g in opt.param_groups])
        assert out[-1] == sched.get_last_lr()
        opt.zero_grad()
        loss = sum((p**2).sum() for g in opt.param_groups for p in g['params'])
        loss.backward()
        opt.step()
        sched.step()
    return out


def katsura_per_step(first_cycle_steps, max_lr, min_lr, warmup_steps, gamma, n):
    """Re-derivation of cosine_annealing_warmup.CosineAnnealingWarmupRestarts (cycle_mult 1) as a
    stateful step-by-step simulation; without the reference's "lr = min_lr before the first
    step" quirk (value at step 0 is the cycle-0 formula value)."""
    out, cycle, s = [], 0, 0
    for _ in range(n):
        peak = max_lr * gamma**cycle
        if s < warmup_steps:
            lr = (peak - min_lr) * s / warmup_steps + min_lr
        else:
            lr = min_lr + (peak - min_lr) * (1 + math.cos(math.pi * (s - warmup_steps) /
                                                          (first_cycle_steps - warmup_steps))) / 2
        out.append(lr)
        s += 1
        if s >= first_cycle_steps:
            cycle, s = cycle + 1, s - first_cycle_steps
    return out


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


# ------------------------------------------------------------------------------------------------ restarts
@pytest.mark.parametrize('warmup', [0, 1, 3])
def test_restart_cycles_match_reference_simulation(warmup):
    opt = make_optimizer((5e-4, ))
    sched = CosineRestartCyclesLR(opt, cycle_iters=10, num_cycles=3, gamma=0.5, min_lr=1e-6, warmup_iters=warmup)
    got = [lrs[0] for lrs in run(opt, sched, 45)]
    ref = katsura_per_step(10, 5e-4, 1e-6, warmup, 0.5, 30)
    for t in range(30):
        assert close(got[t], ref[t]), (t, got[t], ref[t])
    # after the last cycle: exactly min_lr, forever
    assert all(lr == 1e-6 for lr in got[30:])
    # cycle starts: peak (no warm-up) or min_lr (warm-up starts from the floor)
    for c in range(3):
        assert close(got[10 * c], 1e-6 if warmup else 5e-4 * 0.5**c)
        assert close(got[10 * c + warmup], 5e-4 * 0.5**c)  # warm-up end = peak
    if warmup:
        assert close(got[1], 1e-6 + (5e-4 - 1e-6) / warmup)


def test_restart_cycles_direct_formula_many_iterations():
    base, lo, T, W, g = 3e-3, 2e-6, 17, 4, 0.7
    opt = make_optimizer((base, ))
    sched = CosineRestartCyclesLR(opt, cycle_iters=T, num_cycles=4, gamma=g, min_lr=lo, warmup_iters=W)
    got = [lrs[0] for lrs in run(opt, sched, 4 * T + 20)]
    for t, lr in enumerate(got):
        c, s = t // T, t % T
        if c >= 4:
            want = lo
        elif s < W:
            want = lo + (base * g**c - lo) * s / W
        else:
            want = lo + 0.5 * (base * g**c - lo) * (1 + math.cos(math.pi * (s - W) / (T - W)))
        assert close(lr, want), (t, lr, want)


def test_official_lrsrn_peaks_and_floor():
    T = 1000
    opt = make_optimizer((5e-4, ))
    sched = CosineRestartCyclesLR(opt, cycle_iters=T, num_cycles=5, gamma=0.5, min_lr=1e-6)
    got = [lrs[0] for lrs in run(opt, sched, 5 * T + 50)]
    for c, peak in enumerate(OFFICIAL_PEAKS):
        assert close(got[c * T], peak)
        assert got[c * T] == max(got[c * T:(c + 1) * T])
        end = got[(c + 1) * T - 1]  # last iteration of the cycle: the floor up to (1 - cos(pi/T)) / 2
        assert 1e-6 < end < 1e-6 + peak * (1 - math.cos(math.pi / T)) / 2 * 1.0001
        assert abs(end - 1e-6) < 2e-9
        assert all(a >= b for a, b in zip(got[c * T:(c + 1) * T], got[c * T + 1:(c + 1) * T]))  # monotone
    assert all(lr == 1e-6 for lr in got[5 * T:])


def test_official_epoch_setting_conversion():
    """800 epochs x 2000 iterations: at every epoch start the per-iteration schedule equals the
    official per-epoch one (first_cycle_steps = 800 // 5 = 160 epochs)."""
    epochs, ipe = 800, 2000
    opt = make_optimizer((5e-4, ))
    sched = CosineRestartCyclesLR(opt, cycle_iters=(epochs // 5) * ipe, num_cycles=5, gamma=0.5, min_lr=1e-6)
    ref = katsura_per_step(epochs // 5, 5e-4, 1e-6, 0, 0.5, epochs)
    for e in list(range(0, epochs, 7)) + [159, 160, 161, 319, 320, 640, 799]:
        sched.last_epoch = e * ipe
        assert close(sched.get_lr()[0], ref[e]), e
    sched.last_epoch = epochs * ipe
    assert sched.get_lr() == [1e-6]


def test_restart_cycles_total_iters_and_endless():
    opt = make_optimizer((1e-3, ))
    sched = CosineRestartCyclesLR(opt, cycle_iters=10, total_iters=25, min_lr=0.0)
    got = [lrs[0] for lrs in run(opt, sched, 30)]
    assert close(got[20], 2.5e-4) and got[24] > 0 and all(lr == 0.0 for lr in got[25:])
    opt = make_optimizer((1e-3, ))
    sched = CosineRestartCyclesLR(opt, cycle_iters=10, min_lr=0.0)  # no end: restarts forever
    got = [lrs[0] for lrs in run(opt, sched, 101)]
    assert close(got[100], 1e-3 * 0.5**10)


def test_restart_cycles_multiple_param_groups():
    bases, mins = (5e-4, 2e-3), (1e-6, 4e-6)
    opt = make_optimizer(bases)
    sched = CosineRestartCyclesLR(opt, cycle_iters=12, num_cycles=2, gamma=0.5, min_lr=list(mins), warmup_iters=2)
    got = run(opt, sched, 30)
    for i, (b, m) in enumerate(zip(bases, mins)):
        ref = katsura_per_step(12, b, m, 2, 0.5, 24)
        assert all(close(got[t][i], ref[t]) for t in range(24))
        assert all(got[t][i] == m for t in range(24, 30))
    # scalar min_lr is shared; a wrong-length list is refused
    opt = make_optimizer(bases)
    assert CosineRestartCyclesLR(opt, cycle_iters=5, min_lr=0.0).min_lrs == [0.0, 0.0]
    with pytest.raises(ValueError, match='param groups'):
        CosineRestartCyclesLR(make_optimizer(bases), cycle_iters=5, min_lr=[1e-6])


@pytest.mark.parametrize('kwargs', [dict(cycle_iters=0), dict(cycle_iters=5, warmup_iters=5),
                                    dict(cycle_iters=5, num_cycles=0),
                                    dict(cycle_iters=5, num_cycles=2, total_iters=9)])
def test_restart_cycles_rejects_bad_args(kwargs):
    with pytest.raises(ValueError):
        CosineRestartCyclesLR(make_optimizer(), **kwargs)


# ------------------------------------------------------------------------------------------------ warm-up cosine
@pytest.mark.parametrize('warmup,factor', [(0, 0.0), (5, 0.0), (5, 0.1), (1, 0.5)])
def test_cosine_warmup_direct_formula(warmup, factor):
    base, lo, total = 5e-4, 1e-6, 50
    opt = make_optimizer((base, ))
    sched = CosineWarmupLR(opt, total_iters=total, warmup_iters=warmup, min_lr=lo, warmup_start_factor=factor)
    got = [lrs[0] for lrs in run(opt, sched, total + 15)]
    for t, lr in enumerate(got):
        if t < warmup:
            want = base * factor + (base - base * factor) * t / warmup
        elif t <= total:
            want = lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
        else:
            want = lo
        assert close(lr, want), (t, lr, want)
    assert close(got[0], base * factor if warmup else base)
    assert close(got[warmup], base)  # warm-up end = peak
    assert close(got[total], lo) and all(lr == lo for lr in got[total + 1:])
    assert max(got) == got[warmup]


def test_cosine_warmup_paper_ratio_and_groups():
    total = 1000
    opt = make_optimizer((5e-4, 1e-4))
    sched = CosineWarmupLR(opt, total_iters=total, warmup_iters=total // 10, min_lr=[1e-6, 0.0])
    got = run(opt, sched, total + 1)
    assert got[0] == [0.0, 0.0]
    assert all(close(a, b) for a, b in zip(got[50], [2.5e-4, 5e-5]))
    assert all(close(a, b) for a, b in zip(got[100], [5e-4, 1e-4]))
    mid = 100 + (total - 100) // 2  # half-way through the cosine: the mean of peak and floor
    assert all(close(a, b) for a, b in zip(got[mid], [(5e-4 + 1e-6) / 2, 5e-5]))
    assert close(got[total][0], 1e-6) and got[total][1] == 0.0


@pytest.mark.parametrize('kwargs', [dict(total_iters=0), dict(total_iters=10, warmup_iters=10),
                                    dict(total_iters=10, warmup_iters=-1)])
def test_cosine_warmup_rejects_bad_args(kwargs):
    with pytest.raises(ValueError):
        CosineWarmupLR(make_optimizer(), **kwargs)


# ------------------------------------------------------------------------------------------------ resume
SCHEDS = [
    ('CosineRestartCyclesLR', dict(cycle_iters=16, num_cycles=5, gamma=0.5, min_lr=1e-6, warmup_iters=3)),
    ('CosineWarmupLR', dict(total_iters=70, warmup_iters=7, min_lr=1e-6, warmup_start_factor=0.1)),
    ('KneeLR', dict(explore_iters=21, total_iters=81, warmup_iters=6, min_lr=1e-6, interval=3)),
]


@pytest.mark.parametrize('name,kwargs', SCHEDS)
def test_resume_is_bit_identical(name, kwargs):
    n, cut = 95, 37
    opt = make_optimizer((5e-4, 1e-3))
    sched = build_scheduler(opt, dict(type=name, **kwargs))
    full = run(opt, sched, n)
    full_params = [p.detach().clone() for g in opt.param_groups for p in g['params']]

    opt = make_optimizer((5e-4, 1e-3))
    sched = build_scheduler(opt, dict(type=name, **kwargs))
    first = run(opt, sched, cut)
    buf = io.BytesIO()
    torch.save({'opt': opt.state_dict(), 'sched': sched.state_dict(),
                'params': [p.detach().clone() for g in opt.param_groups for p in g['params']]}, buf)
    del opt, sched
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)

    opt2 = make_optimizer((5e-4, 1e-3), seed=123)  # fresh (different) params, restored below
    with torch.no_grad():
        for p, saved in zip([p for g in opt2.param_groups for p in g['params']], ckpt['params']):
            p.copy_(saved)
    sched2 = build_scheduler(opt2, dict(type=name, **kwargs))  # scheduler first: it resets the lrs
    opt2.load_state_dict(ckpt['opt'])
    sched2.load_state_dict(ckpt['sched'])
    assert sched2.last_epoch == cut and sched2.get_last_lr() == full[cut]
    rest = run(opt2, sched2, n - cut)
    assert first + rest == full  # bit-identical lr trajectory
    params2 = [p for g in opt2.param_groups for p in g['params']]
    assert all(torch.equal(a, b) for a, b in zip(params2, full_params))


@pytest.mark.parametrize('name,kwargs', SCHEDS)
def test_last_epoch_alone_determines_lr(name, kwargs):
    """A scheduler whose last_epoch is set (e.g. by load_state_dict) gives the same lr as stepping."""
    opt = make_optimizer((5e-4, ))
    sched = build_scheduler(opt, dict(type=name, **kwargs))
    full = run(opt, sched, 80)
    probe = build_scheduler(make_optimizer((5e-4, )), dict(type=name, **kwargs))
    for t in (0, 1, 2, 3, 15, 16, 17, 37, 63, 69, 70, 79):
        probe.last_epoch = t
        assert probe.get_lr() == full[t], t


# ------------------------------------------------------------------------------------------------ build
def test_build_scheduler_by_name():
    opt = make_optimizer((1e-3, ))
    cfg = {'type': 'CosineRestartCyclesLR', 'cycle_iters': 8, 'num_cycles': 5}
    s = build_scheduler(opt, cfg)
    assert isinstance(s, CosineRestartCyclesLR) and s.cycle_iters == 8 and s.min_lrs == [1e-6]
    assert cfg == {'type': 'CosineRestartCyclesLR', 'cycle_iters': 8, 'num_cycles': 5}  # not mutated
    assert isinstance(build_scheduler(make_optimizer(), {'type': 'CosineWarmupLR', 'total_iters': 10}), CosineWarmupLR)

    s = build_scheduler(make_optimizer((1e-3, )), {'type': 'StepLR', 'step_size': 2, 'gamma': 0.1})
    assert type(s) is torch.optim.lr_scheduler.StepLR
    s = build_scheduler(make_optimizer(), {'type': 'CosineAnnealingLR', 'T_max': 10})
    assert type(s) is torch.optim.lr_scheduler.CosineAnnealingLR

    from basicsr.models.lr_scheduler import CosineAnnealingRestartLR, MultiStepRestartLR
    s = build_scheduler(make_optimizer(), {'type': 'CosineAnnealingRestartLR', 'periods': [5, 5],
                                           'restart_weights': [1, 0.5], 'eta_min': 1e-7})
    assert type(s) is CosineAnnealingRestartLR
    s = build_scheduler(make_optimizer(), {'type': 'MultiStepRestartLR', 'milestones': [5]})
    assert type(s) is MultiStepRestartLR

    names = available_schedulers()
    assert names[:2] == ['CosineRestartCyclesLR', 'CosineWarmupLR']
    assert {'StepLR', 'MultiStepLR', 'CosineAnnealingWarmRestarts', 'MultiStepRestartLR'} <= set(names)
    assert 'LRScheduler' not in names and len(names) == len(set(names))


@pytest.mark.parametrize('cfg', [{'type': 'NoSuchLR'}, {'cycle_iters': 5}])
def test_build_scheduler_unknown_type_one_line_error(cfg):
    with pytest.raises(ValueError) as exc:
        build_scheduler(make_optimizer(), copy.deepcopy(cfg))
    msg = str(exc.value)
    assert '\n' not in msg
    assert repr(cfg.get('type')) in msg
    for name in ('CosineRestartCyclesLR', 'CosineWarmupLR', 'StepLR', 'CosineAnnealingRestartLR'):
        assert name in msg


# ------------------------------------------------------------------------------------------------ knee (RVSR)
def knee_reference(peak_lr, warmup_steps, explore_steps, total_steps, min_lr, n):
    """Re-derivation of huai-chang/RVSR ``tools/schedulers.py`` ``KneeLRScheduler`` as a stateful
    simulation: ``current_step`` starts at 1 (its lr is set at construction) and each ``step()``
    (once per epoch in RVSR) adds 1. Returns the lr of steps 0..n-1 (epochs, 0-based)."""
    decay_steps = total_steps - (explore_steps + warmup_steps)
    out, step = [], 1
    for _ in range(n):
        if step <= warmup_steps:
            lr = peak_lr * step / warmup_steps
        elif step <= explore_steps + warmup_steps:
            lr = peak_lr
        else:
            lr = max(min_lr, peak_lr + (-1 * peak_lr / decay_steps) * (step - (explore_steps + warmup_steps)))
        out.append(lr)
        step += 1
    return out


@pytest.mark.parametrize('warmup,explore,total', [(0, 10, 50), (3, 10, 50), (4, 0, 20), (2, 5, 9)])
@pytest.mark.parametrize('ipe', [1, 7])
def test_knee_reproduces_the_per_epoch_reference(warmup, explore, total, ipe):
    """Counts in epochs x iterations per epoch with interval = iterations per epoch: every
    iteration of epoch e runs at the reference's lr of epoch e (constant within the epoch)."""
    epochs = total + 6
    opt = make_optimizer((5e-4, ))
    sched = KneeLR(opt, explore_iters=explore * ipe, total_iters=total * ipe, warmup_iters=warmup * ipe,
                   min_lr=1e-6, interval=ipe)
    got = [lrs[0] for lrs in run(opt, sched, epochs * ipe)]
    ref = knee_reference(5e-4, warmup, explore, total, 1e-6, epochs)
    for t, lr in enumerate(got):
        assert close(lr, ref[t // ipe]), (t, lr, ref[t // ipe])
    if ipe == 1:  # counted in epochs, the arithmetic is the reference's: bit-identical
        assert got == ref
    assert all(lr == 1e-6 for lr in got[total * ipe:])


@pytest.mark.parametrize('warmup,explore,total,floor', [(0, 12, 40, 1e-6), (5, 7, 40, 0.0), (6, 0, 6, 2e-6)])
def test_knee_direct_formula_per_iteration(warmup, explore, total, floor):
    base = 3e-3
    opt = make_optimizer((base, ))
    sched = KneeLR(opt, explore_iters=explore, total_iters=total, warmup_iters=warmup, min_lr=floor)
    got = [lrs[0] for lrs in run(opt, sched, total + 10)]
    for t, lr in enumerate(got):
        n = t + 1
        if n <= warmup:
            want = base * n / warmup
        elif n <= warmup + explore:
            want = base
        elif total == warmup + explore:
            want = floor
        else:
            want = max(floor, base * (1 - (n - warmup - explore) / (total - warmup - explore)))
        assert close(lr, want) if want else lr == want, (t, lr, want)
    assert got[0] == (base / warmup if warmup else base)
    assert close(got[max(warmup - 1, 0)], base) and close(max(got), base)  # warm-up end = peak (to rounding)


def test_knee_official_rvsr_setting():
    """RVSR (AIS 2024 RTSR report §3.5; huai-chang/RVSR configs/conf.yaml): peak 5e-4, warm-up 0,
    explore 1000, total 5000 epochs, min 1e-6, 140 iterations per epoch (huai-chang/RVSR
    pretrianed/pretrained.ckpt: global step 417,200 at epoch 2,980)."""
    ipe = 140
    opt = make_optimizer((5e-4, ))
    sched = build_scheduler(opt, dict(type='KneeLR', explore_iters=1000 * ipe, total_iters=5000 * ipe,
                                      min_lr=1e-6, interval=ipe))

    def lr_at(epoch, offset=0):
        sched.last_epoch = epoch * ipe + offset
        return sched.get_lr()[0]

    assert lr_at(0) == lr_at(999, ipe - 1) == 5e-4
    assert close(lr_at(1000), 5e-4 * (1 - 1 / 4000)) and lr_at(1000) == lr_at(1000, ipe - 1)
    assert close(lr_at(2980), 5e-4 * (1 - 1981 / 4000))
    assert close(lr_at(4990), 5e-4 * 9 / 4000) and lr_at(4990, ipe - 1) == lr_at(4990)
    assert close(lr_at(4991), 1e-6)  # the line meets min_lr at epoch 4991, then stays on the floor
    assert lr_at(4992) == lr_at(4999) == lr_at(6000) == 1e-6
    # the released checkpoint's run was configured with total 10000 epochs (its hyper-parameters and
    # scheduler state say so); its optimizer lr after epoch 2980 is recorded as 0.00038994444444444444
    sched = KneeLR(make_optimizer((5e-4, )), explore_iters=1000, total_iters=10000, min_lr=1e-6)
    sched.last_epoch = 2980
    assert close(sched.get_lr()[0], 0.00038994444444444444)


def test_knee_multiple_param_groups():
    opt = make_optimizer((5e-4, 1e-3))
    sched = KneeLR(opt, explore_iters=4, total_iters=12, min_lr=[1e-6, 0.0])
    got = run(opt, sched, 14)
    assert got[0] == got[3] == [5e-4, 1e-3]
    assert all(close(a, b) for a, b in zip(got[5], [5e-4 * 6 / 8, 1e-3 * 6 / 8]))
    assert got[11] == [1e-6, 0.0] and got[13] == [1e-6, 0.0]
    with pytest.raises(ValueError, match='param groups'):
        KneeLR(make_optimizer((5e-4, 1e-3)), explore_iters=1, total_iters=5, min_lr=[1e-6])


@pytest.mark.parametrize('kwargs', [dict(explore_iters=10, total_iters=9), dict(explore_iters=5, total_iters=9,
                                                                                 warmup_iters=5),
                                    dict(explore_iters=-1, total_iters=9), dict(explore_iters=1, total_iters=9,
                                                                                  interval=0)])
def test_knee_rejects_bad_args(kwargs):
    with pytest.raises(ValueError):
        KneeLR(make_optimizer(), **kwargs)
