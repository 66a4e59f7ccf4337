"""RTSRModel and KDModel: short CPU trainings on real photographs, exact resume after a kill,
non-finite steps, deploy export, distillation, and their one-line errors."""
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data as skdata

import rtsr_arch  # noqa: F401  (registers before basicsr is imported)
from basicsr.models import build_model
from rtsr_arch.data.degradations import ntire23_lr
from rtsr_arch.models.lr_scheduler import build_scheduler
from rtsr_arch.models import rtsr_model
from rtsr_arch.models.rtsr_model import loss_log_name
from rtsr_arch.utils.options import build_network
from rtsr_arch.utils.resume import load_resume_state

STUDENT = {'type': 'LRSRN', 'num_feat': 8, 'num_block': 2, 'feature_size': 16, 'upscale': 2}
TEACHER = {'type': 'LRSRN', 'num_feat': 16, 'num_block': 3, 'feature_size': 16, 'upscale': 2, 'variant': 'blockv2'}
TRAIN_CROPS = {'astronaut': (0, 0), 'coffee': (100, 200), 'chelsea': (50, 100), 'rocket': (150, 250)}


def _lr_hr_tensors(name, top, left, size):
    img = getattr(skdata, name)()[top:top + size, left:left + size]
    hr, lr = ntire23_lr(np.ascontiguousarray(img), 2)
    to = lambda a: torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]  # noqa: E731
    return to(lr), to(hr)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """NTIRE23-degraded (bicubic x2 + JPEG q90) crops of real photographs: train and held-out val."""
    root = tmp_path_factory.mktemp('data')
    for split, crops, size in (('train', TRAIN_CROPS, 128), ('val', {'motorcycle': (100, 300)}, 64)):
        for sub in ('hr', 'lr'):
            (root / split / sub).mkdir(parents=True)
        for name, (top, left) in crops.items():
            img = skdata.stereo_motorcycle()[0] if name == 'motorcycle' else getattr(skdata, name)()
            hr, lr = ntire23_lr(np.ascontiguousarray(img[top:top + size, left:left + size, :3]), 2)
            Image.fromarray(hr).save(root / split / 'hr' / f'{name}.png')
            Image.fromarray(lr).save(root / split / 'lr' / f'{name}.png')
    return root


def _options(data_root, name, total_iter, **train):
    dataset = {'type': 'PairedImageDataset', 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}
    opt = {
        'name': name, 'model_type': 'RTSRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {**dataset, 'name': 'photos', 'dataroot_gt': str(data_root / 'train/hr'),
                      'dataroot_lq': str(data_root / 'train/lr'), 'gt_size': 48, 'use_hflip': True, 'use_rot': True,
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': 4, 'dataset_enlarge_ratio': 50,
                      'prefetch_mode': None},
            'val': {**dataset, 'name': 'held_out', 'dataroot_gt': str(data_root / 'val/hr'),
                    'dataroot_lq': str(data_root / 'val/lr')},
        },
        'network_g': dict(STUDENT),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'AdamW', 'lr': 3e-3, 'betas': [0.9, 0.99], 'weight_decay': 0},
                  'scheduler': {'type': 'CosineWarmupLR', 'total_iters': total_iter, 'warmup_iters': 5, 'min_lr': 1e-4},
                  'total_iter': total_iter, 'warmup_iter': -1, 'grad_clip': 1.0,
                  'losses': [{'type': 'L1Loss', 'loss_weight': 1.0}, {'type': 'FFTLoss', 'loss_weight': 0.05}],
                  **train},
        'val': {'val_freq': total_iter, 'save_img': False, 'deploy': True,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': total_iter, 'use_tb_logger': False,
                   'wandb': {'project': None}},
    }
    return opt


def _run(opt, cwd, *flags, timeout=300):
    path = Path(cwd) / f"{opt['name']}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    exe = Path(sys.executable).with_name('rtsr-train')
    proc = subprocess.run([str(exe), '-opt', str(path), *flags], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _logged(log, key):
    """Values of ``key`` in BasicSR's per-iteration log lines, in order."""
    return [float(v) for v in re.findall(rf'\b{key}: ([-+0-9.e]+)', log)]


def _iter_lrs(log):
    return {int(i.replace(',', '')): float(lr) for i, lr in re.findall(r'iter:\s*([\d,]+), lr:\(([-+0-9.e]+),', log)}


def _model(opt, tmp_path, resume_state=None):
    """Build a model in-process the way BasicSR's train pipeline does (no data loaders)."""
    opt = {**opt, 'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1, 'auto_resume': False,
           'root_path': str(tmp_path)}
    exp = tmp_path / 'experiments' / opt['name']
    opt['path'] = {**opt['path'], 'experiments_root': str(exp), 'models': str(exp / 'models'),
                   'training_states': str(exp / 'training_states'), 'log': str(exp),
                   'visualization': str(exp / 'visualization')}
    for sub in ('models', 'training_states'):
        (exp / sub).mkdir(parents=True, exist_ok=True)
    model = build_model(opt)
    if resume_state is not None:
        model.resume_training(resume_state)
    return model


def _batch(size=24, names=('astronaut', 'coffee')):
    pairs = [_lr_hr_tensors(n, 100, 100, 2 * size) for n in names]
    return {'lq': torch.cat([p[0] for p in pairs]), 'gt': torch.cat([p[1] for p in pairs])}


# ------------------------------------------------------------------------------------------------ RTSRModel
@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_rtsr_training_reduces_loss_and_exports_deploy(data_root, tmp_path, precision):
    """rtsr-train with a loss list, AdamW, warm-up cosine, clipping, EMA (and bf16 autocast with
    channels_last): the L1 loss on real photographs falls, each loss is logged under its own name,
    and the deploy export equals the EMA network's output."""
    extra = {'mixed_precision': 'bf16', 'channels_last': True} if precision == 'bf16' else {}
    opt = _options(data_root, f'rtsr_{precision}', 60, **extra)
    log = _run(opt, tmp_path)
    l1, fft = _logged(log, 'l_l1'), _logged(log, 'l_fft')
    assert len(l1) == len(fft) == 60
    print(f'{precision}: mean l_l1 over iterations 1-10 {np.mean(l1[:10]):.4f} -> 51-60 {np.mean(l1[-10:]):.4f}')
    assert np.mean(l1[-10:]) < 0.6 * np.mean(l1[:10]), (l1[:10], l1[-10:])
    assert 'grad_norm' in log and 'Validation held_out' in log

    models = tmp_path / 'experiments' / opt['name'] / 'models'
    for label in ('60', 'latest'):
        deploy = torch.load(models / f'net_g_deploy_{label}.pth', map_location='cpu')['params']
        ema = torch.load(models / f'net_g_{label}.pth', map_location='cpu')['params_ema']
        net, fused = build_network(STUDENT).eval(), build_network({**STUDENT, 'deploy': True}).eval()
        net.load_state_dict(ema)
        fused.load_state_dict(deploy)
        x = _lr_hr_tensors('chelsea', 60, 120, 64)[0]
        with torch.no_grad():
            y, yd = net(x), fused(x)
        assert (y - yd).abs().max() <= 1e-5 * y.abs().max()
    assert not list(models.glob('.*.tmp'))


def test_fp16_scaler_optimizer_and_ema_resume_exactly(data_root, tmp_path, monkeypatch):
    """fp16 autocast with a GradScaler: after a few steps the training state holds scaler,
    optimizer, scheduler and EMA; a fresh model resumed from it equals the original in all four."""
    monkeypatch.setattr(rtsr_model, 'FP16_DEVICES', ('cuda', 'cpu'))  # fp16 on the CPU (slow; 5 small steps)
    opt = _options(data_root, 'fp16', 10, mixed_precision='fp16',
                   scheduler={'type': 'CosineRestartCyclesLR', 'cycle_iters': 4, 'num_cycles': 2})
    model = _model(opt, tmp_path)
    batch = _batch()
    for it in range(1, 6):
        model.update_learning_rate(it)
        model.feed_data(batch)
        model.optimize_parameters(it)
    assert model.scaler.is_enabled() and model.log_dict['l_l1'] > 0
    model.save(0, 5)
    state = torch.load(tmp_path / 'experiments/fp16/training_states/5.state', map_location='cpu', weights_only=False)

    resumed = _model(opt, tmp_path / 'fresh', resume_state=state)
    assert resumed.scaler.state_dict() == model.scaler.state_dict()
    assert resumed.schedulers[0].last_epoch == model.schedulers[0].last_epoch == 4
    assert resumed.get_current_learning_rate() == model.get_current_learning_rate()
    for a, b in zip(resumed.optimizer_g.state_dict()['state'].values(), model.optimizer_g.state_dict()['state'].values()):
        assert all(torch.equal(a[k], b[k]) for k in ('exp_avg', 'exp_avg_sq', 'step'))
    for (ka, a), (kb, b) in zip(resumed.net_g_ema.state_dict().items(), model.net_g_ema.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    # and both continue identically
    for m in (model, resumed):
        m.update_learning_rate(6)
        m.feed_data(batch)
        m.optimize_parameters(6)
    assert all(torch.equal(a, b) for a, b in zip(resumed.net_g.parameters(), model.net_g.parameters()))


def test_kill_during_training_then_auto_resume(data_root, tmp_path):
    """SIGKILL a running rtsr-train, check every file left is complete, resume with --auto_resume:
    it restarts at the last saved iteration with the schedule's lr and finishes."""
    opt = _options(data_root, 'killed', 100000, scheduler={'type': 'CosineRestartCyclesLR', 'cycle_iters': 12,
                                                              'num_cycles': 4, 'warmup_iters': 2})
    opt['logger']['save_checkpoint_freq'] = 3
    opt['val'] = None
    path = tmp_path / 'killed.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    exe = str(Path(sys.executable).with_name('rtsr-train'))
    states = tmp_path / 'experiments/killed/training_states'
    proc = subprocess.Popen([exe, '-opt', str(path)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (states / '9.state').exists():
            assert proc.poll() is None and time.time() < deadline, 'training did not reach iteration 9'
            time.sleep(0.05)
        time.sleep(0.3)  # kill at an arbitrary moment after that, possibly mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    saved = sorted(int(p.stem) for p in states.glob('*.state'))
    last = saved[-1]
    for f in [*states.glob('*.state'), *(tmp_path / 'experiments/killed/models').glob('*.pth')]:
        torch.load(f, map_location='cpu', weights_only=False)  # complete files only: none truncated
    state = torch.load(states / f'{last}.state', map_location='cpu', weights_only=False)
    assert state['iter'] == last and set(state['networks']) == {'net_g', 'net_g_ema'}

    opt['train']['total_iter'] = last + 4
    log = _run(opt, tmp_path, '--auto_resume')
    assert f'Resuming training from epoch: {state["epoch"]}, iter: {last}.' in log
    lrs = _iter_lrs(log)
    assert sorted(lrs) == list(range(last + 1, last + 5))
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=3e-3)
    reference = build_scheduler(optimizer, opt['train']['scheduler'])
    optimizer.step()  # (no gradient: a no-op that keeps torch's step-order check quiet)
    for it in range(1, last + 5):
        if it > 1:
            reference.step()
        if it in lrs:
            assert lrs[it] == pytest.approx(reference.get_last_lr()[0], rel=2e-3)  # logged with 4 digits
    assert (tmp_path / 'experiments/killed/models/net_g_latest.pth').is_file()


def test_resume_state_loaded_on_cpu_and_teacher_path_kept(tmp_path):
    states = tmp_path / 'states'
    states.mkdir()
    for it in (3, 12, 6):
        torch.save({'iter': it, 'epoch': 0}, states / f'{it}.state')
    (states / '.15.state.abc.tmp').write_bytes(b'partial')
    opt = {'name': 'x', 'model_type': 'KDModel', 'auto_resume': True, 'network_g': {}, 'network_t': {},
           'path': {'training_states': str(states), 'models': str(tmp_path / 'models'), 'pretrain_network_t': 't.pth',
                    'resume_state': None}}
    state = load_resume_state(opt)
    assert state['iter'] == 12 and opt['path']['resume_state'] == str(states / '12.state')
    assert opt['path']['pretrain_network_t'] == 't.pth'
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'models' / 'net_g_12.pth')


def test_nonfinite_steps_are_skipped_then_stop(data_root, tmp_path, monkeypatch):
    opt = _options(data_root, 'nan', 10, max_nonfinite=2)
    model = _model(opt, tmp_path)
    model.feed_data(_batch())
    before = [p.detach().clone() for p in model.net_g.parameters()]
    real = model.compute_losses
    monkeypatch.setattr(model, 'compute_losses', lambda out: {k: v * float('nan') for k, v in real(out).items()})
    model.optimize_parameters(1)
    model.optimize_parameters(2)
    assert model.log_dict['nonfinite_skipped'] == 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.net_g.parameters()))
    with pytest.raises(FloatingPointError, match=r'iter 3: 3 non-finite steps in a row .*resume from the last'):
        model.optimize_parameters(3)
    monkeypatch.setattr(model, 'compute_losses', real)
    model.optimize_parameters(4)
    assert model.nonfinite_in_a_row == 0 and np.isfinite(model.log_dict['l_total'])


def test_optimizer_by_name_and_one_line_errors(data_root, tmp_path):
    sgd = _model(_options(data_root, 'sgd', 10, optim_g={'type': 'SGD', 'lr': 0.01, 'momentum': 0.9}), tmp_path)
    assert type(sgd.optimizer_g).__name__ == 'SGD'
    with pytest.raises(ValueError, match=r"^train.optim_g.type: 'Adamm' is not a torch.optim optimizer; "
                                         r"available: .*\bAdam\b.*\bAdamW\b"):
        _model(_options(data_root, 'bad', 10, optim_g={'type': 'Adamm', 'lr': 0.01}), tmp_path)
    with pytest.raises(ValueError, match=r"^train.mixed_precision: 'fp8' is not one of: None, fp16, bf16$"):
        _model(_options(data_root, 'bad', 10, mixed_precision='fp8'), tmp_path)
    with pytest.raises(ValueError, match=r"log name 'l_l1' is used twice"):
        _model(_options(data_root, 'bad', 10, losses=[{'type': 'L1Loss'}, {'type': 'L1Loss'}]), tmp_path)
    with pytest.raises(ValueError, match=r'no loss configured'):
        _model(_options(data_root, 'bad', 10, losses=[]), tmp_path)
    assert [loss_log_name({'type': t}) for t in ('L1Loss', 'HFLoss', 'FocalFrequencyLoss', 'CharbonnierLoss')] == \
        ['l_l1', 'l_hf', 'l_focal_frequency', 'l_charbonnier']


# ------------------------------------------------------------------------------------------------ KDModel
@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    """An untrained, fixed teacher: its outputs are far from HR, so pulling the student towards it is
    unambiguously the distillation's doing."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'params': build_network(TEACHER).state_dict()}, path)
    return path


def _kd_options(data_root, teacher_ckpt, name, total_iter, kd):
    opt = _options(data_root, name, total_iter, kd=kd)
    opt.update(model_type='KDModel', network_t=dict(TEACHER))
    opt['path']['pretrain_network_t'] = str(teacher_ckpt)
    return opt


def _distance_to_teacher(student_state, teacher_ckpt):
    student, teacher = build_network(STUDENT).eval(), build_network(TEACHER).eval()
    student.load_state_dict(student_state)
    teacher.load_state_dict(torch.load(teacher_ckpt)['params'])
    x = _lr_hr_tensors('chelsea', 60, 120, 96)[0]
    with torch.no_grad():
        return float((student(x) - teacher(x)).abs().mean())


def test_kd_student_ends_closer_to_teacher_and_teacher_is_untouched(data_root, teacher_ckpt, tmp_path):
    iters = 40
    kd = {'output': {'criterion': 'l1', 'loss_weight': 2.0},
          'features': [{'student': 'backbone.1', 'teacher': 'backbone.2', 'criterion': 'l2', 'loss_weight': 0.5}]}
    teacher_before = torch.load(teacher_ckpt)['params']
    runs = {}
    for name, opt in (('kd', _kd_options(data_root, teacher_ckpt, 'kd', iters, kd)),
                      ('plain', _options(data_root, 'plain', iters))):
        torch.manual_seed(0)
        model = _model(opt, tmp_path)
        batch = _batch()
        kd_losses = []
        for it in range(1, iters + 1):
            model.update_learning_rate(it)
            model.feed_data(batch)
            model.optimize_parameters(it)
            kd_losses.append((model.log_dict.get('l_kd_out'), model.log_dict.get('l_kd_backbone_1')))
        runs[name] = (model, kd_losses)

    kd_model, kd_losses = runs['kd']
    assert np.mean([o for o, _ in kd_losses[-5:]]) < np.mean([o for o, _ in kd_losses[:5]])
    assert np.mean([f for _, f in kd_losses[-5:]]) < np.mean([f for _, f in kd_losses[:5]])
    d_kd = _distance_to_teacher(kd_model.net_g.state_dict(), teacher_ckpt)
    d_plain = _distance_to_teacher(runs['plain'][0].net_g.state_dict(), teacher_ckpt)
    print(f'KD: l_kd_out {np.mean([o for o, _ in kd_losses[:5]]):.4f} -> {np.mean([o for o, _ in kd_losses[-5:]]):.4f}, '
          f'l_kd_backbone_1 {np.mean([f for _, f in kd_losses[:5]]):.4f} -> {np.mean([f for _, f in kd_losses[-5:]]):.4f}; '
          f'mean |student - teacher| with KD {d_kd:.4f}, without {d_plain:.4f}')
    assert d_kd < 0.8 * d_plain, (d_kd, d_plain)

    # the teacher: bit-identical, frozen, in eval mode, outside the optimizer and the checkpoints
    assert all(torch.equal(v, teacher_before[k]) for k, v in kd_model.net_t.state_dict().items())
    assert not kd_model.net_t.training and not any(p.requires_grad or p.grad is not None
                                                    for p in kd_model.net_t.parameters())
    optimized = {id(p) for g in kd_model.optimizer_g.param_groups for p in g['params']}
    assert not optimized & {id(p) for p in kd_model.net_t.parameters()}
    assert optimized >= {id(p) for p in kd_model.adapters.parameters()}
    kd_model.save(0, iters)
    saved = torch.load(tmp_path / f'experiments/kd/models/net_g_{iters}.pth')
    assert set(saved['params']) == set(build_network(STUDENT).state_dict())  # no teacher, no adapters
    state = torch.load(tmp_path / f'experiments/kd/training_states/{iters}.state', weights_only=False)
    assert set(state['networks']) == {'net_g', 'net_g_ema', 'kd_adapters'}


def test_kd_through_rtsr_train_and_resume_keeps_teacher(data_root, teacher_ckpt, tmp_path):
    kd = {'teacher_dtype': 'bf16', 'output': {'criterion': 'l2', 'loss_weight': 1.0},
          'features': [{'student': 'head', 'teacher': 'head', 'loss_weight': 0.1}]}
    opt = _kd_options(data_root, teacher_ckpt, 'kd_cli', 6, kd)
    opt['logger']['save_checkpoint_freq'] = 3
    log = _run(opt, tmp_path)
    assert len(_logged(log, 'l_kd_out')) == 6 and len(_logged(log, 'l_kd_head')) == 6
    opt['train']['total_iter'] = 8
    log = _run(opt, tmp_path, '--auto_resume')
    assert 'iter: 6.' in log and f'from {teacher_ckpt}' in log


def test_kd_one_line_errors(data_root, teacher_ckpt, tmp_path):
    bad = {'features': [{'student': 'backbone.7', 'teacher': 'head'}]}
    with pytest.raises(ValueError, match=r"^train.kd.features\[0\].student: no module 'backbone.7' in LRSRN; "
                                         r"available: head, .*backbone.1, .*upsampler$"):
        _model(_kd_options(data_root, teacher_ckpt, 'bad', 5, bad), tmp_path)
    with pytest.raises(ValueError, match='nothing to distil'):
        _model(_kd_options(data_root, teacher_ckpt, 'bad', 5, {}), tmp_path)
    opt = _kd_options(data_root, teacher_ckpt, 'bad', 5, {'output': {}})
    opt['path']['pretrain_network_t'] = str(tmp_path / 'models' / 'net_t_5.pth')
    with pytest.raises(ValueError, match=r'ignore_resume_networks: \[network_t\]'):
        _model(opt, tmp_path)
    opt['path']['pretrain_network_t'] = str(tmp_path / 'missing.pth')
    with pytest.raises(ValueError, match=r'missing.pth: no such checkpoint file'):
        _model(opt, tmp_path)
