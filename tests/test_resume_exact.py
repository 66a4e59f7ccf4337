"""Exact resume: a run killed at any moment (mid-iteration, inside a checkpoint save) and resumed
with ``--auto_resume`` ends with weights bit-identical to an uninterrupted run, also when the
newest training state is truncated and when the resumed run loads data with workers; orphaned
temporary files are removed and the training curves PNG is written."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from helpers import paired_datasets, write_noise_pairs

from rtsr_arch.training.data_order import ResumableSampler, SeededSamples

# Runs rtsr-train in this process, SIGKILLing it at KILL_AT_ITER (before that iteration's step)
# or inside the atomic save of the file named KILL_IN_SAVE (its temporary file complete, not renamed).
DRIVER = r'''
import os, signal, sys
from pathlib import Path
from rtsr_arch.utils import checkpoint
from rtsr_arch.models.rtsr_model import RTSRModel
from rtsr_arch.cli import train

kill_iter, kill_save = int(os.environ.get('KILL_AT_ITER', 0)), os.environ.get('KILL_IN_SAVE')
step, write = RTSRModel.optimize_parameters, checkpoint.atomic_write

def optimize_parameters(self, current_iter):
    if current_iter == kill_iter:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, current_iter)

def atomic_write(path, fill):
    def fill_then_die(f):
        fill(f)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return write(path, fill_then_die if Path(path).name == kill_save else fill)

RTSRModel.optimize_parameters, checkpoint.atomic_write = optimize_parameters, atomic_write
train(sys.argv[1:])
'''


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """Five 32x32 HR / 16x16 LR pairs of smooth random images (train) and one (val)."""
    root = tmp_path_factory.mktemp('data')
    write_noise_pairs(root, {'train': 5, 'val': 1}, seed=0)
    return root


def _options(data_root, name, workers=0):
    return {
        'name': name, 'model_type': 'RTSRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 7,
        # 5 pairs, batch 2: the kills land mid-epoch and at its end
        'datasets': paired_datasets(data_root, gt_size=16, batch=2, workers=workers),
        'network_g': {'type': 'LRSRN', 'num_feat': 8, 'num_block': 1, 'feature_size': 16, 'upscale': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 2e-3}, 'total_iter': 12, 'warmup_iter': -1,
                  'scheduler': {'type': 'CosineWarmupLR', 'total_iters': 12, 'warmup_iters': 2, 'min_lr': 1e-4},
                  'losses': [{'type': 'L1Loss', 'loss_weight': 1.0}], 'deploy_export': False},
        'val': {'val_freq': 6, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 3, 'use_tb_logger': False, 'wandb': {'project': None}},
    }


def _train(opt, cwd, *flags, kill_at=0, kill_in_save=None):
    path = Path(cwd) / f"{opt['name']}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    env = {**os.environ, 'KILL_AT_ITER': str(kill_at), 'KILL_IN_SAVE': kill_in_save or '', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-c', DRIVER, '-opt', str(path), *flags], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    killed = bool(kill_at or kill_in_save)
    assert proc.returncode == (-9 if killed else 0), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def _final(cwd, name):
    return torch.load(Path(cwd) / 'experiments' / name / 'models/net_g_latest.pth', map_location='cpu')


def test_killed_anywhere_and_resumed_run_is_bit_identical(data_root, tmp_path):
    ref_dir, run_dir = tmp_path / 'ref', tmp_path / 'run'
    ref_dir.mkdir(), run_dir.mkdir()
    _train(_options(data_root, 'exact'), ref_dir)
    reference = _final(ref_dir, 'exact')

    opt = _options(data_root, 'exact')
    states = run_dir / 'experiments/exact/training_states'
    _train(opt, run_dir, kill_at=5)  # mid-epoch 2, after the state of iteration 3
    assert sorted(p.name for p in states.iterdir()) == ['3.state']
    _train(opt, run_dir, '--auto_resume', kill_in_save='9.state')  # killed while writing 9.state
    orphans = list(states.glob('.9.state.*.tmp'))
    assert sorted(p.name for p in states.glob('*.state')) == ['3.state', '6.state'] and len(orphans) == 1
    (states / '6.state').write_bytes((states / '6.state').read_bytes()[:1000])  # a truncated newest state

    # resumed from 3.state with a warning for 6.state, loading data with two workers now
    proc = _train(_options(data_root, 'exact', workers=2), run_dir, '--auto_resume')
    warnings = [line for line in proc.stderr.splitlines() if 'warning' in line]
    assert len(warnings) == 1 and '6.state' in warnings[0] and 'resuming from 3.state' in warnings[0], warnings
    assert 'Resuming training from epoch: 1, iter: 3.' in proc.stdout + proc.stderr
    assert not list(states.glob('.*.tmp'))
    final = _final(run_dir, 'exact')
    assert final.keys() == reference.keys() == {'params', 'params_ema', 'network_g'}
    for key in ('params', 'params_ema'):
        assert final[key].keys() == reference[key].keys()
        for name, tensor in reference[key].items():
            assert torch.equal(final[key][name], tensor), f'{key}.{name} differs'

    # the curves PNG beside the log, and its data in the states, span the whole run
    png = run_dir / 'experiments/exact/curves_exact.png'
    with Image.open(png) as img:
        img.verify()
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    state = torch.load(states / '12.state', map_location='cpu', weights_only=False)
    assert [i for i, _ in state['loop']['curves']['train']['l_l1']] == list(range(1, 13))
    assert [i for i, _ in state['loop']['curves']['val']['held_out']['psnr']] == [6, 12]


class _Indexed:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return index, torch.rand(()).item()


def test_sampler_positions_are_split_and_skipped_consistently():
    """Two ranks cover one rank's positions (BasicSR's split), a skipped start continues the
    order, and a sample's random draws depend on its position only."""
    data = SeededSamples(_Indexed(7))
    one = [data[item] for item in ResumableSampler(data, 1, 0, ratio=2, seed=3)]
    two = [ResumableSampler(data, 2, r, ratio=2, seed=3) for r in (0, 1)]
    for s in two:
        s.set_epoch(0)
    merged = [data[item] for pair in zip(*two) for item in pair]
    assert merged == one and len(one) == 14 and sorted({i for i, _ in one}) == list(range(7))
    resumed = ResumableSampler(data, 1, 0, ratio=2, seed=3)
    resumed.set_epoch(0, skip=5)
    assert len(resumed) == 9 and [data[item] for item in resumed] == one[5:]
    other_epoch = ResumableSampler(data, 1, 0, ratio=2, seed=3)
    other_epoch.set_epoch(1)
    assert [data[item] for item in other_epoch] != one
    state = torch.get_rng_state()
    data[(0, 1)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generators are left alone
