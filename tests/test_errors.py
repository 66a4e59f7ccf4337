"""Every error a user can cause ends in one line naming the culprit, nothing is overwritten, and the
newcomer path (an unmodified recipe with its data paths changed, on a CPU) runs end to end.

Each error case asserts: a non-zero exit status, exactly one line (``PROG: error: ...``) naming
the file, key or value, no traceback, and every file of the case (data, option file, checkpoints)
byte-identical afterwards. Run in-process through the commands' ``main()`` and ``rtsr_arch.cli``
(one case checks stderr at the file-descriptor level).
"""
import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data as skdata

from rtsr_arch.archs.rep import reparameterize
from rtsr_arch.cli import test as cli_test
from rtsr_arch.cli import train as cli_train
from rtsr_arch.commands import convert, degrade, export, reparam
from rtsr_arch.loader import save_model
from rtsr_arch.utils.options import build_network
from helpers import paired_datasets, write_photo_pairs, ROOT, official_fixture

NET = {'type': 'LRSRN', 'num_feat': 8, 'num_block': 2, 'feature_size': 16, 'upscale': 2}


@pytest.fixture
def fresh_log(monkeypatch):
    """BasicSR's logger as in a new process: earlier tests in this process left its console
    handler on their own (captured) streams, so this test's output would not be seen."""
    from basicsr.utils import logger as basicsr_logger
    monkeypatch.setattr(logging.getLogger('basicsr'), 'handlers', [])
    monkeypatch.setattr(basicsr_logger, 'initialized_logger', {})


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """Tiny HR/LR folders (real photographs), checkpoints and the folders the error cases need."""
    root = tmp_path_factory.mktemp('errors')
    write_photo_pairs(root / 'train', {'astronaut': skdata.astronaut()[:96, :96], 'coffee': skdata.coffee()[100:196, 200:296]})
    write_photo_pairs(root / 'val', {'rocket': skdata.rocket()[200:264, 300:364]})
    write_photo_pairs(root / 'jpeg_lr', {'chelsea': skdata.chelsea()[:64, :64]}, lr_suffix='.jpg')
    write_photo_pairs(root / 'wrong_size', {'chelsea': skdata.chelsea()[:64, :64]})
    Image.fromarray(skdata.chelsea()[:30, :30]).save(root / 'wrong_size' / 'lr' / 'chelsea.png')
    write_photo_pairs(root / 'corrupt', {'astronaut': skdata.astronaut()[:64, :64]})
    png = (root / 'corrupt' / 'hr' / 'astronaut.png').read_bytes()
    (root / 'corrupt' / 'hr' / 'astronaut.png').write_bytes(png[:120])  # header intact, pixels cut off
    (root / 'empty').mkdir()
    net = build_network(NET)
    save_model(net, root / 'pre.pth')
    save_model(reparameterize(build_network(NET)), root / 'pre_deploy.pth')
    (root / 'truncated.pth').write_bytes((root / 'pre.pth').read_bytes()[:600])
    (root / 'a_file').write_text('not a folder')
    return root


def _options(root, **changes):
    opt = {
        'name': 'tiny', 'model_type': 'RTSRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': paired_datasets(root, gt_size=32, batch=2),
        'network_g': dict(NET),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 2, 'warmup_iter': -1,
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'losses': [{'type': 'L1Loss', 'loss_weight': 1.0}]},
        'val': {'val_freq': 100, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 100, 'use_tb_logger': False, 'wandb': {'project': None}}}
    for dotted, value in changes.items():
        node = opt
        *parents, leaf = dotted.split('.')
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value.format(root=root) if isinstance(value, str) else value
    return opt


_DELETE = object()


def _hashes(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}


def _one_line(message, prog, fragments):
    message = str(message)
    assert '\n' not in message and 'Traceback' not in message, message
    assert message.startswith(f'{prog}: error: '), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# name: (option changes, fragments the line must hold)
TRAIN_CASES = {
    'negative block count': ({'network_g.num_block': -1}, ['network_g: LRSRN: num_block=-1', 'int >= 0']),
    'string for a boolean': ({'network_g.bias': 'no'}, ["bias='no'", 'expected a bool']),
    'negative total_iter': ({'train.total_iter': -5}, ['train.total_iter: -5', '>= 1']),
    'batch size 0': ({'datasets.train.batch_size_per_gpu': 0}, ['datasets.train.batch_size_per_gpu: 0']),
    'crop size 0': ({'datasets.train.gt_size': 0}, ['datasets.train.gt_size: 0']),
    'crop larger than images': ({'datasets.train.gt_size': 128}, ['gt_size: 128 is larger', 'astronaut.png']),
    'lr as text': ({'train.optim_g.lr': '5e-4'}, ["train.optim_g.lr: '5e-4' is not a number", '!!float']),
    'missing section': ({'datasets': _DELETE}, ['datasets: missing']),
    'missing train section': ({'train': _DELETE}, ['train: missing']),
    'scale vs upscale': ({'scale': 3}, ['scale: 3 contradicts network_g', 'upscale 2']),
    'print_freq 0': ({'logger.print_freq': 0}, ['logger.print_freq: 0']),
    'unknown precision': ({'train.mixed_precision': 'fp8'}, ["train.mixed_precision: 'fp8'"]),
    'GPUs that are not there': ({'num_gpu': 2}, ['num_gpu: 2 but this machine has', 'auto']),
    'missing folder': ({'datasets.train.dataroot_gt': '{root}/nope'}, ['datasets.train.dataroot_gt: no such folder']),
    'empty folder': ({'datasets.train.dataroot_lq': '{root}/empty'}, ['datasets.train.dataroot_lq: no images']),
    'LR named differently': ({'datasets.val.dataroot_gt': '{root}/jpeg_lr/hr', 'datasets.val.dataroot_lq':
                              '{root}/jpeg_lr/lr'}, ['no chelsea.png', 'found chelsea.jpg', 'MultiLRPairedDataset']),
    'LR not HR / scale': ({'datasets.val.dataroot_gt': '{root}/wrong_size/hr', 'datasets.val.dataroot_lq':
                           '{root}/wrong_size/lr'}, ['chelsea.png is 30x30', 'HR', '64x64']),
    'missing checkpoint': ({'path.pretrain_network_g': '{root}/absent.pth'}, ['path.pretrain_network_g: no such file']),
    'truncated checkpoint': ({'path.pretrain_network_g': '{root}/truncated.pth'},
                             ['truncated.pth: cannot be read as a torch checkpoint']),
    'wrong architecture': ({'path.pretrain_network_g': '{root}/pre.pth', 'network_g.num_feat': 12},
                           ['pre.pth [params]: does not match LRSRN', 'shape mismatches']),
    'deploy form vs training form': ({'path.pretrain_network_g': '{root}/pre_deploy.pth'},
                                     ['holds the deploy (reparameterized) form', 'deploy: true']),
    'param_key_g that does not exist': ({'path.pretrain_network_g': '{root}/pre.pth', 'path.param_key_g': 'params_ema'},
                                        ["no 'params_ema' entry", 'entries holding weights: params']),
    'missing resume state': ({'path.resume_state': '{root}/absent.state'}, ['path.resume_state: no such file']),
    'distillation without a teacher': ({'model_type': 'KDModel', 'train.kd': {'output': {'loss_weight': 0.1}}},
                                       ['path.pretrain_network_t', 'teacher']),
    'unreadable image inside BasicSR': ({'datasets.train.dataroot_gt': '{root}/corrupt/hr',
                                         'datasets.train.dataroot_lq': '{root}/corrupt/lr',
                                         'datasets.train.batch_size_per_gpu': 1},
                                        ['corrupt/hr/astronaut.png', 'cannot be read as an HR/LR pair']),
}


@pytest.mark.parametrize('case', list(TRAIN_CASES))
def test_train_error_is_one_line_and_nothing_changes(root, tmp_path, monkeypatch, capsys, case):
    changes, fragments = TRAIN_CASES[case]
    path = tmp_path / 'case.yml'
    path.write_text(yaml.safe_dump(_options(root, **changes), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    before = {**_hashes(root), path: hashlib.sha256(path.read_bytes()).hexdigest()}
    with pytest.raises(SystemExit) as exc:
        cli_train(['-opt', str(path)])
    assert exc.value.code not in (0, None)
    _one_line(exc.value.code, 'rtsr-train', fragments)
    assert 'Traceback' not in capsys.readouterr().err
    assert {**_hashes(root), path: hashlib.sha256(path.read_bytes()).hexdigest()} == before


def test_force_yml_is_checked_too(root, tmp_path, monkeypatch):
    path = tmp_path / 'ok.yml'
    path.write_text(yaml.safe_dump(_options(root), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    for argv, fragments in ((['--force_yml', 'train:total_iter=0'], ['train.total_iter: 0']),
                            (['--force_yml', 'trian:total_iter=2'], ['--force_yml trian:total_iter=2', 'no trian'])):
        with pytest.raises(SystemExit) as exc:
            cli_train(['-opt', str(path), *argv])
        _one_line(exc.value.code, 'rtsr-train', fragments)
    assert not (tmp_path / 'experiments').exists()


def test_debug_shows_the_traceback(root, tmp_path, monkeypatch):
    """``RTSR_DEBUG=1`` (or ``--debug``) lets the exception through (negative control of the boundary)."""
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(_options(root, **{'network_g.num_block': -1}), sort_keys=False))
    monkeypatch.setenv('RTSR_DEBUG', '1')
    with pytest.raises(ValueError, match='num_block=-1'):
        cli_train(['-opt', str(path)])


def test_error_inside_basicsr_leaves_stderr_to_the_error_line(root, tmp_path, monkeypatch, capfd, fresh_log):
    """At the file-descriptor level: BasicSR's log on stdout, nothing on stderr but the error line
    (which ``sys.exit`` prints; OpenCV's decoder warning silenced), the traceback in the run's log."""
    path = tmp_path / 'corrupt.yml'
    path.write_text(yaml.safe_dump(_options(root, **{'datasets.train.dataroot_gt': '{root}/corrupt/hr',
                                                     'datasets.train.dataroot_lq': '{root}/corrupt/lr',
                                                     'datasets.train.batch_size_per_gpu': 1})))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli_train(['-opt', str(path)])
    out, err = capfd.readouterr()
    assert err == '' and 'Model [RTSRModel] is created' in out, err
    _one_line(exc.value.code, 'rtsr-train', ['astronaut.png', 'traceback in'])
    log = Path(re.search(r'traceback in (\S+)\)', exc.value.code).group(1))
    assert 'Traceback (most recent call last)' in log.read_text()


TEST_CASES = {
    'no val section': ({'val': _DELETE, 'datasets.train': _DELETE}, ['val: missing']),
    'training checkpoint for a deploy network': (
        {'datasets.train': _DELETE, 'network_g.deploy': True, 'path.pretrain_network_g': '{root}/pre.pth'},
        ['holds the training form', 'rtsr-reparam']),
}


@pytest.mark.parametrize('case', list(TEST_CASES))
def test_test_pipeline_errors_are_one_line(root, tmp_path, monkeypatch, case):
    changes, fragments = TEST_CASES[case]
    opt = _options(root, **changes)
    opt.pop('train'), opt.pop('logger')
    path = tmp_path / 'test.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    before = _hashes(root)
    with pytest.raises(SystemExit) as exc:
        cli_test(['-opt', str(path)])
    _one_line(exc.value.code, 'rtsr-test', fragments)
    assert _hashes(root) == before


# ----------------------------------------------------------------------------- the tools

def _tool_cases(root, tmp):
    """(main, argv, fragments) of each tool error; ``tmp`` holds files a case may need."""
    train_yml = tmp / 'train.yml'
    train_yml.write_text(yaml.safe_dump(_options(root), sort_keys=False))
    ckpt = tmp / 'train.pth'
    ckpt.write_bytes((root / 'pre.pth').read_bytes())
    existing = tmp / 'existing.pth'
    existing.with_suffix('.yml').write_text('keep: me\n')
    return [
        (reparam.main, ['--ckpt', ckpt, '--out', ckpt], ['is the --ckpt file']),
        (reparam.main, ['--ckpt', ckpt, '--opt', train_yml, '--out', ckpt.with_name('train.safetensors')],
         ['train.yml: is the --opt file']),
        (reparam.main, ['--ckpt', root / 'truncated.pth', '--out', tmp / 'o.pth'], ['truncated.pth: cannot be read']),
        (reparam.main, ['--ckpt', root / 'pre_deploy.pth', '--out', tmp / 'o.pth'], ['deploy']),
        (reparam.main, ['--ckpt', ckpt, '--out', root / 'a_file' / 'o.pth'], ['a_file']),
        (reparam.main, ['--ckpt', ckpt, '--out', tmp / 'o.pth', '--test-gt', tmp], ['--test-gt and --test-lq']),
        (convert.main, ['--input', ckpt, '--out', ckpt], ['is the --input file']),
        (convert.main, ['--input', ckpt, '--out', existing], ['existing.yml: already exists', '--overwrite']),
        (export.main, [ckpt, '--out', ckpt], ['is the MODEL file']),
    ]


def test_tool_errors_are_one_line_and_inputs_are_kept(root, tmp_path, capsys):
    cases = _tool_cases(root, tmp_path)
    before = {**_hashes(root), **_hashes(tmp_path)}
    for main, argv, fragments in cases:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1, (argv, err)
        _one_line(err[0], f"rtsr-{main.__module__.rsplit('.', 1)[-1]}", fragments)
    assert {**_hashes(root), **_hashes(tmp_path)} == before


# ----------------------------------------------------------------------------- offline LR and the datasets

def test_degraded_jpeg_lr_pairs_with_multi_lr_dataset_not_paired_image_dataset(root, tmp_path, monkeypatch):
    """What README says about rtsr-degrade's folders: encoded LR (q90/<stem>.jpg) pairs with
    MultiLRPairedDataset by stem; PairedImageDataset needs --format png, else one line says so."""
    from rtsr_arch.data.multi_lr_paired_dataset import MultiLRPairedDataset

    assert degrade.main([str(root / 'val' / 'hr'), '--out', str(tmp_path / 'lr'), '--preset', 'ntire23',
                         '--scale', '2', '--save-hr']) == 0
    hr = tmp_path / 'lr' / 'hr' / 'rocket.png'
    assert (tmp_path / 'lr' / 'q90' / 'rocket.jpg').is_file() and hr.is_file()
    ds = MultiLRPairedDataset({'dataroot_gt': str(hr.parent), 'dataroots_lq': {'q90': str(tmp_path / 'lr' / 'q90')},
                               'scale': 2, 'phase': 'val'})
    sample = ds[0]
    assert sample['level_name'] == 'q90' and tuple(sample['lq'].shape) == (3, 32, 32)
    assert tuple(sample['gt'].shape) == (3, 64, 64)

    path = tmp_path / 'paired.yml'
    path.write_text(yaml.safe_dump(_options(root, **{'datasets.val.dataroot_gt': str(hr.parent),
                                                     'datasets.val.dataroot_lq': str(tmp_path / 'lr' / 'q90')})))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli_train(['-opt', str(path)])
    _one_line(exc.value.code, 'rtsr-train', ['no rocket.png', 'found rocket.jpg', 'MultiLRPairedDataset'])

    assert degrade.main([str(root / 'val' / 'hr'), '--out', str(tmp_path / 'png'), '--preset', 'ntire23',
                         '--scale', '2', '--save-hr', '--format', 'png']) == 0
    assert (tmp_path / 'png' / 'q90' / 'rocket.png').is_file()  # --format png: the names PairedImageDataset pairs


# ----------------------------------------------------------------------------- the newcomer path

def _recipe_with_data(recipe, hr, lr):
    """The recipe's text with only its data paths (the ``# CHANGE ME`` dataroots) replaced."""
    text = recipe.read_text()
    text = re.sub(r'(dataroot_gt: )\S+(\s+# CHANGE ME)', rf'\g<1>{hr}\2', text)
    return re.sub(r'(dataroot_lq: )\S+(\s+# CHANGE ME)', rf'\g<1>{lr}\2', text)


def test_newcomer_path_on_cpu(tmp_path, monkeypatch, capsys, fresh_log):
    """An unmodified LRSRN recipe with its data paths changed trains on a CPU (num_gpu: auto, the
    fp16 fallback line) for 2 iterations on 64-px crops of batch 2 (the only --force_yml overrides);
    the YAML rtsr-reparam writes tests as is (no train set, SR images saved); a converted official
    checkpoint tests as is."""
    data = tmp_path / 'data'
    write_photo_pairs(data, {'astronaut': skdata.astronaut()[100:228, 100:228]})
    recipe = tmp_path / 'train_LRSRN_x2_stage1_L1.yml'
    recipe.write_text(_recipe_with_data(ROOT / 'options/train/LRSRN/train_LRSRN_x2_stage1_L1.yml',
                                        data / 'hr', data / 'lr'))
    opt = yaml.safe_load(recipe.read_text())
    assert opt['num_gpu'] == 'auto' and opt['train']['mixed_precision'] == 'fp16'
    monkeypatch.chdir(tmp_path)
    cli_train(['-opt', str(recipe), '--force_yml', 'train:total_iter=2', 'datasets:train:gt_size=64',
               'datasets:train:batch_size_per_gpu=2'])
    out = capsys.readouterr().out
    assert 'train.mixed_precision: fp16 needs CUDA; training in' in out
    latest = tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth'
    assert latest.is_file()

    assert reparam.main(['--ckpt', str(latest), '--opt', str(recipe), '--out', str(tmp_path / 'deploy.pth')]) == 0
    deploy = yaml.safe_load((tmp_path / 'deploy.yml').read_text())
    assert 'train' not in deploy['datasets'] and deploy['val']['save_img'] is True and deploy['num_gpu'] == 'auto'
    assert deploy['network_g']['deploy'] is True and set(deploy['datasets']) == {'val'}
    cli_test(['-opt', str(tmp_path / 'deploy.yml')])
    assert (tmp_path / 'results' / 'deploy' / 'visualization' / 'DIV2K_val' / 'astronaut_deploy.png').is_file()

    # a converted official checkpoint: without test folders a complete file whose CHANGE_ME folders
    # rtsr-test names in one line; with --test-gt/--test-lq it tests as is
    official = official_fixture('rt4ksr_x2.pth')
    assert convert.main(['--input', str(official), '--out', str(tmp_path / 'bare.pth')]) == 0
    assert 'CHANGE ME' in (tmp_path / 'bare.yml').read_text()
    with pytest.raises(SystemExit) as exc:
        cli_test(['-opt', str(tmp_path / 'bare.yml')])
    _one_line(exc.value.code, 'rtsr-test', ['datasets.test_1.dataroot_gt: no such folder', 'CHANGE_ME'])
    capsys.readouterr()
    assert convert.main(['--input', str(official), '--out', str(tmp_path / 'rt4ksr.pth'),
                         '--test-gt', str(data / 'hr'), '--test-lq', str(data / 'lr')]) == 0
    assert 'note: the network is in training form; rtsr-reparam --ckpt' in capsys.readouterr().out
    assert 'Training form (deploy: false)' in (tmp_path / 'rt4ksr.yml').read_text()
    cli_test(['-opt', str(tmp_path / 'rt4ksr.yml')])
    sr = tmp_path / 'results' / 'rt4ksr' / 'visualization' / 'data' / 'astronaut_rt4ksr.png'  # the HR's parent
    assert np.asarray(Image.open(sr)).shape == (128, 128, 3)
