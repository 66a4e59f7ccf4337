"""tools/gpu_report.sh on CPU: the dry run writes every report file with the networks' rows, the
CPU-only skips and a stage over its cap reported as timed out (not hung); bad arguments are one line.
The wheelhouse install is not exercised here (no network, no wheels): see README, "GPU report"."""
import csv
import json
import math
import os
import subprocess
import sys
import time

import pytest

from helpers import ROOT

SCRIPT = ROOT / 'tools' / 'gpu_report.sh'
FILES = {'gpu_report.md', 'gpu_report.json', 'gpu_report.log', 'runtime_4k.csv', 'latency_vs_params.png'}


def run(*args, timeout=240):
    # this interpreter; tiny tensors: one thread (no OpenMP spinning on a loaded machine)
    env = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1'}
    env.pop('OUT', None)
    return subprocess.run(['bash', str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


def test_dry_run_writes_every_report_and_times_out_a_stage(tmp_path):
    out = tmp_path / 'report'
    start = time.monotonic()
    result = run('--dry-run', '--no-install', '--stage-cap', 'video=1', str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == FILES  # few files: at most 8 come back from the accelerator

    report = json.loads((out / 'gpu_report.json').read_text())
    stages = {s['stage']: s for s in report['stages']}
    assert list(stages) == ['env', 'runtime', 'compile', 'onnx', 'video', 'runtime_all']
    assert stages['env']['status'] == stages['runtime']['status'] == stages['onnx']['status'] == 'ok'
    assert stages['compile']['status'] == stages['runtime_all']['status'] == 'skipped'
    assert stages['compile']['note'].startswith('--dry-run')
    # the video benchmark needs far more than 1 s: killed at its cap, and the script went on
    assert stages['video']['status'] == 'timed out' and stages['video']['cap'] == 1
    assert stages['video']['seconds'] <= 1 + 10 + 2  # cap + kill grace + rounding
    assert time.monotonic() - start < 200

    env = report['environment']
    assert env['cuda_available'] is False and env['python'] and env['torch']
    assert 'CPUExecutionProvider' in env['onnxruntime_providers']

    rows = {r['model']: r for r in report['runtime']['results']}
    assert set(rows) == {'LRSRN', 'RT4KSR'}
    assert rows['LRSRN']['params_deploy'] == 41356 and rows['RT4KSR']['params_deploy'] == 44521
    for row in rows.values():
        assert row['input'] == '32x32' and 'error' not in row
        assert row['latency_ms'] > 0 and row['fps'] == pytest.approx(1000 / row['latency_ms'])
        assert row['channels_last_ms'] > 0 and row['batch2_fps'] > 0
    assert 'NOT the official protocol' in report['runtime']['environment']['protocol']

    with open(out / 'runtime_4k.csv', newline='') as f:
        lines = f.read().splitlines()
    assert lines[0].startswith('# device: cpu')
    table = list(csv.DictReader(lines[1:]))
    assert [r['model'] for r in table] == ['LRSRN', 'RT4KSR']
    assert all(math.isclose(float(r['latency_ms']), rows[r['model']]['latency_ms']) for r in table)
    assert (out / 'latency_vs_params.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    onnx = report['onnx']
    timed = [r for r in onnx if r['status'] == 'ok']
    assert {(r['model'], r['provider']) for r in timed} == {('LRSRN x2', 'CPUExecutionProvider'),
                                                            ('RT4KSR x2', 'CPUExecutionProvider')}
    for r in timed:
        assert r['input'] == '32x48' and r['mean_ms'] > 0 and r['runs'] == 3 and r['onnx_max_abs_diff'] < 1e-3
    skipped = {(r['model'], r['provider']) for r in onnx if r['status'].startswith('skipped: not available')}
    assert skipped == {(m, p) for m in ('LRSRN x2', 'RT4KSR x2')
                       for p in ('CUDAExecutionProvider', 'TensorrtExecutionProvider')}

    md = (out / 'gpu_report.md').read_text()
    assert '- video: timed out (' in md and '- compile: skipped: --dry-run' in md
    assert '| LRSRN |' in md and '| RT4KSR x2 | CPUExecutionProvider | fp32 | 32x48 |' in md
    log = (out / 'gpu_report.log').read_text()
    assert '== video: timed out' in log and 'gpu_report: done in' in log


@pytest.mark.parametrize('args, expected', [
    (['--stage-cap', 'nope=3'], "--stage-cap: expected STAGE=SECONDS with STAGE one of"),
    (['--budget', 'ten'], "--budget: expected whole seconds, got 'ten'"),
    (['--stages', 'env,gpu'], "--stages: unknown stage 'gpu'"),
    (['--frobnicate'], "unknown option '--frobnicate'"),
    (['a', 'b'], "one OUTDIR expected, got 'a' and 'b'"),
])
def test_bad_arguments_are_one_line(tmp_path, args, expected):
    result = run(*args, timeout=30)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and err[0].startswith('gpu_report: error: ') \
        and expected in err[0], result.stderr
    assert not (ROOT / 'gpu_report').exists() and not (ROOT / 'a').exists()
