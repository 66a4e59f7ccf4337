"""Every recipe in options/ names registered types and buildable networks."""
import pytest

import rtsr_arch  # noqa: F401
from rtsr_arch.utils.options import build_network, check_options, load_options
from conftest import ROOT

OPTION_FILES = sorted((ROOT / 'options').rglob('*.yml'))


def test_recipes_exist():
    names = {p.relative_to(ROOT / 'options').as_posix() for p in OPTION_FILES}
    for scale in (2, 3):
        assert f'train/LRSRN/train_LRSRN_x{scale}_stage1_L1.yml' in names
        assert f'train/LRSRN/train_LRSRN_x{scale}_stage2_MSE.yml' in names
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
def test_lrsrn_stage2_starts_from_stage1(scale):
    stage1 = load_options(ROOT / f'options/train/LRSRN/train_LRSRN_x{scale}_stage1_L1.yml')
    stage2 = load_options(ROOT / f'options/train/LRSRN/train_LRSRN_x{scale}_stage2_MSE.yml')
    assert stage2['path']['pretrain_network_g'].startswith(f"experiments/{stage1['name']}/models/")
    assert stage1['train']['pixel_opt']['type'] == 'L1Loss' and stage2['train']['pixel_opt']['type'] == 'MSELoss'
    assert stage1['train']['optim_g']['lr'] == 5e-4 and stage2['train']['optim_g']['lr'] == 1e-4
    assert stage1['network_g'] == stage2['network_g']
    assert stage1['datasets']['train']['gt_size'] == 384 and stage1['datasets']['train']['batch_size_per_gpu'] == 8
