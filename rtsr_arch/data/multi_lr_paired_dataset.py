"""One HR set paired with several pre-degraded LR sets (one per JPEG quality or AVIF QP).

Crop and augmentation are those of BasicSR's ``PairedImageDataset``
(``basicsr/data/paired_image_dataset.py``: ``paired_random_crop`` + ``augment``). The curriculum
follows URPNet (AIS 2024 RTSR report, Sec. 3.12: train on easy QP 31 first, then medium QP 39/47,
then hard QP 55/63), here as a cumulative schedule over training iterations.
"""
import multiprocessing
import os
import re

import numpy as np
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from rtsr_arch.data.degradations import crop_to_multiple
from rtsr_arch.data.image_io import DatasetError, ImageSet, WorkerRNG, to_sample, train_keys

__all__ = ['MultiLRPairedDataset']

SAMPLINGS = ('uniform', 'weighted', 'curriculum')


def _level_sets(opt):
    """[(level, level_name, root)] from ``dataroots_lq`` (mapping level -> root, or list + ``levels``)."""
    if 'dataroot_lq' in opt:
        raise DatasetError('dataroot_lq: MultiLRPairedDataset reads the mapping dataroots_lq instead (BasicSR expects '
                           'dataroot_lq to be one path)')
    roots = opt.get('dataroots_lq')
    if isinstance(roots, (list, tuple)):
        levels = opt.get('levels')
        if not isinstance(levels, (list, tuple)) or len(levels) != len(roots):
            raise DatasetError(f'levels: expected a list of {len(roots)} ints, one per dataroots_lq entry; '
                               f'got {levels!r}')
        roots = dict(zip(levels, roots))
    if not isinstance(roots, dict) or not roots:
        raise DatasetError(f'dataroots_lq: expected a mapping {{level: folder}} or a list of folders; got {roots!r}')
    sets = []
    for key, root in roots.items():
        match = re.search(r'(\d+)$', str(key))
        if not match:
            raise DatasetError(f'dataroots_lq: level {key!r} must be an int or a name ending in one (q90, qp31)')
        name = str(root).rstrip('/').split('/')[-1].removesuffix('.lmdb') if isinstance(key, int) else str(key)
        sets.append((int(match.group(1)), name, os.path.expanduser(str(root))))
    if len({s[0] for s in sets}) != len(sets):
        raise DatasetError(f'dataroots_lq: duplicate levels in {[s[0] for s in sets]}')
    return sets


class _Curriculum:
    """Cumulative easy-to-hard schedule over ``groups`` of levels (default: one group per level, in
    the order of ``dataroots_lq``): before ``start_iter`` only the first group; the second joins at
    ``start_iter``, the last at ``end_iter``, those between at equal steps; levels are drawn
    uniformly from the unlocked groups.

    A dataset does not see BasicSR's iteration, so the iteration is estimated as
    ``samples drawn // batch_size_per_gpu + resume_iter``. The count is a shared-memory integer
    that every DataLoader worker of this dataset increments (it survives the workers' restart at
    each epoch; in DDP each rank counts its own samples, as its iterations). With
    ``num_worker_per_gpu: 0`` the schedule is exact and deterministic; with workers it runs ahead
    by the prefetched batches (``num_workers * prefetch_factor``, a few iterations). After a resume
    the count restarts at 0: set ``resume_iter`` to the resumed iteration."""

    def __init__(self, opt, levels, batch_size):
        unknown = set(opt) - {'start_iter', 'end_iter', 'groups', 'resume_iter'}
        if unknown:
            raise DatasetError(f'curriculum: unknown keys {sorted(unknown)}; '
                               'accepted: start_iter, end_iter, groups, resume_iter')
        self.start, self.end = opt.get('start_iter', 0), opt.get('end_iter')
        if not isinstance(self.end, int) or not isinstance(self.start, int) or not 0 <= self.start < self.end:
            raise DatasetError('curriculum: expected ints 0 <= start_iter < end_iter; '
                               f'got {self.start!r}, {self.end!r}')
        self.groups = opt.get('groups', [[level] for level in levels])
        if sorted(v for g in self.groups for v in g) != sorted(levels):
            raise DatasetError(f'curriculum.groups: {self.groups} must split the levels {levels} into groups, '
                               'easiest first')
        self.batch_size = batch_size
        self.drawn = multiprocessing.Value('q', opt.get('resume_iter', 0) * batch_size)

    def allowed(self, iteration):
        """The levels in use at ``iteration``."""
        if iteration < self.start:
            unlocked = 1
        elif iteration >= self.end:
            unlocked = len(self.groups)
        else:
            progress = (iteration - self.start) / (self.end - self.start)
            unlocked = min(len(self.groups), 2 + int(progress * (len(self.groups) - 2)))
        return [v for g in self.groups[:unlocked] for v in g]

    def next_allowed(self):
        with self.drawn.get_lock():
            count = self.drawn.value
            self.drawn.value += 1
        return self.allowed(count // self.batch_size)


@DATASET_REGISTRY.register()
class MultiLRPairedDataset(data.Dataset):
    """HR set + one pre-degraded LR set per level, paired by file stem (folders) or key (LMDBs);
    returns ``lq``, ``gt`` (RGB float [0, 1] CHW), ``lq_path``, ``gt_path``, ``level``, ``level_name``.

    Options: ``dataroot_gt``; ``dataroots_lq`` (not ``dataroot_lq``, which BasicSR's option parser
    requires to be one path): ``{qp31: folder, qp39: folder}`` (the level is the trailing int of
    the key; with int keys the name is the folder name) or a list of folders with
    ``levels: [31, 39]``, easiest level first; ``io_backend: {type: disk|lmdb}`` (for ``lmdb``
    every root is a ``.lmdb`` with the same keys).
    LR files may be .png/.jpg/.avif (JPEG and AVIF decoded by ``Degradation.decode``). The HR is
    centre-cropped to a multiple of the scale and each LR must be exactly HR / scale.
    Train phase: ``gt_size``, ``use_hflip``, ``use_rot``, ``skip_small``; ``sampling``:
    ``uniform`` (default), ``weighted`` (with ``weights``, one per level) or ``curriculum`` (with
    ``curriculum: {start_iter, end_iter, groups, resume_iter}``, see :class:`_Curriculum`). The
    level comes from a per-process seeded Generator (:class:`~rtsr_arch.data.image_io.WorkerRNG`);
    crop and flips from BasicSR's ``paired_random_crop`` / ``augment``.
    Val phase: every HR with the LR of one fixed ``level`` (default: the first).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.scale = opt['scale']
        self.train = opt['phase'] == 'train'
        backend = opt.get('io_backend', {}).get('type', 'disk')
        if 'dataroot_gt' not in opt:
            raise DatasetError('dataroot_gt: missing')
        sets = _level_sets(opt)
        self.levels = [s[0] for s in sets]
        if not self.train:
            level = opt.get('level', self.levels[0])
            if level not in self.levels:
                raise DatasetError(f'level: {level!r} is not one of the levels of dataroots_lq {self.levels}')
            sets = [s for s in sets if s[0] == level]
            self.levels = [level]
        self.names = {level: name for level, name, _ in sets}
        self.hr = ImageSet(opt['dataroot_gt'], backend, 'dataroot_gt')
        self.lr = {level: ImageSet(root, backend, f'dataroots_lq.{name}') for level, name, root in sets}
        self.keys = self.hr.keys
        for lr in self.lr.values():
            present = set(lr.keys)
            missing = [k for k in self.keys if k not in present]
            if missing:
                raise DatasetError(f'{lr.opt_key}: no LR for {len(missing)} HR images in {lr.root} '
                                   f'(first: {self.hr.where(missing[0])})')
        if self.train:
            self.gt_size, self.keys = train_keys(self.hr, self.keys, opt, self.scale)
            self._setup_sampling(opt)
        self.rng = WorkerRNG()

    def _setup_sampling(self, opt):
        self.sampling = opt.get('sampling', 'uniform')
        if self.sampling not in SAMPLINGS:
            raise DatasetError(f"sampling: expected one of {', '.join(SAMPLINGS)}; got {self.sampling!r}")
        self.probs = None
        if self.sampling == 'weighted':
            weights = np.asarray(opt.get('weights', []), dtype=float)
            if weights.shape != (len(self.levels),) or (weights < 0).any() or weights.sum() <= 0:
                raise DatasetError(f'weights: expected {len(self.levels)} non-negative numbers (one per level '
                                   f'{self.levels}); got {opt.get("weights")!r}')
            self.probs = weights / weights.sum()
        self.curriculum = None
        if self.sampling == 'curriculum':
            self.curriculum = _Curriculum(opt.get('curriculum') or {}, self.levels, opt.get('batch_size_per_gpu', 1))

    def sample_level(self):
        """The level of the next training sample."""
        rng = self.rng()
        levels = self.curriculum.next_allowed() if self.curriculum else self.levels
        return levels[int(rng.choice(len(levels), p=self.probs))]

    def __getitem__(self, index):
        key = self.keys[index]
        level = self.sample_level() if self.train else self.levels[0]
        lr_set = self.lr[level]
        hr = crop_to_multiple(self.hr.read(key), self.scale)
        lr = lr_set.read(key)
        if lr.shape[0] * self.scale != hr.shape[0] or lr.shape[1] * self.scale != hr.shape[1]:
            raise DatasetError(f'{lr_set.where(key)}: LR {lr.shape[0]}x{lr.shape[1]} is not HR / {self.scale} '
                               f'of {self.hr.where(key)} ({hr.shape[0]}x{hr.shape[1]} after cropping to a multiple '
                               'of the scale)')
        gt_path = self.hr.path(key)
        if self.train:
            hr, lr = paired_random_crop(hr, lr, self.gt_size, self.scale, gt_path)
            hr, lr = augment([hr.copy(), lr.copy()], self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        return to_sample(hr, lr, gt_path, lr_set.path(key), level, self.names[level])

    def __len__(self):
        return len(self.keys)
