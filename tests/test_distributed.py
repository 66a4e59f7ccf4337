"""Multi-process training through torchrun and BasicSR's ``--launcher pytorch`` on this CPU
machine (gloo): two processes with half the batch each follow the one-process trajectory, only
rank 0 writes, a resumed two-process run continues it, KDModel's teacher stays outside DDP and
the EMA lives on rank 0 only."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import paired_datasets, write_noise_pairs

from rtsr_arch.loader import save_checkpoint
from rtsr_arch.utils.distributed import BACKEND_ENV, choose_backend
from rtsr_arch.utils.options import build_network

# rtsr-train, recording every atomic write and the model each rank built in $RECORD.
DRIVER = r'''
import os, sys
from pathlib import Path
import rtsr_arch.loader
from rtsr_arch.utils import checkpoint
from rtsr_arch.models.kd_model import KDModel
from rtsr_arch.cli import train

rank = os.environ.get('RANK', '0')
def record(line):
    with open(os.environ['RECORD'], 'a') as f:
        f.write(f'{rank} {line}\n')

write, init = checkpoint.atomic_write, KDModel.init_training_settings
def atomic_write(path, fill):
    record(f'write {Path(path).name}')
    return write(path, fill)

def init_training_settings(self):
    init(self)
    record(f'model {type(self.net_g).__name__} {type(self.net_t).__name__} ema={hasattr(self, "net_g_ema")}')

checkpoint.atomic_write = rtsr_arch.loader.atomic_write = atomic_write
KDModel.init_training_settings = init_training_settings
train(sys.argv[1:])
'''
STUDENT = {'type': 'LRSRN', 'num_feat': 8, 'num_block': 1, 'feature_size': 16, 'upscale': 2}
TEACHER = {'type': 'LRSRN', 'num_feat': 12, 'num_block': 1, 'feature_size': 16, 'upscale': 2}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Four 32x32/16x16 training pairs, one validation pair, and a teacher checkpoint."""
    root = tmp_path_factory.mktemp('dist')
    write_noise_pairs(root, {'train': 4, 'val': 1}, seed=1)
    torch.manual_seed(0)
    save_checkpoint(root / 'teacher.pth', build_network(TEACHER).state_dict(), TEACHER)
    return root


def _options(root, name, batch, total_iter):
    return {
        'name': name, 'model_type': 'KDModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 5, 'dist_backend': 'gloo',
        'datasets': paired_datasets(root, gt_size=16, batch=batch, enlarge=2),
        'network_g': dict(STUDENT),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'pretrain_network_t': str(root / 'teacher.pth')},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 2e-3}, 'total_iter': total_iter,
                  'warmup_iter': -1, 'losses': [{'type': 'L1Loss', 'loss_weight': 1.0}],
                  'kd': {'output': {'criterion': 'l1', 'loss_weight': 0.5},
                         'features': [{'student': 'head', 'teacher': 'head', 'loss_weight': 0.1}]}},
        'val': {'val_freq': 2, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False, 'wandb': {'project': None}},
    }


def _train(opt, cwd, nproc, *flags):
    path = Path(cwd) / f"{opt['name']}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    driver = Path(cwd) / 'driver.py'
    driver.write_text(DRIVER)
    launch = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc)]
              if nproc > 1 else [sys.executable])
    env = {**os.environ, 'RECORD': str(Path(cwd) / 'record.txt'), 'OMP_NUM_THREADS': '1'}
    env.pop(BACKEND_ENV, None)
    flags = ['--launcher', 'pytorch', *flags] if nproc > 1 else list(flags)
    proc = subprocess.run([*launch, str(driver), '-opt', str(path), *flags], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _losses(log):
    return {int(i): float(v) for i, v in re.findall(r'iter:\s+(\d+),.*?l_total: (\S+)', log)}


def test_two_processes_follow_one_and_only_rank_0_writes(setup, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    one.mkdir(), two.mkdir()
    log_one = _train(_options(setup, 'run', 4, 6), one, 1)
    log_two = _train(_options(setup, 'run', 2, 4), two, 2)
    log_two += _train(_options(setup, 'run', 2, 6), two, 2, '--auto_resume')  # resumed from 4.state
    assert 'Resuming training from epoch: 1, iter: 4.' in log_two

    # the same trajectory: per-iteration losses (averaged over the ranks) and the final weights
    losses_one, losses_two = _losses(log_one), _losses(log_two)
    assert sorted(losses_one) == sorted(losses_two) == list(range(1, 7))
    assert [losses_two[i] for i in range(1, 7)] == pytest.approx([losses_one[i] for i in range(1, 7)], rel=1e-3)
    assert losses_one[6] < losses_one[1]
    final = {d: torch.load(d / 'experiments/run/models/net_g_latest.pth', map_location='cpu') for d in (one, two)}
    for key in ('params', 'params_ema'):
        for name, tensor in final[one][key].items():
            torch.testing.assert_close(final[two][key][name], tensor, rtol=1e-4, atol=1e-5)
    states = {d: torch.load(d / 'experiments/run/training_states/6.state', map_location='cpu', weights_only=False)
              for d in (one, two)}
    for name, tensor in states[one]['networks']['kd_adapters'].items():  # trained outside DDP, averaged too
        torch.testing.assert_close(states[two]['networks']['kd_adapters'][name], tensor, rtol=1e-4, atol=1e-5)
    psnr = states[two]['loop']['curves']['val']['held_out']['psnr']  # validations of both launches (rank 0)
    assert [i for i, _ in psnr] == [2, 4, 6]
    reference = states[one]['loop']['curves']['val']['held_out']['psnr']
    assert [v for _, v in psnr] == pytest.approx([v for _, v in reference], abs=1e-3)

    # rank 1 wrote nothing; rank 0 wrote checkpoints, deploy exports, states and curves
    records = (two / 'record.txt').read_text().splitlines()
    writes = [line.split()[2] for line in records if line.split()[1] == 'write']
    assert all(line.startswith('0 ') for line in records if ' write ' in line)
    assert {'net_g_2.pth', 'net_g_deploy_2.pth', '2.state', '6.state', 'net_g_latest.pth',
            'curves_run.png'} <= set(writes)
    assert len(list((two / 'experiments/run').glob('train_run_*.log'))) == 2  # one per launch, rank 0's
    # the teacher is not wrapped in DDP, the student is; the EMA exists on rank 0 only
    models = sorted({line for line in records if ' model ' in line})
    assert models == ['0 model DistributedDataParallel LRSRN ema=True',
                      '1 model DistributedDataParallel LRSRN ema=False']


def test_backend_choice(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    cuda = torch.cuda.is_available()
    assert choose_backend({'num_gpu': 0}) == 'gloo'
    assert choose_backend({'num_gpu': 1}) == ('nccl' if cuda else 'gloo')
    assert choose_backend({'dist_params': {'backend': 'mpi'}}) == 'mpi'
    assert choose_backend({'dist_backend': 'gloo', 'dist_params': {'backend': 'nccl'}}) == 'gloo'
    monkeypatch.setenv(BACKEND_ENV, 'nccl')
    assert choose_backend({'dist_backend': 'gloo'}) == 'nccl'
