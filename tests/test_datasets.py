"""HROnlineDegradationDataset and MultiLRPairedDataset: folders vs LMDBs, alignment, level sampling,
one-line errors, and short rtsr-train runs with each dataset type and backend."""
import logging
import random
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data as skdata

from rtsr_arch.cli import train as cli_train
from rtsr_arch.data.degradations import Degradation, crop_to_multiple
from rtsr_arch.data.image_io import DatasetError, WorkerRNG
from rtsr_arch.data.multi_lr_paired_dataset import MultiLRPairedDataset
from rtsr_arch.data.online_degradation_dataset import HROnlineDegradationDataset
from helpers import ROOT, load_module

prepare_lmdb = load_module(ROOT / 'tools' / 'prepare_lmdb.py')

SCALE = 2
JPEG = {'resize': 'bicubic', 'codec': 'jpeg', 'levels': [90, 50, 20]}  # easiest first
# odd sizes, so every HR is centre-cropped to a multiple of the scale
CROPS = {'astronaut': (skdata.astronaut, 100, 120, 71, 83), 'coffee': (skdata.coffee, 150, 200, 66, 91),
         'chelsea': (skdata.chelsea, 60, 100, 81, 67)}


def _rgb(img):
    return np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]


def write_hr(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (load, top, left, h, w) in CROPS.items():
        Image.fromarray(np.ascontiguousarray(_rgb(load())[top:top + h, left:left + w])).save(folder / f'{name}.png')
    return folder


def write_lr(hr_folder, out, deg):
    """The offline degradation: OUT/<level_name>/<stem><file_suffix>."""
    for path in sorted(hr_folder.iterdir()):
        hr = crop_to_multiple(np.asarray(Image.open(path).convert('RGB')), deg.scale)
        for level in deg.levels:
            (out / deg.level_name(level)).mkdir(parents=True, exist_ok=True)
            (out / deg.level_name(level) / f'{path.stem}{deg.file_suffix}').write_bytes(deg.encode(hr, level))
    return out


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    hr = write_hr(root / 'hr')
    write_lr(hr, root / 'lr', Degradation.from_opt({**JPEG, 'scale': SCALE}))
    code = prepare_lmdb.main(['--hr', str(hr), '--lr-root', str(root / 'lr'), '--scale', str(SCALE),
                              '--out', str(root / 'lmdb'), '--crop-size', '0'])
    assert code == 0
    return root


def online_opt(root, backend, phase='train', **extra):
    gt = root / ('lmdb/hr.lmdb' if backend == 'lmdb' else 'hr')
    opt = {'phase': phase, 'scale': SCALE, 'dataroot_gt': str(gt), 'io_backend': {'type': backend},
           'degradation': dict(JPEG)}
    if phase == 'train':
        opt.update(gt_size=32, use_hflip=True, use_rot=True)
    return {**opt, **extra}


def multi_opt(root, backend, phase='train', **extra):
    sub = 'lmdb/{}.lmdb' if backend == 'lmdb' else 'lr/{}'
    opt = {'phase': phase, 'scale': SCALE, 'io_backend': {'type': backend},
           'dataroot_gt': str(root / ('lmdb/hr.lmdb' if backend == 'lmdb' else 'hr')),
           'dataroots_lq': {f'q{q}': str(root / sub.format(f'q{q}')) for q in JPEG['levels']}}
    if phase == 'train':
        opt.update(gt_size=32, use_hflip=True, use_rot=True)
    return {**opt, **extra}


def as_uint8(t):
    return (t.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def samples(dataset, seed=0, n=None):
    torch.manual_seed(seed)
    random.seed(seed)
    return [dataset[i % len(dataset)] for i in range(n or len(dataset))]


def assert_same(a, b, keys=('lq', 'gt', 'level', 'level_name')):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in keys:
            assert (x[key] == y[key]).all() if torch.is_tensor(x[key]) else x[key] == y[key], key


@pytest.mark.parametrize('make', [online_opt, multi_opt], ids=['online', 'multi'])
def test_lmdb_equals_folder(data_root, make):
    cls = HROnlineDegradationDataset if make is online_opt else MultiLRPairedDataset
    for level in (90, 20):
        disk, db = (cls(make(data_root, b, 'val', level=level)) for b in ('disk', 'lmdb'))
        a, b = samples(disk), samples(db)
        assert_same(a, b)
        assert {s['level'] for s in a} == {level} and a[0]['level_name'] == f'q{level}'
        assert [Path(s['gt_path']).stem for s in a] == [s['gt_path'] for s in b] == sorted(CROPS)
    a, b = (samples(cls(make(data_root, backend)), seed=3, n=12) for backend in ('disk', 'lmdb'))
    assert_same(a, b)
    assert len({s['level'] for s in a}) > 1


def test_multi_val_reads_the_level_files(data_root):
    ds = MultiLRPairedDataset(multi_opt(data_root, 'disk', 'val', level=50))
    for s in samples(ds):
        stem = Path(s['gt_path']).stem
        assert s['lq_path'] == str(data_root / 'lr' / 'q50' / f'{stem}.jpg')
        lr = Degradation.decode((data_root / 'lr' / 'q50' / f'{stem}.jpg').read_bytes())
        hr = crop_to_multiple(np.asarray(Image.open(s['gt_path']).convert('RGB')), SCALE)
        assert (as_uint8(s['lq']) == lr).all() and (as_uint8(s['gt']) == hr).all()
        assert s['lq'].dtype == torch.float32 and s['lq'].shape == (3, hr.shape[0] // 2, hr.shape[1] // 2)


def test_online_crops_are_aligned_with_the_returned_level(data_root):
    ds = HROnlineDegradationDataset(online_opt(data_root, 'disk', use_hflip=False, use_rot=False))
    deg = Degradation.from_opt({**JPEG, 'scale': SCALE})
    for s in samples(ds, n=9):
        gt, lq = as_uint8(s['gt']), as_uint8(s['lq'])
        assert gt.shape == (32, 32, 3) and lq.shape == (16, 16, 3)
        assert (deg(gt, s['level']) == lq).all()
        assert s['level_name'] == f"q{s['level']}" and s['lq_path'] == s['gt_path']
        full = crop_to_multiple(np.asarray(Image.open(s['gt_path']).convert('RGB')), SCALE)
        windows = np.lib.stride_tricks.sliding_window_view(full, (32, 32, 3))[..., 0, :, :, :]
        assert (windows == gt).all(axis=(-3, -2, -1)).any()  # the gt is a crop of the (cropped) HR


def test_online_avif_crops_are_the_ais24_degradation_of_the_hr_crop(data_root):
    """On-the-fly AVIF (x4 Lanczos-5 + libsvtav1 at a fast preset): each LR is exactly the
    degradation of its HR crop at the returned qp, decoded by the package's one decoder."""
    spec = {'preset_name': 'ais24', 'preset': 12, 'levels': [31, 63]}
    opt = {'phase': 'train', 'scale': 4, 'dataroot_gt': str(data_root / 'hr'), 'io_backend': {'type': 'disk'},
           'degradation': spec, 'gt_size': 64, 'use_hflip': False, 'use_rot': False}
    ds = HROnlineDegradationDataset(opt)
    deg = Degradation.from_opt(spec)
    seen = set()
    for s in samples(ds, n=6):
        gt, lq = as_uint8(s['gt']), as_uint8(s['lq'])
        assert gt.shape == (64, 64, 3) and lq.shape == (16, 16, 3)
        assert (deg(gt, s['level']) == lq).all() and s['level_name'] == f"qp{s['level']}"
        seen.add(s['level'])
    assert seen == {31, 63}


def test_multi_train_crops_are_aligned(data_root):
    ds = MultiLRPairedDataset(multi_opt(data_root, 'disk', use_hflip=False, use_rot=False))
    for s in samples(ds, n=6):
        lr = Degradation.decode(Path(s['lq_path']).read_bytes())
        gt, lq = as_uint8(s['gt']), as_uint8(s['lq'])
        hits = np.argwhere((np.lib.stride_tricks.sliding_window_view(lr, (16, 16, 3))[..., 0, :, :, :] == lq)
                           .all(axis=(-3, -2, -1)))
        full = crop_to_multiple(np.asarray(Image.open(s['gt_path']).convert('RGB')), SCALE)
        assert any((full[2 * t:2 * t + 32, 2 * u:2 * u + 32] == gt).all() for t, u in hits)
        assert Path(s['lq_path']).parent.name == s['level_name'] == f"q{s['level']}"


def test_samples_are_deterministic_per_seed_and_differ_across_seeds(data_root):
    for cls, make in ((HROnlineDegradationDataset, online_opt), (MultiLRPairedDataset, multi_opt)):
        ds = cls(make(data_root, 'disk'))
        a, c = samples(ds, 1, 9), samples(ds, 1, 9)  # the same generator goes on (next epoch, num_workers 0)
        assert_same(a, samples(cls(make(data_root, 'disk')), 1, 9))
        assert any(x['level'] != y['level'] or (x['gt'] != y['gt']).any() for x, y in zip(a, c))
        c = samples(cls(make(data_root, 'disk')), 2, 9)
        assert any(x['level'] != y['level'] or (x['gt'] != y['gt']).any() for x, y in zip(a, c))


def test_worker_streams_differ_across_workers_and_epochs(data_root):
    wide = {**JPEG, 'levels': {'low': 10, 'high': 95}}
    ds = HROnlineDegradationDataset(online_opt(data_root, 'disk', degradation=wide))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    epochs = [[b['level'].tolist() for b in loader] for _ in range(2)]
    assert len(epochs[0]) == 1 or epochs[0][0] != epochs[0][1]
    assert epochs[0] != epochs[1]
    torch.manual_seed(0)
    assert [b['level'].tolist() for b in loader] == epochs[0]  # reproducible from the manual seed
    db = MultiLRPairedDataset(multi_opt(data_root, 'lmdb'))
    first = samples(db, n=3)  # opens the LMDBs in this process; forked workers must reopen them
    loader = torch.utils.data.DataLoader(db, batch_size=3, num_workers=2)
    assert [b['gt'].shape[0] for b in loader] == [3] and first[0]['gt'].shape == (3, 32, 32)
    rng = WorkerRNG()
    torch.manual_seed(5)
    first = rng().integers(1 << 30, size=4)
    torch.manual_seed(6)
    assert (rng().integers(1 << 30, size=4) != first).any()


def level_counts(ds, n, seed=0):
    torch.manual_seed(seed)
    levels = [ds.sample_level() for _ in range(n)]
    return {level: levels.count(level) for level in ds.levels}, levels


def test_uniform_and_weighted_sampling(data_root):
    n = 3000
    counts, _ = level_counts(MultiLRPairedDataset(multi_opt(data_root, 'disk')), n)
    chi2 = sum((c - n / 3) ** 2 / (n / 3) for c in counts.values())
    assert chi2 < 13.8  # 2 degrees of freedom, p = 0.001
    counts, _ = level_counts(MultiLRPairedDataset(multi_opt(data_root, 'disk', sampling='weighted',
                                                            weights=[6, 3, 1])), n)
    expected = {90: 0.6 * n, 50: 0.3 * n, 20: 0.1 * n}
    assert sum((counts[k] - e) ** 2 / e for k, e in expected.items()) < 13.8
    online = HROnlineDegradationDataset(online_opt(data_root, 'disk', degradation={**JPEG, 'weights': [0, 1, 0]}))
    assert {s['level'] for s in samples(online, n=6)} == {50}


def test_curriculum_goes_from_easy_to_hard(data_root):
    opt = multi_opt(data_root, 'disk', sampling='curriculum', batch_size_per_gpu=4,
                    curriculum={'start_iter': 10, 'end_iter': 30})
    ds = MultiLRPairedDataset(opt)
    _, levels = level_counts(ds, 4 * 60)
    its = np.arange(len(levels)) // 4
    levels = np.array(levels)
    assert set(levels[its < 10]) == {90}  # easy only before start_iter
    assert set(levels[(its >= 10) & (its < 30)]) == {90, 50}  # medium from start_iter
    assert set(levels[its >= 30]) == {90, 50, 20}
    assert (levels[its >= 30] == 20).mean() > 0.2
    grouped = MultiLRPairedDataset({**opt, 'curriculum': {'start_iter': 2, 'end_iter': 5, 'groups': [[90], [50, 20]],
                                                          'resume_iter': 1}})
    _, levels = level_counts(grouped, 4 * 5)
    assert set(levels[:4]) == {90} and set(levels[4:]) == {90, 50, 20}  # resumed at iteration 1
    assert level_counts(MultiLRPairedDataset(opt), 200, seed=7) == level_counts(MultiLRPairedDataset(opt), 200, seed=7)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    before = ds.curriculum.drawn.value
    assert sum(len(b['level']) for b in loader) == len(ds)
    assert ds.curriculum.drawn.value == before + len(ds)  # the workers' draws count in the parent too


def one_line_error(build, *expected):
    with pytest.raises(DatasetError) as info:
        build()
    message = str(info.value)
    assert '\n' not in message
    for part in expected:
        assert str(part) in message, (part, message)


def test_bad_inputs_are_one_line_errors(data_root, tmp_path):
    bad = tmp_path / 'bad'
    write_hr(bad / 'hr')
    (bad / 'hr' / 'astronaut.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    ds = HROnlineDegradationDataset(online_opt(bad, 'disk', 'val'))
    one_line_error(lambda: ds[0], 'astronaut.png', 'cannot decode')
    one_line_error(lambda: HROnlineDegradationDataset(online_opt(bad, 'disk')), 'astronaut.png')  # header at init

    lr = write_lr(data_root / 'hr', bad / 'lr', Degradation.from_opt({**JPEG, 'scale': SCALE}))
    (lr / 'q50' / 'coffee.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated jpeg')
    ds = MultiLRPairedDataset({**multi_opt(data_root, 'disk', 'val', level=50),
                               'dataroots_lq': {'q50': str(lr / 'q50')}})
    one_line_error(lambda: ds[ds.keys.index('coffee')], 'coffee.jpg', 'cannot decode')

    one_line_error(lambda: HROnlineDegradationDataset(online_opt(data_root, 'disk', gt_size=68)),
                   'smaller than gt_size 68', 'skip_small')
    with pytest.warns(UserWarning, match=r'skipping 2 of 3 images smaller than gt_size 68'):
        ds = HROnlineDegradationDataset(online_opt(data_root, 'disk', gt_size=68, skip_small=True))
    assert len(ds) == 1 and Path(ds[0]['gt_path']).stem == 'astronaut'
    with pytest.warns(UserWarning, match='skipping 2 of 3'):
        assert len(MultiLRPairedDataset(multi_opt(data_root, 'lmdb', gt_size=68, skip_small=True))) == 1

    missing, empty = tmp_path / 'missing', tmp_path / 'empty'
    empty.mkdir()
    one_line_error(lambda: HROnlineDegradationDataset(online_opt(data_root, 'disk', dataroot_gt=str(missing))),
                   'dataroot_gt', missing)
    one_line_error(lambda: MultiLRPairedDataset(multi_opt(data_root, 'disk', dataroot_gt=str(empty))),
                   'dataroot_gt', 'no images', empty)
    one_line_error(lambda: MultiLRPairedDataset(multi_opt(data_root, 'disk', dataroots_lq={'q50': str(missing)})),
                   'dataroots_lq.q50', missing)
    no_meta = tmp_path / 'no_meta.lmdb'
    lmdb.open(str(no_meta)).close()
    one_line_error(lambda: HROnlineDegradationDataset(online_opt(data_root, 'lmdb', dataroot_gt=str(no_meta))),
                   'dataroot_gt', 'meta_info.txt', no_meta)

    small_lr = bad / 'small_lr'
    small_lr.mkdir()
    for name in CROPS:
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(small_lr / f'{name}.png')
    ds = MultiLRPairedDataset({**multi_opt(data_root, 'disk'), 'dataroots_lq': {'q90': str(small_lr)}})
    one_line_error(lambda: ds[0], small_lr / 'astronaut.png', data_root / 'hr' / 'astronaut.png', 'is not HR / 2')
    (small_lr / 'coffee.png').unlink()
    one_line_error(lambda: MultiLRPairedDataset({**multi_opt(data_root, 'disk'), 'dataroots_lq': [str(small_lr)],
                                                 'levels': [90]}), 'no LR for 1 HR images', 'coffee.png')

    for key, value, expected in (('degradation', {**JPEG, 'codec': 'webp'}, "'codec'"),
                                 ('degradation', {**JPEG, 'scale': 3}, 'scale 3 differs'),
                                 ('gt_size', 33, 'multiple of the scale'), ('level', 77, 'not one of')):
        phase = 'val' if key == 'level' else 'train'
        one_line_error(lambda: HROnlineDegradationDataset(online_opt(data_root, 'disk', phase, **{key: value})), key,
                       expected)
    for extra, expected in (({'sampling': 'hardest'}, 'sampling'),
                            ({'sampling': 'weighted', 'weights': [1]}, 'weights'),
                            ({'sampling': 'curriculum', 'curriculum': {'end_iter': 0}}, 'curriculum'),
                            ({'dataroots_lq': {'high': 'x'}}, 'dataroots_lq')):
        one_line_error(lambda: MultiLRPairedDataset(multi_opt(data_root, 'disk', **extra)), expected)


# ----------------------------------------------------------------------------------------------
# short trainings through rtsr-train, with per-level validation sets

NETWORK = {'type': 'LRSRN', 'num_feat': 8, 'num_block': 2, 'feature_size': 16, 'upscale': SCALE}


def train_options(root, kind, backend):
    make = online_opt if kind == 'online' else multi_opt
    train = {**make(root, backend), 'name': 'tiny', 'type': f'{kind}', 'num_worker_per_gpu': 0,
             'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 2, 'prefetch_mode': None}
    train['type'] = 'HROnlineDegradationDataset' if kind == 'online' else 'MultiLRPairedDataset'
    if kind == 'multi':
        train.update(sampling='curriculum', curriculum={'start_iter': 1, 'end_iter': 3})
    del train['phase'], train['scale']
    datasets = {'train': train}
    for level in (90, 20):
        val = {**make(root, backend, 'val', level=level), 'name': f'val_q{level}', 'type': train['type']}
        del val['phase'], val['scale']
        datasets[f'val_q{level}'] = val
    return {
        'name': f'tiny_{kind}_{backend}', 'model_type': 'SRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': datasets, 'network_g': dict(NETWORK),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'total_iter': 3, 'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 3, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 100, 'use_tb_logger': False, 'wandb': {'project': None}},
    }


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
@pytest.mark.parametrize('kind', ['online', 'multi'])
def test_rtsr_train_runs_with_per_level_validation(data_root, tmp_path, monkeypatch, kind, backend):
    opt_path = tmp_path / 'train.yml'
    opt_path.write_text(yaml.safe_dump(train_options(data_root, kind, backend), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', list(sys.argv))
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger('basicsr')
    logger.addHandler(handler)  # in-process, BasicSR's own handlers stay on the first run
    # whichever test first initialized BasicSR's logger decided its level; this test needs INFO records
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        cli_train(['-opt', str(opt_path)])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    exp = tmp_path / 'experiments' / f'tiny_{kind}_{backend}'
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    log = '\n'.join(records)
    assert 'Validation val_q90' in log and 'Validation val_q20' in log
    assert log.count('# psnr:') >= 2
