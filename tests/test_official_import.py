"""``rtsr-convert`` (``tools/convert_official.py``) on the official RT4KSR and LRSRN checkpoints:
the importer is auto-detected; the converted checkpoint (options embedded) + YAML rebuild a
network whose output equals an independent functional re-implementation of the official forward
(tests/archs/reference.py) on real photographs, before and after reparameterization, and so
does ``load_model`` on the ``.pth`` and ``.safetensors`` outputs; the input and existing outputs
are never written over; every error is one line, exit status 2, nothing written.

The official files are third-party test fixtures outside the repository (their folder lists
source and licence of each); the module is skipped when they are absent.
"""
import contextlib
import copy
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import OFFICIAL_FIXTURES as FIXTURES, ROOT, load_module, official_fixture  # noqa: E402

if not FIXTURES.is_dir():
    pytest.skip(f'official checkpoint fixtures not found at {FIXTURES} (set RTSR_OFFICIAL_FIXTURES)',
                allow_module_level=True)

import yaml  # noqa: E402
from skimage import data as skdata  # noqa: E402

import rtsr_arch  # noqa: E402
from rtsr_arch.commands import convert, reparam, runtime  # noqa: E402
from rtsr_arch.loader import load_model  # noqa: E402
from rtsr_arch.utils.checkpoint import load_state_dict_checked  # noqa: E402
from rtsr_arch.utils.options import build_network, check_options  # noqa: E402

ref = load_module(Path(__file__).parent / 'archs' / 'reference.py')
TOOL = ROOT / 'tools' / 'convert_official.py'
SCRIPT = Path(sys.executable).with_name('rtsr-convert')  # the console script (pip install -e .)
pytestmark = pytest.mark.usefixtures('torch_single_thread')
MISSING_KEY = 'module.body.2.conv1.fea_conv.weight'


@pytest.fixture(scope='module')
def photos():
    """Three real photographs (astronaut, coffee, chelsea), 96x128 crops, float [0,1], (3,3,96,128)."""
    h, w = 96, 128
    crops = [skdata.astronaut()[40:40 + h, 180:180 + w], skdata.coffee()[100:100 + h, 200:200 + w],
             skdata.chelsea()[60:60 + h, 100:100 + w]]
    return torch.from_numpy(np.stack(crops).astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """The successful conversions, without ``--arch`` (auto-detection), by name:
    ``(returncode, stdout, stderr, out_dir)``. Two run as programs, started at once since each pays
    the torch/basicsr import: ``tools/convert_official.py`` and the ``rtsr-convert`` console
    script; their empty stderr also shows that the program prints nothing stray (warnings) that
    would spoil the one-line errors. The third runs ``main`` in this process meanwhile, as the
    error tests below do."""
    root = tmp_path_factory.mktemp('convert_official')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}  # the tool computes nothing heavy; don't oversubscribe
    jobs, results = {}, {}

    def job(name, *args, needs, program=None):
        if not (FIXTURES / needs).is_file():
            return
        out_dir = root / name
        out_dir.mkdir()
        args = [*args, '--out', str(out_dir / 'model.pth')]
        if program is None:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = convert.main(args)
            results[name] = (rc, out.getvalue(), err.getvalue(), out_dir)
            return
        jobs[name] = (subprocess.Popen([*program, *args], cwd=out_dir, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True), out_dir)

    job('rt4ksr_x2', '--input', str(FIXTURES / 'rt4ksr_x2.pth'), needs='rt4ksr_x2.pth',
        program=(sys.executable, str(TOOL)))
    job('teacher', '--input', str(FIXTURES / 'casr_teacher_deploy.pt'), '--set', 'act_type=gelu',
        needs='casr_teacher_deploy.pt', program=(str(SCRIPT),))
    job('rt4ksr_x3', '--input', str(FIXTURES / 'rt4ksr_x3.pth'), needs='rt4ksr_x3.pth')
    for name, (proc, out_dir) in jobs.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[name] = (proc.returncode, stdout, stderr, out_dir)
    return results


def test_tool_is_the_command():
    assert load_module(TOOL).main is convert.main


@pytest.fixture
def run_inprocess(tmp_path, capsys):
    """``run(*args, out=None)`` -> ``(returncode, stdout, stderr, out_dir)`` of
    ``rtsr_arch.commands.convert.main([*args, '--out', out])`` in this process (same ``main`` as the
    programs, no import cost); ``out`` defaults to ``out_dir/model.pth`` in a new ``out_dir``."""
    count = iter(range(100))

    def run(*args, out=None):
        out_dir = tmp_path / f'out{next(count)}'
        out_dir.mkdir()
        rc = convert.main([*map(str, args), '--out', str(out or out_dir / 'model.pth')])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err, out_dir

    return run


def converted(runs, name):
    """The YAML options and the model rebuilt from them with the converted weights."""
    rc, stdout, stderr, out_dir = runs[name]
    assert rc == 0, stderr
    assert stderr.strip() == '', stderr
    opt = yaml.safe_load((out_dir / 'model.yml').read_text())
    assert opt['path'] == {'pretrain_network_g': str((out_dir / 'model.pth').absolute()), 'param_key_g': 'params',
                           'strict_load_g': True}
    assert opt['num_gpu'] == 'auto' and opt['val']['save_img'] is True and 'train' not in opt['datasets']
    check_options(opt, 'model.yml', phase='test')  # a complete rtsr-test file: every section, type and keyword
    model = build_network(opt['network_g'])
    checkpoint = torch.load(out_dir / 'model.pth', map_location='cpu', weights_only=True)
    assert set(checkpoint) == {'params', 'network_g'} and checkpoint['network_g'] == opt['network_g']
    load_state_dict_checked(model, checkpoint['params'], 'model.pth')
    return opt['network_g'], model.eval(), stdout


def max_diff(a, b):
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize('scale, params', [(2, 152_233), (3, 165_253)])
def test_rt4ksr_official_matches_reference(runs, photos, scale, params):
    official = torch.load(official_fixture(f'rt4ksr_x{scale}.pth'), map_location='cpu', weights_only=True)['state_dict']
    network_g, model, stdout = converted(runs, f'rt4ksr_x{scale}')
    assert stdout.startswith('detected: RT4KSR\n'), stdout
    assert network_g['type'] == 'RT4KSR'
    assert (network_g['num_feat'], network_g['num_block'], network_g['upscale']) == (24, 4, scale)
    assert network_g['deploy'] is False and network_g['act_type'] == 'gelu'
    assert f'parameters: {params:,}' in stdout
    assert sum(p.numel() for p in model.parameters()) == params

    expected = ref.rt4ksr_forward(official, photos)
    assert expected.shape == (3, 3, 96 * scale, 128 * scale)
    model64 = copy.deepcopy(model).double()
    official64 = {k: v.double() for k, v in official.items()}
    expected64 = ref.rt4ksr_forward(official64, photos.double())
    with torch.no_grad():
        trained = model(photos)
        train_diff = max_diff(trained, expected)
        train_diff64 = max_diff(model64(photos.double()), expected64)
        rtsr_arch.reparameterize(model)
        rtsr_arch.reparameterize(model64)
        assert not any('expand_conv' in k for k in model.state_dict())
        fused = model(photos)
        fused_diff, fused_vs_train = max_diff(fused, expected), max_diff(fused, trained)
        fused_diff64 = max_diff(model64(photos.double()), expected64)
        loaded_diff = max_diff(load_model(runs[f'rt4ksr_x{scale}'][3] / 'model.pth')(photos), expected)
    print(f'RT4KSR x{scale}: max |ours - reference| float32 {train_diff:.2e} (training form), {fused_diff:.2e} '
          f'(reparameterized; {fused_vs_train:.2e} from the training form); float64 {train_diff64:.2e} / '
          f'{fused_diff64:.2e}')
    assert train_diff <= 1e-5
    assert fused_diff <= 1e-4 and fused_vs_train <= 1e-4 and loaded_diff <= 1e-4  # load_model: options embedded
    # in float64 the differences above vanish: they are float32 rounding, not a different function
    assert train_diff64 <= 1e-12 and fused_diff64 <= 1e-10


def test_lrsrn_casr_teacher_matches_reference(runs, photos):
    official = torch.load(official_fixture('casr_teacher_deploy.pt'), map_location='cpu', weights_only=True)
    network_g, model, stdout = converted(runs, 'teacher')
    assert stdout.startswith('detected: LRSRN\n'), stdout
    assert network_g['type'] == 'LRSRN'
    assert (network_g['num_feat'], network_g['num_block'], network_g['upscale']) == (64, 10, 4)
    assert network_g['deploy'] is True and network_g['act_type'] == 'gelu'
    assert 'parameters: 398,768' in stdout
    assert sum(p.numel() for p in model.parameters()) == 398_768

    with torch.no_grad():
        diff = max_diff(model(photos), ref.lrsrn_deploy_forward(official, photos, 'gelu'))
    print(f'LRSRN CASR teacher x4: max |ours - reference| {diff:.2e}')
    assert diff <= 1e-5


def failed(result):
    """Exit status 2, one line on stderr, nothing on stdout, nothing written; returns the line."""
    rc, stdout, stderr, out_dir = result
    assert rc == 2, (rc, stdout, stderr)
    assert stdout == ''
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('rtsr-convert: error: '), stderr
    assert list(out_dir.iterdir()) == []
    return lines[0]


def test_wrong_arch_checkpoint(run_inprocess):
    line = failed(run_inprocess('--arch', 'LRSRN', '--input', official_fixture('rt4ksr_x2.pth')))
    assert 'rt4ksr_x2.pth' in line and 'LRSRN' in line


def test_unknown_arch_lists_importers(run_inprocess):
    line = failed(run_inprocess('--arch', 'NoSuchNet', '--input', FIXTURES / 'rt4ksr_x2.pth'))
    assert 'NoSuchNet' in line and 'LRSRN' in line and 'RT4KSR' in line


def test_bad_set_syntax(run_inprocess):
    line = failed(run_inprocess('--arch', 'RT4KSR', '--input', FIXTURES / 'rt4ksr_x2.pth', '--set', 'act_type'))
    assert "'act_type'" in line and 'key=value' in line


def test_mismatched_checkpoint_names_missing_key(run_inprocess, tmp_path):
    checkpoint = torch.load(official_fixture('rt4ksr_x2.pth'), map_location='cpu', weights_only=True)
    del checkpoint['state_dict'][MISSING_KEY]
    torch.save(checkpoint, tmp_path / 'rt4ksr_x2_missing_key.pth')
    line = failed(run_inprocess('--arch', 'RT4KSR', '--input', tmp_path / 'rt4ksr_x2_missing_key.pth'))
    assert '1 missing keys' in line and MISSING_KEY[len('module.'):] in line


def test_corrupt_file_is_named(run_inprocess, tmp_path):
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    line = failed(run_inprocess('--arch', 'RT4KSR', '--input', corrupt))
    assert str(corrupt) in line


@pytest.mark.parametrize('variant', ['plain', 'blockv2'])
def test_lrsrn_training_form_round_trip(run_inprocess, tmp_path, photos, variant):
    """A training-form LRSRN checkpoint in the official layout (conv0/conv1 with the w0/b0/w1/b1
    alias keys): the importer infers C from the block outputs (not the 256-wide conv0) and the
    variant, and the converted network computes the same function."""
    from rtsr_arch.archs.lrsrn_arch import LRSRN

    torch.manual_seed(0)
    model = LRSRN(num_feat=16, num_block=2, upscale=3, variant=variant, feature_size=40).eval()
    official = dict(model.state_dict())
    for key in [k for k in official if k.endswith(('.conv0.weight', '.conv0.bias', '.conv1.weight', '.conv1.bias'))]:
        prefix, conv, kind = key.rsplit('.', 2)
        official[f'{prefix}.{"w" if kind == "weight" else "b"}{conv[-1]}'] = official[key]
    torch.save(official, tmp_path / 'model_x3_best_submission.pt')
    rc, stdout, stderr, out_dir = run_inprocess('--arch', 'LRSRN', '--input', tmp_path / 'model_x3_best_submission.pt')
    assert rc == 0, stderr
    assert 'detected' not in stdout  # --arch given: no detection
    network_g = yaml.safe_load((out_dir / 'model.yml').read_text())['network_g']
    assert {k: network_g[k] for k in ('num_feat', 'num_block', 'upscale', 'variant', 'feature_size', 'deploy')} == \
        dict(num_feat=16, num_block=2, upscale=3, variant=variant, feature_size=40, deploy=False)
    converted_model = build_network(network_g)
    load_state_dict_checked(converted_model, torch.load(out_dir / 'model.pth', weights_only=True)['params'], 'out')
    with torch.no_grad():
        assert torch.equal(converted_model.eval()(photos), model(photos))


def test_unrecognised_checkpoint_names_the_importers(run_inprocess, tmp_path):
    """An RT4KSR checkpoint with its tail renamed matches no importer: one line naming every importer."""
    sd = torch.load(official_fixture('rt4ksr_x2.pth'), map_location='cpu', weights_only=True)['state_dict']
    torch.save({k.replace('module.tail.', 'module.tail_renamed.'): v for k, v in sd.items()}, tmp_path / 'foreign.pth')
    line = failed(run_inprocess('--input', tmp_path / 'foreign.pth'))
    assert 'foreign.pth' in line and 'no importer recognises' in line
    assert 'LRSRN' in line and 'RT4KSR' in line and 'CASR' in line


def test_safetensors_output_loads_and_matches_reference(run_inprocess, photos, tmp_path):
    official = torch.load(official_fixture('casr_teacher_deploy.pt'), map_location='cpu', weights_only=True)
    line = failed(run_inprocess('--input', FIXTURES / 'casr_teacher_deploy.pt', out=tmp_path / 'teacher.onnx'))
    assert 'teacher.onnx: the output checkpoint must end in .pth, .pt, .safetensors' in line
    out = tmp_path / 'teacher.safetensors'
    rc, stdout, stderr, _ = run_inprocess('--input', FIXTURES / 'casr_teacher_deploy.pt', '--set', 'act_type=gelu',
                                          out=out)
    assert rc == 0 and stderr == '' and 'detected: LRSRN' in stdout, stderr
    opt = yaml.safe_load(out.with_suffix('.yml').read_text())
    assert opt['path']['pretrain_network_g'] == str(out.absolute()) and opt['network_g']['act_type'] == 'gelu'
    model = load_model(out)  # options from the safetensors metadata
    with torch.no_grad():
        diff = max_diff(model(photos), ref.lrsrn_deploy_forward(official, photos, 'gelu'))
    assert diff <= 1e-5


def test_never_writes_over_input_or_existing_outputs(run_inprocess, tmp_path):
    source = tmp_path / 'rt4ksr_x2.pth'
    shutil.copy(official_fixture('rt4ksr_x2.pth'), source)
    original = source.read_bytes()
    for extra in ((), ('--overwrite',)):  # the input, never
        line = failed(run_inprocess('--input', source, *extra, out=source))
        assert 'rt4ksr_x2.pth' in line and 'refusing to write over it' in line
        assert source.read_bytes() == original
    (tmp_path / 'input.yml').write_text('keep: me\n')  # the input's name with .yml: the YAML output
    line = failed(run_inprocess('--input', source, out=tmp_path / 'input.pth'))
    assert 'input.yml: already exists' in line and '--overwrite' in line
    assert (tmp_path / 'input.yml').read_text() == 'keep: me\n' and not (tmp_path / 'input.pth').exists()

    rc, stdout, stderr, out_dir = run_inprocess('--input', source)
    assert rc == 0, stderr
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    line = failed(run_inprocess('--input', source, out=out_dir / 'model.pth'))
    assert 'model.pth: already exists; pass --overwrite' in line
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    (out_dir / 'model.yml').write_text('stale: true\n')
    rc, stdout, stderr, _ = run_inprocess('--input', source, '--overwrite', out=out_dir / 'model.pth')
    assert rc == 0, stderr
    assert yaml.safe_load((out_dir / 'model.yml').read_text())['network_g']['type'] == 'RT4KSR'


def test_reparam_official_checkpoint_without_options(tmp_path, capsys, photos):
    """``rtsr-reparam`` on an official training-form checkpoint: the importer is detected, no
    ``--opt`` needed; the deploy checkpoint equals the official forward."""
    official = torch.load(official_fixture('rt4ksr_x2.pth'), map_location='cpu', weights_only=True)['state_dict']
    out = tmp_path / 'rt4ksr_x2_deploy.pth'
    assert reparam.main(['--ckpt', str(FIXTURES / 'rt4ksr_x2.pth'), '--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    assert 'network_g: official RT4KSR checkpoint' in stdout and 'params: deploy vs training' in stdout
    checkpoint = torch.load(out, map_location='cpu', weights_only=True)
    assert set(checkpoint) == {'params', 'network_g'} and checkpoint['network_g']['deploy'] is True
    assert not any('expand_conv' in k for k in checkpoint['params'])
    with torch.no_grad():
        assert max_diff(load_model(out, deploy=None)(photos), ref.rt4ksr_forward(official, photos)) <= 1e-4


def test_runtime_loads_official_checkpoint(tmp_path):
    """``rtsr-runtime --ckpt`` reads official checkpoints through the one loader (``--set``: the
    importer's overrides)."""
    args = ['--ckpt', str(official_fixture('casr_teacher_deploy.pt')), '--set', 'act_type=gelu', '--device', 'cpu',
            '--cpu-crop', '16', '--cpu-warmup', '0', '--cpu-repeat', '1', '--out', str(tmp_path)]
    assert runtime.main(args) == 0
    row = json.loads((tmp_path / 'runtime_4k.json').read_text())['results'][0]
    assert (row['model'], row['scale'], row['input']) == ('casr_teacher_deploy', 4, '16x16')
    assert row['params_deploy'] == 398_768
