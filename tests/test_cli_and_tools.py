"""rtsr-train / rtsr-test through BasicSR's own pipelines, rtsr-reparam (tools/reparam_ckpt.py) round
trips, and the console scripts: every one installed, each tools/ script a thin wrapper of its command."""
import importlib
import importlib.metadata
import importlib.util
import shutil
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from skimage import data as skdata

import rtsr_arch
from rtsr_arch.cli import test as cli_test
from rtsr_arch.cli import train as cli_train
from rtsr_arch.commands import reparam
from rtsr_arch.loader import load_model, save_checkpoint
from rtsr_arch.utils.options import build_network
from helpers import paired_datasets, write_photo_pairs, ROOT, load_module, photo, randomize

REPARAM = ROOT / 'tools' / 'reparam_ckpt.py'
NETWORK = {'type': 'LRSRN', 'num_feat': 8, 'num_block': 2, 'feature_size': 16, 'upscale': 2}


def _train_options(root):
    return {
        'name': 'tiny_LRSRN_x2', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': paired_datasets(root, gt_size=32, batch=2, enlarge=10),
        'network_g': dict(NETWORK),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'total_iter': 6, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 6, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}},
        'logger': {'print_freq': 2, 'save_checkpoint_freq': 6, 'use_tb_logger': False, 'wandb': {'project': None}},
    }


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 6-iteration LRSRN training through the ``rtsr-train`` console script, run in a tmp cwd."""
    root = tmp_path_factory.mktemp('train')
    crops = {'astronaut': skdata.astronaut()[:96, :96], 'coffee': skdata.coffee()[100:196, 200:296],
             'chelsea': skdata.chelsea()[50:146, 100:196]}
    write_photo_pairs(root / 'train', crops)
    write_photo_pairs(root / 'val', {'rocket': skdata.rocket()[200:264, 300:364]})
    opt_path = root / 'train.yml'
    opt_path.write_text(yaml.safe_dump(_train_options(root), sort_keys=False))
    exe = Path(sys.executable).with_name('rtsr-train')
    proc = subprocess.run([str(exe), '-opt', str(opt_path)], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, opt_path, proc.stdout + proc.stderr


def test_train_writes_experiments_under_cwd_and_validates(trained):
    root, _, log = trained
    exp = root / 'experiments' / 'tiny_LRSRN_x2'
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    assert (exp / 'training_states' / '6.state').is_file()
    assert 'Validation held_out' in log and '# psnr:' in log
    ckpt = torch.load(exp / 'models' / 'net_g_latest.pth', map_location='cpu')
    assert set(ckpt) == {'params', 'params_ema'}


def test_reparam_tool_round_trip_and_test_pipeline(trained):
    root, opt_path, _ = trained
    ckpt = root / 'experiments' / 'tiny_LRSRN_x2' / 'models' / 'net_g_latest.pth'
    out = root / 'deploy' / 'tiny_deploy.pth'
    proc = subprocess.run([sys.executable, str(REPARAM), '--ckpt', str(ckpt), '--opt', str(opt_path),
                           '--out', str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(': ok') == 2  # params and params_ema

    deploy_opt = yaml.safe_load(out.with_suffix('.yml').read_text())
    assert deploy_opt['network_g'] == {**NETWORK, 'deploy': True}
    assert Path(deploy_opt['path']['pretrain_network_g']) == out.resolve()
    train_ckpt, deploy_ckpt = torch.load(ckpt, map_location='cpu'), torch.load(out, map_location='cpu')
    assert set(deploy_ckpt) == {'params', 'params_ema', 'network_g'}
    assert deploy_ckpt['network_g'] == deploy_opt['network_g']
    x = torch.from_numpy(np.ascontiguousarray(skdata.astronaut()[100:164, 100:164])).permute(2, 0, 1)[None] / 255.0
    for key in ('params', 'params_ema'):
        net = build_network(NETWORK).eval()
        net.load_state_dict(train_ckpt[key])
        deployed = build_network(deploy_opt['network_g']).eval()
        deployed.load_state_dict(deploy_ckpt[key])
        assert all('conv0' not in k for k in deploy_ckpt[key])
        with torch.no_grad():
            y, yd = net(x), deployed(x)
        assert (y - yd).abs().max() <= 1e-5 * y.abs().max()

    test_opt = {'name': 'tiny_test', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
                'datasets': {'test_1': {'name': 'held_out', 'type': 'PairedImageDataset',
                                        'dataroot_gt': str(root / 'val/hr'), 'dataroot_lq': str(root / 'val/lr'),
                                        'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}},
                'network_g': deploy_opt['network_g'], 'path': deploy_opt['path'],
                'val': {'save_img': True, 'suffix': 'deploy',
                        'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}}}
    test_yml = root / 'test.yml'
    test_yml.write_text(yaml.safe_dump(test_opt, sort_keys=False))
    exe = Path(sys.executable).with_name('rtsr-test')
    proc = subprocess.run([str(exe), '-opt', str(test_yml)], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / 'results' / 'tiny_test' / 'visualization' / 'held_out' / 'rocket_deploy.png').is_file()
    assert '# psnr:' in proc.stdout + proc.stderr


def test_reparam_tool_errors_are_one_line(tmp_path, capsys):
    net = build_network(NETWORK)
    opt = tmp_path / 'opt.yml'
    opt.write_text(yaml.safe_dump({'network_g': NETWORK}))
    good = tmp_path / 'good.pth'
    torch.save({'params': net.state_dict()}, good)
    deployed = tmp_path / 'deployed.pth'
    torch.save({'params': rtsr_arch.reparameterize(build_network(NETWORK)).state_dict()}, deployed)
    raw = tmp_path / 'raw.pth'
    torch.save(net.state_dict(), raw)
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint at all')
    wider = tmp_path / 'wider.yml'
    wider.write_text(yaml.safe_dump({'network_g': {**NETWORK, 'num_feat': 12}}))

    cases = [((deployed, opt), 'already in deploy form'), ((raw, opt), "expected 'params' or 'params_ema'"),
             ((corrupt, opt), 'cannot be read'), ((tmp_path / 'missing.pth', opt), 'no such checkpoint'),
             ((good, wider), 'shape mismatches'), ((good, tmp_path / 'nope.yml'), 'no such option file')]
    for (ckpt, yml), expected in cases:
        code = reparam.main(['--ckpt', str(ckpt), '--opt', str(yml), '--out', str(tmp_path / 'out.pth')])
        err = capsys.readouterr().err
        assert code == 2, (expected, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('rtsr-reparam: error: ') and expected in lines[0], lines
        assert Path(ckpt).name in lines[0] or Path(yml).name in lines[0], lines
        assert not (tmp_path / 'out.pth').exists()


@pytest.fixture
def embedded(tmp_path):
    """A checkpoint of this package (options embedded, no .yml) with different params / params_ema."""
    nets = {key: randomize(build_network(NETWORK), seed=seed, fan_in=True).eval()
            for seed, key in enumerate(('params', 'params_ema'))}
    path = tmp_path / 'net_g_latest.pth'
    save_checkpoint(path, nets['params'].state_dict(), NETWORK, {'params_ema': nets['params_ema'].state_dict()})
    return path, nets


def test_reparam_embedded_options_to_safetensors(embedded, capsys):
    """No --opt: the options come from the checkpoint; .safetensors holds the EMA set, and
    load_model on it computes what the training-form EMA network computes."""
    path, nets = embedded
    out = path.with_name('deploy.safetensors')
    assert reparam.main(['--ckpt', str(path), '--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    assert 'network_g: options embedded in the checkpoint' in stdout and stdout.count(': ok') == 2
    assert 'note: a safetensors file holds one weight set: writing params_ema (not params)' in stdout
    opt = yaml.safe_load(out.with_suffix('.yml').read_text())
    assert opt['network_g'] == {**NETWORK, 'deploy': True} and opt['path']['param_key_g'] == 'params'
    deployed = load_model(out, deploy=None)
    assert deployed.network_opt['deploy'] is True
    x = photo('coffee', 40, 48)
    with torch.no_grad():
        y, yd = nets['params_ema'](x), deployed(x)
    assert (y - yd).abs().max() <= 1e-5 * y.abs().max()


def test_reparam_never_writes_over_its_inputs_or_existing_files(embedded, capsys):
    path, _ = embedded
    opt = path.with_name('opt.yml')
    opt.write_text(yaml.safe_dump({'network_g': NETWORK}))
    originals = {p: p.read_bytes() for p in (path, opt)}
    cases = [(['--out', str(path), '--overwrite'], 'is the --ckpt file; refusing to write over it'),
             (['--opt', str(opt), '--out', str(opt.with_suffix('.pth')), '--overwrite'], 'is the --opt file')]
    for args, expected in cases:
        assert reparam.main(['--ckpt', str(path), *args]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
    assert {p: p.read_bytes() for p in originals} == originals

    default = path.with_name('net_g_latest_deploy.pth')  # <ckpt>_deploy.pth
    assert reparam.main(['--ckpt', str(path)]) == 0 and default.is_file() and default.with_suffix('.yml').is_file()
    written = default.read_bytes()
    assert reparam.main(['--ckpt', str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and 'net_g_latest_deploy.pth: already exists; pass --overwrite' in lines[0], lines
    assert default.read_bytes() == written
    default.with_suffix('.yml').write_text('stale: true\n')
    assert reparam.main(['--ckpt', str(path), '--overwrite']) == 0
    assert yaml.safe_load(default.with_suffix('.yml').read_text())['network_g']['deploy'] is True


COMMANDS = {'convert': 'convert_official', 'reparam': 'reparam_ckpt', 'runtime': 'runtime_4k',
            'degrade': 'degrade_dataset', 'lmdb': 'prepare_lmdb', 'upscale': None, 'export': None}


def test_every_console_script_is_installed():
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group='console_scripts')
               if ep.name.startswith('rtsr-')}
    assert scripts == {'rtsr-train': 'rtsr_arch.cli:train', 'rtsr-test': 'rtsr_arch.cli:test',
                       **{f'rtsr-{name}': f'rtsr_arch.commands.{name}:main' for name in COMMANDS}}
    bindir = str(Path(sys.executable).parent)
    missing = [name for name in scripts if shutil.which(name, path=bindir) is None]
    assert not missing, f'not installed in {bindir} (run pip install -e .): {missing}'


@pytest.mark.parametrize('name', COMMANDS)
def test_console_script_help(name, capsys):
    """``rtsr-<name> --help``: the entry point function prints its usage and exits 0 (in this
    process; the programs themselves run as subprocesses in the convert, reparam and degrade tests)."""
    module = f'rtsr_arch.commands.{name}'
    if importlib.util.find_spec(module) is None:
        pytest.skip(f'{module} is not written yet')
    entry = next(ep for ep in importlib.metadata.entry_points(group='console_scripts') if ep.name == f'rtsr-{name}')
    with pytest.raises(SystemExit) as exc:
        entry.load()(['--help'])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f'usage: rtsr-{name} ')


@pytest.mark.parametrize('name, tool', [(k, v) for k, v in COMMANDS.items() if v])
def test_tools_scripts_are_thin_wrappers(name, tool):
    module = importlib.import_module(f'rtsr_arch.commands.{name}')
    assert load_module(ROOT / 'tools' / f'{tool}.py').main is module.main


def _write_opt(tmp_path, **changes):
    opt = _train_options(tmp_path)
    for dotted, value in changes.items():
        node = opt
        *parents, leaf = dotted.split('.')
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


@pytest.mark.parametrize('change, expected', [
    ({'network_g.type': 'LRSRNN'}, ["network_g.type: 'LRSRNN' is not a registered architecture",
                                    "did you mean 'LRSRN'", 'RT4KSR']),
    ({'datasets.train.type': 'PairedDataset'}, ["datasets.train.type: 'PairedDataset' is not a registered dataset",
                                                'PairedImageDataset']),
    ({'model_type': 'SRModl'}, ["model_type: 'SRModl' is not a registered model", 'SRModel']),
    ({'train.pixel_opt.type': 'L2Loss'}, ["train.pixel_opt.type: 'L2Loss' is not a registered loss", 'MSELoss']),
    ({'network_g.num_blocks': 4}, ["network_g: LRSRN has no option 'num_blocks'", 'num_block']),
    ({'train.losses': [{'type': 'L1Loss'}, {'type': 'HFLos'}]},
     ["train.losses[1].type: 'HFLos' is not a registered loss", "did you mean 'HFLoss'"]),
])
@pytest.mark.parametrize('entry', [cli_train, cli_test])
def test_unknown_type_is_one_line_listing_registered_names(tmp_path, capsys, change, expected, entry):
    path = _write_opt(tmp_path, **change)
    with pytest.raises(SystemExit) as exc:
        entry(['-opt', str(path)])
    message = str(exc.value.code)
    assert '\n' not in message and message.startswith(('rtsr-train: error:', 'rtsr-test: error:'))
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_missing_option_file_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli_train(['-opt', str(tmp_path / 'absent.yml')])
    assert 'no such option file' in str(exc.value.code)


def test_python_m_entry_points_exist(capsys, monkeypatch):
    """``python -m rtsr_arch.train -h`` in a fresh interpreter; ``rtsr_arch.test`` run as __main__ here."""
    proc = subprocess.run([sys.executable, '-m', 'rtsr_arch.train', '-h'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and '--auto_resume' in proc.stdout and '--force_yml' in proc.stdout
    monkeypatch.setattr(sys, 'argv', ['rtsr_arch.test', '-h'])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module('rtsr_arch.test', run_name='__main__')
    assert exc.value.code == 0 and '--force_yml' in capsys.readouterr().out
