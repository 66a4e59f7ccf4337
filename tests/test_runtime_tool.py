"""tools/runtime_4k.py on CPU: reports for one model and for --all, and its one-line errors."""
import json

import pytest
import torch
import yaml

import rtsr_arch
from conftest import ROOT, load_module
from rtsr_arch.utils.efficiency import count_ntire_esr, ntire23_rtsr_score
from rtsr_arch.utils.options import build_network

runtime = load_module(ROOT / 'tools' / 'runtime_4k.py')
CPU = ['--device', 'cpu', '--cpu-crop', '32', '--cpu-warmup', '0', '--cpu-repeat', '1']
pytestmark = pytest.mark.usefixtures('torch_single_thread')


def test_all_architectures_report(tmp_path, capsys):
    assert runtime.main(['--all', *CPU, '--out', str(tmp_path)]) == 0
    report = json.loads((tmp_path / 'runtime_4k.json').read_text())
    rows = {r['model']: r for r in report['results']}
    assert {'LRSRN', 'RT4KSR'} <= set(rows)
    assert rows['LRSRN']['params_deploy'] == 41356 and rows['RT4KSR']['params_deploy'] == 44521
    assert rows['LRSRN']['params_train'] == 333196 and rows['RT4KSR']['params_train'] == 152233
    lrsrn = count_ntire_esr(build_network({'type': 'LRSRN', 'deploy': True}), (1, 3, 1080, 1920))
    assert rows['LRSRN']['flops_4k_G'] == pytest.approx(lrsrn.flops / 1e9)
    assert rows['LRSRN']['num_conv'] == 6
    for row in rows.values():
        assert row['latency_ms'] > 0 and row['fps'] == pytest.approx(1000 / row['latency_ms'])
        assert row['traffic_MB'] > 0
    env = report['environment']
    assert 'NOT the official protocol' in env['protocol'] and env['torch'] == torch.__version__
    assert (tmp_path / 'latency_vs_params.png').stat().st_size > 1000
    md = (tmp_path / 'runtime_4k.md').read_text()
    assert 'NOT the official protocol' in md and '| LRSRN |' in md
    csv_text = (tmp_path / 'runtime_4k.csv').read_text()
    assert csv_text.startswith('# ') and 'latency_ms' in csv_text.splitlines()[1]


def test_one_deploy_checkpoint_with_psnr_plot_and_optional_paths(tmp_path):
    opt = {'type': 'LRSRN', 'upscale': 3, 'variant': 'blockv2', 'num_feat': 8, 'num_block': 1, 'feature_size': 8}
    net = rtsr_arch.reparameterize(build_network(opt))
    torch.save({'params': net.state_dict()}, tmp_path / 'm.pth')
    (tmp_path / 'm.yml').write_text(yaml.safe_dump({'network_g': {**opt, 'deploy': True}}))
    (tmp_path / 'psnr.json').write_text(json.dumps({'m': 30.1}))
    args = ['--ckpt', str(tmp_path / 'm.pth'), *CPU, '--channels-last', '--batch', '2',
            '--psnr', str(tmp_path / 'psnr.json'), '--psnr-interp', '29.5', '--out', str(tmp_path / 'out')]
    assert runtime.main(args) == 0
    row = json.loads((tmp_path / 'out' / 'runtime_4k.json').read_text())['results'][0]
    assert row['scale'] == 3 and row['psnr'] == 30.1
    assert row['score'] == pytest.approx(ntire23_rtsr_score(30.1, row['latency_ms'], 29.5))
    assert row['channels_last_ms'] > 0 and row['batch2_fps'] > 0
    assert (tmp_path / 'out' / 'latency_vs_psnr.png').is_file()


@pytest.mark.parametrize('args, expected', [
    (['--arch', 'LRSRNN'], "'LRSRNN' is not a registered architecture"),
    (['--arch', 'LRSRN', '--set', 'num_blocks=2'], "LRSRN has no option 'num_blocks'"),
    (['--ckpt', 'missing.pth'], 'no such option file'),
])
def test_errors_are_one_line(tmp_path, capsys, args, expected):
    with pytest.raises(SystemExit) as exc:
        runtime.main([*args, *CPU, '--out', str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and expected in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on machines without CUDA')
def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        runtime.main(['--arch', 'LRSRN', '--device', 'cuda', '--out', str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'needs a CUDA GPU' in err[0]
