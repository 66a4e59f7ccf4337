"""rtsr-lmdb (tools/prepare_lmdb.py): aligned sub-images in BasicSR LMDBs, --verify, one-line errors, AVIF LR."""
import re
import shutil

import cv2
import lmdb
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from rtsr_arch.commands import lmdb as tool  # first: rtsr_arch's aliases before basicsr
from rtsr_arch.data.degradations import Degradation, crop_to_multiple
from rtsr_arch.data.image_io import lmdb_env
from rtsr_arch.data.multi_lr_paired_dataset import MultiLRPairedDataset
from basicsr.data.paired_image_dataset import PairedImageDataset
from helpers import ROOT, load_module

JPEG = Degradation.from_opt({'scale': 2, 'resize': 'bicubic', 'codec': 'jpeg', 'levels': [90, 50]})
HR = {'astronaut': skdata.astronaut()[100:250, 100:303], 'coffee': skdata.coffee()[50:180, 200:371]}  # odd widths


def make_folders(root, deg=JPEG, hr_images=HR):
    (root / 'hr').mkdir(parents=True)
    for name, img in hr_images.items():
        Image.fromarray(np.ascontiguousarray(img)).save(root / 'hr' / f'{name}.png')
        hr = crop_to_multiple(img, deg.scale)
        for level in deg.levels:
            folder = root / 'lr' / deg.level_name(level)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f'{name}{deg.file_suffix}').write_bytes(deg.encode(hr, level))
    return root


def read_lmdb(path):
    with lmdb_env(path).begin() as txn:  # the process-wide environment (py-lmdb opens one per process)
        return {k.decode(): cv2.cvtColor(cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                for k, v in txn.cursor()}


def test_tool_is_the_command():
    assert load_module(ROOT / 'tools' / 'prepare_lmdb.py').main is tool.main


def run(capsys, *args):
    code = tool.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = make_folders(tmp_path_factory.mktemp('prep'))
    code = tool.main(['--hr', str(root / 'hr'), '--lr', f"q90={root / 'lr/q90'}", '--lr', str(root / 'lr/q50'),
                      '--scale', '2', '--out', str(root / 'sub'), '--crop-size', '64', '--step', '48',
                      '--thresh-size', '8'])
    assert code == 0
    return root


def test_sub_images_are_aligned_and_keyed_alike(built):
    dbs = {name: read_lmdb(built / 'sub' / f'{name}.lmdb') for name in ('hr', 'q90', 'q50')}
    # 150x202: rows 0, 48, 86 (38 > thresh 8 left), cols 0, 48, 96, 138; 130x170: rows 0, 48, 66, cols 0, 48, 96, 106
    assert len(dbs['hr']) == 3 * 4 + 3 * 4
    assert set(dbs['hr']) == set(dbs['q90']) == set(dbs['q50'])
    assert sorted(dbs['hr'])[:2] == ['astronaut_s001', 'astronaut_s002']
    for name, img in HR.items():
        hr = crop_to_multiple(img, 2)
        lrs = {q: Degradation.decode((built / 'lr' / q / f'{name}.jpg').read_bytes()) for q in ('q90', 'q50')}
        rows = tool.windows(hr.shape[0], 64, 48, 8)
        cols = tool.windows(hr.shape[1], 64, 48, 8)
        for index, (top, left) in enumerate(((t, u) for t in rows for u in cols), 1):
            key = f'{name}_s{index:03d}'
            assert (dbs['hr'][key] == hr[top:top + 64, left:left + 64]).all()
            for q, lr in lrs.items():
                assert (dbs[q][key] == lr[top // 2:top // 2 + 32, left // 2:left // 2 + 32]).all()
    for name in ('hr', 'q90'):
        lines = (built / 'sub' / f'{name}.lmdb' / 'meta_info.txt').read_text().splitlines()
        size = 64 if name == 'hr' else 32
        assert all(re.fullmatch(rf'[a-z]+_s\d{{3}}\.png \({size},{size},3\) 1', line) for line in lines), lines[:2]


def test_basicsr_and_our_datasets_read_the_lmdbs_alike(built, tmp_path):
    sub, copy = built / 'sub', tmp_path / 'copy'
    shutil.copytree(sub, copy)  # BasicSR's LmdbBackend opens its own environments (py-lmdb: one per process)
    basic = PairedImageDataset({'phase': 'val', 'scale': 2, 'io_backend': {'type': 'lmdb'},
                                'dataroot_gt': str(copy / 'hr.lmdb'), 'dataroot_lq': str(copy / 'q50.lmdb')})
    ours = MultiLRPairedDataset({'phase': 'val', 'scale': 2, 'io_backend': {'type': 'lmdb'}, 'level': 50,
                                 'dataroot_gt': str(sub / 'hr.lmdb'),
                                 'dataroots_lq': {'q90': str(sub / 'q90.lmdb'), 'q50': str(sub / 'q50.lmdb')}})
    theirs = {basic[i]['gt_path']: basic[i] for i in range(len(basic))}
    assert len(ours) == len(theirs)
    for i in range(len(ours)):
        s = ours[i]
        assert (s['gt'] == theirs[s['gt_path']]['gt']).all() and (s['lq'] == theirs[s['gt_path']]['lq']).all()
        assert s['level'] == 50 and s['level_name'] == 'q50'


def test_verify_passes_and_finds_corruption(built, tmp_path, capsys):
    code, out, _ = run(capsys, '--verify', built / 'sub', '--scale', 2)
    assert code == 0 and 'checked 72 keys in 3 LMDBs: 0 problems' in out
    broken = tmp_path / 'broken'
    shutil.copytree(built / 'sub', broken)
    with lmdb.open(str(broken / 'q90.lmdb'), map_size=1 << 30) as env, env.begin(write=True) as txn:
        txn.put(b'coffee_s002', b'\x89PNG\r\n\x1a\n garbage')
        txn.delete(b'coffee_s003')
    meta = broken / 'q50.lmdb' / 'meta_info.txt'
    meta.write_text(meta.read_text().replace('astronaut_s001.png (32,32,3)', 'astronaut_s001.png (30,32,3)'))
    code, _, err = run(capsys, '--verify', broken, '--scale', 4)
    assert code == 1
    assert 'coffee_s002: cannot decode' in err and 'coffee_s003: empty or missing' in err
    assert 'meta_info says (30, 32)' in err and 'is not HR (64, 64) / 4' in err


def test_bad_input_is_a_one_line_error(built, tmp_path, capsys):
    hr, lr = built / 'hr', built / 'lr' / 'q90'
    cases = [(['--hr', hr, '--lr', lr, '--scale', 2, '--out', built / 'sub'], 'already exists'),
             (['--hr', hr, '--lr', lr, '--scale', 2, '--out', tmp_path / 'a', '--crop-size', 63], '--crop-size'),
             (['--hr', tmp_path / 'nope', '--scale', 2, '--out', tmp_path / 'b'], 'nope'),
             (['--hr', hr, '--lr', lr, '--scale', 3, '--out', tmp_path / 'c'], 'is not HR / 3'),
             (['--hr', hr, '--scale', 2], 'required'), (['--verify', tmp_path], 'no *.lmdb')]
    partial = tmp_path / 'partial'
    partial.mkdir()
    shutil.copy(lr / 'coffee.jpg', partial)
    cases.append((['--hr', hr, '--lr', partial, '--scale', 2, '--out', tmp_path / 'd'], 'astronaut.png'))
    dotted = tmp_path / 'dotted'
    dotted.mkdir()
    shutil.copy(hr / 'coffee.png', dotted / 'cof.fee.png')
    cases.append((['--hr', dotted, '--scale', 2, '--out', tmp_path / 'e'], 'cof.fee.png'))
    for args, expected in cases:
        code, _, err = run(capsys, *args)
        assert code == 2, (args, err)
        lines = [line for line in err.splitlines() if line.startswith('rtsr-lmdb')]  # not tqdm's
        assert len(lines) == 1 and lines[0].startswith('rtsr-lmdb: error: ') and expected in lines[0], (expected, lines)
    assert not (tmp_path / 'c').exists()  # sizes are checked before anything is written


def test_avif_lr_is_stored_decoded(tmp_path, capsys):
    try:
        deg = Degradation.from_opt({'preset_name': 'ais24', 'levels': [31, 63], 'preset': 12})
    except ImportError:
        pytest.skip('no AVIF encoder (PyAV)')
    root = make_folders(tmp_path, deg, {'rocket': skdata.rocket()[100:357, 200:457]})  # 257x257 -> 256 -> LR 64
    code, _, _ = run(capsys, '--hr', root / 'hr', '--lr-root', root / 'lr', '--scale', 4, '--out', root / 'db',
                     '--crop-size', 0)
    assert code == 0 and run(capsys, '--verify', root / 'db', '--scale', 4)[0] == 0
    opts = {'phase': 'val', 'scale': 4, 'levels': [31, 63]}
    for level in (31, 63):
        stored = read_lmdb(root / 'db' / f'qp{level}.lmdb')['rocket']
        assert stored.shape == (64, 64, 3)
        assert (stored == Degradation.decode((root / 'lr' / f'qp{level}' / 'rocket.avif').read_bytes())).all()
        disk = MultiLRPairedDataset({**opts, 'level': level, 'io_backend': {'type': 'disk'},
                                     'dataroot_gt': str(root / 'hr'),
                                     'dataroots_lq': [str(root / 'lr/qp31'), str(root / 'lr/qp63')]})[0]
        db = MultiLRPairedDataset({**opts, 'level': level, 'io_backend': {'type': 'lmdb'},
                                   'dataroot_gt': str(root / 'db/hr.lmdb'),
                                   'dataroots_lq': [str(root / 'db/qp31.lmdb'), str(root / 'db/qp63.lmdb')]})[0]
        assert (disk['lq'] == db['lq']).all() and (disk['gt'] == db['gt']).all()
        assert disk['level_name'] == db['level_name'] == f'qp{level}' and disk['lq_path'].endswith('rocket.avif')


def _build_args(root, out, *extra):
    return ['--hr', root / 'hr', '--lr', root / 'lr' / 'q90', '--scale', 2, '--out', out, '--crop-size', 64,
            '--step', 48, *extra]


def test_map_grows_beyond_its_initial_size(built, tmp_path, capsys):
    """A 64 KiB initial map holds a fraction of the data; the build doubles it as needed."""
    code, _, err = run(capsys, *_build_args(built, tmp_path / 'small', '--map-size', 1 << 16))
    assert code == 0, err
    stored = read_lmdb(tmp_path / 'small' / 'hr.lmdb')
    assert (tmp_path / 'small' / 'hr.lmdb' / 'data.mdb').stat().st_size > 1 << 16
    reference = read_lmdb(built / 'sub' / 'hr.lmdb')
    assert stored.keys() == reference.keys() and all((stored[k] == reference[k]).all() for k in stored)
    assert (tmp_path / 'small/hr.lmdb/meta_info.txt').read_text() == (built / 'sub/hr.lmdb/meta_info.txt').read_text()


def test_half_built_output_is_refused_then_resumed(built, tmp_path, capsys):
    """An error in the second image leaves LMDBs without meta_info.txt (unreadable as datasets); the
    same command completes them, identical to an uninterrupted build; another command is refused."""
    root = tmp_path / 'src'
    shutil.copytree(built / 'hr', root / 'hr')
    shutil.copytree(built / 'lr' / 'q90', root / 'lr' / 'q90')
    good = (root / 'lr/q90/coffee.jpg').read_bytes()
    (root / 'lr/q90/coffee.jpg').write_bytes(good[:len(good) // 3])  # the header reads, the pixels do not
    out = tmp_path / 'out'
    code, _, err = run(capsys, *_build_args(root, out))
    assert code == 2 and 'coffee' in err
    for name in ('hr', 'q90'):
        assert (out / f'{name}.lmdb' / 'data.mdb').is_file() and not (out / f'{name}.lmdb' / 'meta_info.txt').exists()
        with pytest.raises(Exception, match='meta_info'):
            PairedImageDataset({'phase': 'val', 'scale': 2, 'io_backend': {'type': 'lmdb'},
                                'dataroot_gt': str(out / 'hr.lmdb'), 'dataroot_lq': str(out / 'q90.lmdb')})
    env = lmdb.open(str(out / 'hr.lmdb'), readonly=True, lock=False)  # (not cached: the build reopens it)
    with env.begin() as txn:
        stored = {k.decode() for k in txn.cursor().iternext(values=False)}
    env.close()
    assert stored and all(k.startswith('astronaut_') for k in stored)  # the first image, complete

    code, _, err = run(capsys, *_build_args(root, out, '--step', 32))
    assert code == 2 and 'half-built' in err
    (root / 'lr/q90/coffee.jpg').write_bytes(good)
    code, stdout, err = run(capsys, *_build_args(root, out))
    assert code == 0 and f'{len(stored)} keys already stored' in stdout, err
    assert not (out / tool.BUILD_MARKER).exists()
    for name in ('hr', 'q90'):
        meta = f'{name}.lmdb/meta_info.txt'
        assert (out / meta).read_text() == (built / 'sub' / meta).read_text()
        resumed, reference = read_lmdb(out / f'{name}.lmdb'), read_lmdb(built / 'sub' / f'{name}.lmdb')
        assert resumed.keys() == reference.keys() and all((resumed[k] == reference[k]).all() for k in resumed)
