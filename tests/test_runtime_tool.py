"""rtsr-runtime (tools/runtime_4k.py) on CPU: reports for one model and for --all, input sizes that
respect ``input_multiple``, checkpoints through ``load_model``, and its one-line errors."""
import json
from types import SimpleNamespace

import pytest
import torch
import yaml

import rtsr_arch
from basicsr.utils.registry import ARCH_REGISTRY
from helpers import ROOT, load_module
from rtsr_arch.archs.contract import SRArch
from rtsr_arch.commands import runtime
from rtsr_arch.loader import save_model
from rtsr_arch.utils.efficiency import count_ntire_esr, ntire23_rtsr_score
from rtsr_arch.utils.options import build_network

CPU = ['--device', 'cpu', '--cpu-crop', '32', '--cpu-warmup', '0', '--cpu-repeat', '1']
pytestmark = pytest.mark.usefixtures('torch_single_thread')


def test_tool_is_the_command():
    assert load_module(ROOT / 'tools' / 'runtime_4k.py').main is runtime.main


def test_all_architectures_report(tmp_path, capsys):
    assert runtime.main(['--all', *CPU, '--out', str(tmp_path)]) == 0
    report = json.loads((tmp_path / 'runtime_4k.json').read_text())
    rows = {r['model']: r for r in report['results']}
    registered = {name for name in ARCH_REGISTRY.keys()
                  if isinstance(ARCH_REGISTRY.get(name), type) and issubclass(ARCH_REGISTRY.get(name), SRArch)}
    assert {'LRSRN', 'RT4KSR'} <= registered and set(rows) == registered  # every architecture, none skipped
    assert rows['LRSRN']['params_deploy'] == 41356 and rows['RT4KSR']['params_deploy'] == 44521
    assert rows['LRSRN']['params_train'] == 333196 and rows['RT4KSR']['params_train'] == 152233
    lrsrn = count_ntire_esr(build_network({'type': 'LRSRN', 'deploy': True}), (1, 3, 1080, 1920))
    assert rows['LRSRN']['flops_4k_G'] == pytest.approx(lrsrn.flops / 1e9)
    assert rows['LRSRN']['num_conv'] == 6
    for name, row in rows.items():
        assert row['latency_ms'] > 0 and row['fps'] == pytest.approx(1000 / row['latency_ms'])
        cls = ARCH_REGISTRY.get(name)  # the 32 px crop, at the nearest multiple of the declared input multiple
        side = max(cls.input_multiple * round(32 / cls.input_multiple), cls.min_input_size)
        assert row['traffic_MB'] > 0 and row['input'] == f'{side}x{side}', (name, row['input'])
    env = report['environment']
    assert 'NOT the official protocol' in env['protocol'] and env['torch'] == torch.__version__
    assert (tmp_path / 'latency_vs_params.png').stat().st_size > 1000
    md = (tmp_path / 'runtime_4k.md').read_text()
    assert 'NOT the official protocol' in md and '| LRSRN |' in md
    csv_text = (tmp_path / 'runtime_4k.csv').read_text()
    assert csv_text.startswith('# ') and 'latency_ms' in csv_text.splitlines()[1]


def test_input_sizes_respect_input_multiple():
    net = SimpleNamespace(upscale=3, input_multiple=7, min_input_size=1)
    assert runtime.input_shape(net, portrait=False) == (1, 3, 721, 1281)  # 720, 1280 to the nearest multiple of 7
    assert runtime.input_shape(net, portrait=True, batch=2) == (2, 3, 1281, 721)
    assert runtime.input_shape(net, portrait=False, crop=32) == (1, 3, 35, 35)
    small = SimpleNamespace(upscale=4, input_multiple=2, min_input_size=15)
    assert runtime.input_shape(small, portrait=False, crop=8) == (1, 3, 16, 16)  # raised to min_input_size
    assert runtime.input_shape(build_network({'type': 'RT4KSR', 'upscale': 3}), portrait=False) == (1, 3, 720, 1280)


def test_one_checkpoint_with_embedded_options_psnr_plot_and_optional_paths(tmp_path):
    """A training-form checkpoint with its options embedded (no .yml): load_model reparameterizes it."""
    opt = {'type': 'LRSRN', 'upscale': 3, 'variant': 'blockv2', 'num_feat': 8, 'num_block': 1, 'feature_size': 8}
    net = build_network(opt)
    save_model(net, tmp_path / 'm.pth')
    (tmp_path / 'psnr.json').write_text(json.dumps({'m': 30.1}))
    args = ['--ckpt', str(tmp_path / 'm.pth'), *CPU, '--channels-last', '--batch', '2',
            '--psnr', str(tmp_path / 'psnr.json'), '--psnr-interp', '29.5', '--out', str(tmp_path / 'out')]
    assert runtime.main(args) == 0
    row = json.loads((tmp_path / 'out' / 'runtime_4k.json').read_text())['results'][0]
    assert row['scale'] == 3 and row['psnr'] == 30.1
    assert row['params_train'] == sum(p.numel() for p in net.parameters())
    assert row['params_deploy'] == sum(p.numel() for p in rtsr_arch.reparameterize(net).parameters())
    assert row['score'] == pytest.approx(ntire23_rtsr_score(30.1, row['latency_ms'], 29.5))
    assert row['channels_last_ms'] > 0 and row['batch2_fps'] > 0
    assert (tmp_path / 'out' / 'latency_vs_psnr.png').is_file()


def test_checkpoint_with_yml_beside(tmp_path):
    opt = {'type': 'LRSRN', 'num_feat': 8, 'num_block': 1, 'feature_size': 8}
    net = rtsr_arch.reparameterize(build_network(opt))
    torch.save({'params': net.state_dict()}, tmp_path / 'm.pth')
    (tmp_path / 'm.yml').write_text(yaml.safe_dump({'network_g': {**opt, 'deploy': True}}))
    assert runtime.main(['--ckpt', str(tmp_path / 'm.pth'), *CPU, '--out', str(tmp_path / 'out')]) == 0
    row = json.loads((tmp_path / 'out' / 'runtime_4k.json').read_text())['results'][0]
    assert row['model'] == 'm' and row['params_deploy'] == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize('args, expected', [
    (['--arch', 'LRSRNN'], "'LRSRNN' is not a registered architecture"),
    (['--arch', 'LRSRN', '--set', 'num_blocks=2'], "LRSRN has no option 'num_blocks'"),
    (['--ckpt', 'missing.pth'], 'missing.pth: no such checkpoint file'),
    (['--all', '--set', 'upscale=3'], '--set applies to one model'),
    (['--arch', 'LRSRN', '--psnr', 'psnr.csv'], 'psnr.csv'),
])
def test_errors_are_one_line(tmp_path, capsys, args, expected):
    (tmp_path / 'psnr.csv').write_text('name,value\nm,30\n')
    args = [a.replace('psnr.csv', str(tmp_path / 'psnr.csv')) for a in args]
    assert runtime.main([*args, *CPU, '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('rtsr-runtime: error: ') and expected in err[0], err
    assert not (tmp_path / 'out').exists()


def test_set_with_a_checkpoint_that_is_not_official(tmp_path, capsys):
    save_model(build_network({'type': 'LRSRN', 'num_feat': 8, 'num_block': 1, 'feature_size': 8}), tmp_path / 'm.pth')
    assert runtime.main(['--ckpt', str(tmp_path / 'm.pth'), '--set', 'act_type=gelu', *CPU,
                         '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'options embedded in the checkpoint' in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on machines without CUDA')
def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    assert runtime.main(['--arch', 'LRSRN', '--device', 'cuda', '--out', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'needs a CUDA GPU' in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on machines without CUDA')
def test_tensorrt_column_without_gpu_is_a_clear_error(tmp_path, capsys):
    assert runtime.main(['--arch', 'LRSRN', '--device', 'cpu', '--tensorrt', '--out', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install tensorrt' in err[0] and 'CUDA GPU' in err[0], err
    assert not any(tmp_path.iterdir())  # refused before anything is measured or written


def test_several_models_keep_going_and_exclude(tmp_path, capsys):
    """--arch with several names; --keep-going turns a failing model into a row with its error
    (the others are measured and plotted); --all --exclude leaves architectures out."""
    out = tmp_path / 'out'
    assert runtime.main(['--arch', 'RT4KSR', 'NOPE', '--keep-going', *CPU, '--out', str(out)]) == 0
    rows = json.loads((out / 'runtime_4k.json').read_text())['results']
    assert [r['model'] for r in rows] == ['RT4KSR', 'NOPE']
    assert rows[0]['latency_ms'] > 0 and 'error' not in rows[0]
    assert set(rows[1]) == {'model', 'error'} and "'NOPE' is not a registered architecture" in rows[1]['error']
    assert '| NOPE |' in (out / 'runtime_4k.md').read_text() and (out / 'latency_vs_params.png').is_file()
    # without --keep-going the failure ends the run with one line; what was measured before is kept
    assert runtime.main(['--arch', 'RT4KSR', 'NOPE', *CPU, '--out', str(tmp_path / 'strict')]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('rtsr-runtime')]  # no tqdm
    assert len(err) == 1 and "'NOPE' is not a registered architecture" in err[0], err
    kept = json.loads((tmp_path / 'strict' / 'runtime_4k.json').read_text())['results']
    assert [r['model'] for r in kept] == ['RT4KSR']

    others = [name for name in runtime.sr_architectures() if name != 'LRSRN']
    assert runtime.main(['--all', '--exclude', *others, *CPU, '--out', str(tmp_path / 'all')]) == 0
    rows = json.loads((tmp_path / 'all' / 'runtime_4k.json').read_text())['results']
    assert [r['model'] for r in rows] == ['LRSRN']
    assert runtime.main(['--all', '--exclude', 'LRSRN', 'Nope', *CPU, '--out', str(tmp_path / 'x')]) == 2
    assert runtime.main(['--arch', 'LRSRN', '--exclude', 'RT4KSR', *CPU, '--out', str(tmp_path / 'x')]) == 2
    assert runtime.main(['--arch', 'LRSRN', 'RT4KSR', '--set', 'upscale=3', *CPU, '--out', str(tmp_path / 'x')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].endswith('--exclude: Nope: not registered rtsr_arch architectures')
    assert err[1].endswith('--exclude applies to --all') and '--set applies to one model' in err[2]
    assert not (tmp_path / 'x').exists()
