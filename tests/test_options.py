"""Every recipe in options/ names registered types and buildable networks."""
import pytest

import rtsr_arch  # noqa: F401
from rtsr_arch.utils.options import build_network, check_options, load_options
from helpers import ROOT

OPTION_FILES = sorted((ROOT / 'options').rglob('*.yml'))


def test_recipes_exist():
    names = {p.relative_to(ROOT / 'options').as_posix() for p in OPTION_FILES}
    for scale in (2, 3):
        assert f'train/LRSRN/train_LRSRN_x{scale}_stage1_L1.yml' in names
        assert f'train/LRSRN/train_LRSRN_x{scale}_stage2_MSE.yml' in names
        assert f'train/LRSRN/train_LRSRN_x{scale}_stage3_KD.yml' in names
        assert f'train/RT4KSR/train_RT4KSR_x{scale}.yml' in names
        assert f'test/LRSRN/test_LRSRN_x{scale}.yml' in names
        assert f'test/RT4KSR/test_RT4KSR_x{scale}.yml' in names


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: p.name)
def test_option_file_is_valid(path):
    opt = load_options(path)
    check_options(opt, path)
    net = build_network(opt['network_g'])
    assert net.upscale == opt['scale']
    assert '# CHANGE ME' in path.read_text()  # the paths a user must edit are marked
    if path.parts[-3] == 'test':
        assert opt['network_g']['deploy'] is True
    else:
        assert opt['logger']['use_tb_logger'] in (True, False)


@pytest.mark.parametrize('scale', [2, 3])
def test_lrsrn_stages_chain(scale):
    stages = [load_options(ROOT / f'options/train/LRSRN/train_LRSRN_x{scale}_{s}.yml')
              for s in ('stage1_L1', 'stage2_MSE', 'stage3_KD')]
    for previous, stage in zip(stages, stages[1:]):
        assert stage['path']['pretrain_network_g'].startswith(f"experiments/{previous['name']}/models/")
        assert stage['network_g'] == previous['network_g']
    assert [s['train']['losses'][0]['type'] for s in stages] == ['L1Loss', 'MSELoss', 'MSELoss']
    assert [s['train']['optim_g']['lr'] for s in stages] == [5e-4, 1e-4, 5e-5]
    for stage in stages:  # the official settings: AMP, clipping 0.1, cosine cycles halving
        assert stage['train']['mixed_precision'] == 'fp16' and stage['train']['grad_clip'] == 0.1
        assert stage['train']['scheduler']['type'] == 'CosineRestartCyclesLR'
    assert stages[0]['datasets']['train']['gt_size'] == 384 and stages[0]['datasets']['train']['batch_size_per_gpu'] == 8
    assert stages[2]['model_type'] == 'KDModel' and stages[2]['path']['ignore_resume_networks'] == ['network_t']


def test_casr_stages_chain_to_the_bias_free_student():
    stages = [load_options(p) for p in sorted((ROOT / 'options/train/CASR').glob('*.yml'))]
    assert [s['name'] for s in stages] == ['CASR_x4_stage1_scratch_L1', 'CASR_x4_stage2_KD_L2',
                                           'CASR_x4_stage3_KD_nobias']
    for previous, stage in zip(stages, stages[1:]):
        assert stage['path']['pretrain_network_g'].startswith(f"experiments/{previous['name']}/models/")
    assert [s['network_g'].get('bias', True) for s in stages] == [True, True, False]
    assert stages[2]['path']['strict_load_g'] is False  # stage 2's biases are dropped on load
    teacher = build_network(stages[1]['network_t'])
    assert sum(p.numel() for p in teacher.parameters()) == 398_768  # the official CASR teacher (deploy)
    # the CASR network itself (rlghksdbs/CASR configs/AIS_{scratch,finetune,lasttune}_model.yml), the same
    # except for the bias; stage 3 loads stage 2's weights non-strictly: only the 19 biases are dropped
    students = [build_network(s['network_g']) for s in stages]
    assert [type(n).__name__ for n in students] == ['CASR'] * 3
    assert [{k: v for k, v in n.network_opt.items() if k != 'bias'} for n in students] == \
        [{k: v for k, v in students[0].network_opt.items() if k != 'bias'}] * 3
    assert sum(p.numel() for p in students[0].parameters()) == 382_033
    result = students[2].load_state_dict(students[1].state_dict(), strict=False)
    assert not result.missing_keys and len(result.unexpected_keys) == 19
    assert all(k.endswith('.bias') for k in result.unexpected_keys)
    assert [s['model_type'] for s in stages] == ['RTSRModel', 'KDModel', 'KDModel']
    assert [s['train']['losses'][0]['type'] for s in stages] == ['L1Loss', 'MSELoss', 'MSELoss']
    assert [(s['train']['optim_g']['type'], s['train']['optim_g']['lr']) for s in stages] == \
        [('Adam', 5e-4), ('Adam', 5e-5), ('AdamW', 5e-5)]
    assert [s['train']['scheduler']['min_lr'] for s in stages] == [1e-6, 1e-6, 1e-8]
    assert all(s['train']['kd']['output'] == {'criterion': 'l2', 'loss_weight': 0.1} for s in stages[1:])
    assert all(s['network_t'] == stages[1]['network_t'] for s in stages[1:])
    for stage in stages:  # HR patch 384, batch 8, AMP, clipping 0.1, cosine restarts
        train = stage['datasets']['train']
        assert train['gt_size'] == 384 and train['batch_size_per_gpu'] == 8
        assert stage['train']['mixed_precision'] == 'fp16' and stage['train']['grad_clip'] == 0.1
        assert stage['train']['scheduler']['type'] == 'CosineRestartCyclesLR'
    assert [sorted(s['datasets']['train']['dataroots_lq']) for s in stages] == \
        [['qp31'], [f'qp{q}' for q in (31, 39, 47, 55, 63)], [f'qp{q}' for q in (31, 39, 47, 55, 63)]]


@pytest.mark.parametrize('path', [p for p in OPTION_FILES if p.parts[-3] == 'train'], ids=lambda p: p.name)
def test_training_recipe_builds_its_model(path, tmp_path):
    """Every training recipe builds its model on the CPU: losses, optimizer, scheduler, and for
    distillation the teacher (random weights stand in for the checkpoint) and feature adapters."""
    import torch
    from basicsr.models import build_model

    opt = load_options(path)
    exp = tmp_path / 'exp'
    opt.update(num_gpu=0, is_train=True, dist=False, rank=0, world_size=1, auto_resume=False, root_path=str(tmp_path))
    opt['path'].update(pretrain_network_g=None, models=str(exp / 'models'), training_states=str(exp / 'states'),
                       experiments_root=str(exp), log=str(exp), visualization=str(exp / 'vis'))
    if 'network_t' in opt:
        teacher = tmp_path / 'teacher.pth'
        torch.save({'params': build_network(opt['network_t']).state_dict()}, teacher)
        opt['path']['pretrain_network_t'] = str(teacher)
        assert opt['path']['ignore_resume_networks'] == ['network_t']
    model = build_model(opt)
    assert type(model).__name__ == opt['model_type']
    assert model.schedulers and model.optimizer_g.param_groups[0]['lr'] == opt['train']['optim_g']['lr']
