"""rtsr-degrade (tools/degrade_dataset.py) end to end on a folder of small real photographs: the first
run as a program (the tools/ script, two worker processes), the others through ``main`` in this
process (same code, no import cost)."""
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from rtsr_arch.commands import degrade
from rtsr_arch.data.degradations import Degradation, crop_to_multiple, ntire23_lr

from helpers import ROOT, load_module, load_photo

TOOL = ROOT / 'tools' / 'degrade_dataset.py'
HR = {'astronaut': (0, 0, 130, 161), 'coffee': (50, 100, 121, 142), 'rocket': (100, 200, 128, 128)}


def run(*args):
    """The tools/ script as a subprocess."""
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture
def run_main(capsys):
    """``rtsr_arch.commands.degrade.main`` in this process, one worker: a ``subprocess.run``-like result."""

    def run_in_process(*args):
        code = degrade.main([*map(str, args), '--workers', '1'])
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run_in_process


def test_tool_is_the_command():
    assert load_module(TOOL).main is degrade.main


@pytest.fixture(scope='module')
def hr_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('hr')
    for name, (top, left, h, w) in HR.items():
        Image.fromarray(load_photo(name)[top:top + h, left:left + w]).save(folder / f'{name}.png')
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n this is not an image')
    (folder / 'notes.txt').write_text('not an image suffix: ignored')
    return folder


def read_tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_avif_folders_manifest_resume_and_png(hr_dir, tmp_path, run_main):
    out = tmp_path / 'out'
    args = [hr_dir, '--out', out, '--preset', 'ais24', '--set', 'levels=[31, 63]', '--save-hr', '--workers', '2']
    first = run(*args)
    assert first.returncode == 1 and 'broken.png' in first.stderr, first.stderr
    deg = Degradation.from_opt({'preset_name': 'ais24', 'levels': [31, 63]})
    for name, (top, left, h, w) in HR.items():
        hr = crop_to_multiple(load_photo(name)[top:top + h, left:left + w], 4)
        np.testing.assert_array_equal(np.asarray(Image.open(out / 'hr' / f'{name}.png')), hr)
        for qp in (31, 63):
            data = (out / f'qp{qp}' / f'{name}.avif').read_bytes()
            assert data == deg.encode(hr, qp)
            assert Degradation.decode(data).shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3)
    assert not list(out.glob('*/broken*')) and not list(out.rglob('*.tmp'))
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['degradation'] == deg.opt and manifest['failed'] == ['broken.png']
    assert {'av', 'FFmpeg', 'libsvtav1', 'Pillow', 'numpy', 'rtsr_arch'} <= set(manifest['versions'])

    before = {p: p.stat().st_mtime_ns for p in out.rglob('*.*') if p.suffix != '.json'}
    files = read_tree(out)
    second = run_main(*args[:-2])
    assert second.returncode == 1 and '1 to do, 9 files already done' in second.stdout, second.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*.*') if p.suffix != '.json'} == before
    assert {k: v for k, v in read_tree(out).items() if k.suffix != '.json'} == \
        {k: v for k, v in files.items() if k.suffix != '.json'}

    png = tmp_path / 'png'
    result = run_main(hr_dir, '--out', png, '--preset', 'ais24', '--set', 'levels=[31, 63]', '--format', 'png')
    assert result.returncode == 1
    for name in HR:
        for qp in (31, 63):
            decoded = Degradation.decode((out / f'qp{qp}' / f'{name}.avif').read_bytes())
            np.testing.assert_array_equal(np.asarray(Image.open(png / f'qp{qp}' / f'{name}.png')), decoded)

    other = run_main(hr_dir, '--out', out, '--preset', 'ais24')  # other settings, same folder
    assert other.returncode == 2 and other.stderr.startswith('rtsr-degrade: error: ')
    assert 'other settings' in other.stderr


def test_ntire23_jpeg(hr_dir, tmp_path, run_main):
    result = run_main(hr_dir, '--out', tmp_path, '--preset', 'ntire23', '--scale', '3')
    assert result.returncode == 1
    for name, (top, left, h, w) in HR.items():
        _, lr = ntire23_lr(load_photo(name)[top:top + h, left:left + w], 3)
        np.testing.assert_array_equal(Degradation.decode((tmp_path / 'q90' / f'{name}.jpg').read_bytes()), lr)


@pytest.mark.parametrize('args,key', [(['--preset', 'ais24', '--set', 'qp=31'], "'qp'"),
                                      (['--preset', 'ntire23'], "'scale'"),
                                      (['--preset', 'ais24', '--set', 'levels'], "'levels': expected key=value"),
                                      (['--preset', 'ais24', '-opt', 'missing.yml'],
                                       'missing.yml: no such option file')])
def test_bad_options_one_line(hr_dir, tmp_path, run_main, args, key):
    result = run_main(hr_dir, '--out', tmp_path / 'o', *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith('rtsr-degrade: error: '), lines
    assert key in lines[0]
    assert not (tmp_path / 'o').exists()


def test_empty_input_folder(tmp_path, run_main):
    result = run_main(tmp_path, '--out', tmp_path / 'o', '--preset', 'ntire23', '--scale', '2')
    assert result.returncode == 2 and 'no images' in result.stderr and not (tmp_path / 'o').exists()


def test_shards_merge_to_the_unsharded_output_and_verify(hr_dir, tmp_path, run_main):
    """Two shards on two 'machines' split the inputs without overlap; merged, they equal the
    unsharded output and verify; a missing, changed or extra file and a missing shard are each
    one line and exit status 1."""
    common = ['--preset', 'ntire23', '--scale', '2', '--save-hr']
    whole = tmp_path / 'whole'
    assert run_main(hr_dir, '--out', whole, *common).returncode == 1  # (broken.png)
    merged = tmp_path / 'merged'
    names = []
    for i in (0, 1):
        out = tmp_path / f'machine{i}'
        assert run_main(hr_dir, '--out', out, '--shard', f'{i}/2', *common).returncode == (1 if i == 1 else 0)
        manifest = json.loads((out / f'manifest.shard-{i}-of-2.json').read_text())
        assert manifest['shard'] == [i, 2] and not (out / 'manifest.json').exists()
        names.append({p.name for p in out.rglob('*.png')} | set(manifest['failed']))
        shutil.copytree(out, merged, dirs_exist_ok=True)
    inputs = sorted(p.name for p in hr_dir.glob('*.png'))
    assert names[0] | names[1] == set(inputs) | {'broken.png'} and not names[0] & names[1]
    assert names[0] >= {inputs[0], inputs[2]} and inputs[1] in names[1]  # every 2nd of the sorted list
    data = {k: v for k, v in read_tree(merged).items() if k.suffix != '.json'}
    assert data == {k: v for k, v in read_tree(whole).items() if k.suffix != '.json'}

    def verify(folder):
        result = run_main('--verify', folder)
        return result.returncode, [line for line in result.stderr.splitlines() if line.startswith('rtsr-degrade:')]

    assert verify(whole) == (1, [f"rtsr-degrade: {whole / 'manifest.json'}: inputs failed: broken.png"])
    (hr_dir / 'broken.png').rename(tmp_path / 'broken.png')  # a clean input folder: shards verify with no problem
    try:
        clean = tmp_path / 'clean'
        for i in (0, 1):
            assert run_main(hr_dir, '--out', clean, '--shard', f'{i}/2', *common).returncode == 0
        assert verify(clean) == (0, [])
        (clean / 'q90' / 'astronaut.jpg').unlink()  # shard 0 has astronaut and rocket, shard 1 coffee
        (clean / 'hr' / 'rocket.png').write_bytes(b'changed')
        (clean / 'q90' / 'extra.jpg').write_bytes(b'x')
        (clean / 'manifest.shard-1-of-2.json').unlink()
        code, lines = verify(clean)
        expected = ['astronaut.jpg: missing', 'rocket.png: content differs', 'shards 1/2 missing',
                    'coffee.png: not listed', 'coffee.jpg: not listed', 'extra.jpg: not listed']
        assert code == 1 and len(lines) == len(expected), lines
        assert all(sum(e in line for line in lines) == 1 for e in expected), lines
    finally:
        (tmp_path / 'broken.png').rename(hr_dir / 'broken.png')
    bad = run_main(hr_dir, '--out', tmp_path / 'x', '--shard', '2/2', *common)
    assert bad.returncode == 2 and "--shard: '2/2' is not I/N" in bad.stderr
