"""HR-only dataset that makes the LR on the fly with the challenge degradations.

The LR of a crop is made as the challenges made theirs from whole images: NTIRE 2023 RTSR
(``eduardzamfir/NTIRE23-RTSR:demo/prepare_data.py``: PIL bicubic, JPEG quality 90) and AIS 2024
(ffmpeg Lanczos ``param0=5``, libsvtav1 ``-qp``), through :class:`rtsr_arch.data.degradations.Degradation`.
Crop and augmentation follow BasicSR's ``PairedImageDataset`` (``basicsr/data/paired_image_dataset.py``).

Cost: JPEG on the fly is nearly free (under 1 ms per 128x128 LR patch). AVIF is about 100x dearer
(SVT-AV1 preset 5: ~70 ms per 256x256 LR patch on one core); for AVIF on the fly set
``degradation.preset`` to 8-12, or pre-degrade offline and train with ``MultiLRPairedDataset``.
"""
from basicsr.data.transforms import augment
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from rtsr_arch.data.degradations import Degradation, crop_to_multiple
from rtsr_arch.data.image_io import DatasetError, ImageSet, WorkerRNG, to_sample, train_keys

__all__ = ['HROnlineDegradationDataset']


@DATASET_REGISTRY.register()
class HROnlineDegradationDataset(data.Dataset):
    """HR images (folder or LMDB) degraded on the fly; returns ``lq``, ``gt`` (RGB float [0, 1]
    CHW), ``lq_path`` (= ``gt_path``: there is no LR file), ``gt_path``, ``level``, ``level_name``.

    Options: ``dataroot_gt``; ``io_backend: {type: disk|lmdb}``; ``degradation``: the mapping of
    ``Degradation.from_opt`` (its ``scale`` defaults to the top-level ``scale``; it must agree).
    Train phase: ``gt_size`` (a multiple of the scale), ``use_hflip``, ``use_rot``, ``skip_small``
    (skip HR images smaller than ``gt_size`` with a warning instead of failing). Each sample takes a
    random ``gt_size`` crop of the HR (centre-cropped to a multiple of the scale), degrades the crop
    at a random level (``Degradation.sample_level``) into an aligned ``gt_size / scale`` LR, then
    flips/rotates both. Crop position and level come from a numpy Generator seeded per process from
    torch's seed (:class:`~rtsr_arch.data.image_io.WorkerRNG`); flips from BasicSR's ``augment``.
    Val phase: the whole HR centre-cropped to a multiple of the scale, at one fixed ``level``
    (default: the first level), so one validation set per level gives per-level metrics.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.scale = opt['scale']
        self.train = opt['phase'] == 'train'
        deg_opt = opt.get('degradation')
        if not isinstance(deg_opt, dict):
            raise DatasetError(f'degradation: expected a mapping for Degradation.from_opt; got {deg_opt!r}')
        if 'scale' not in deg_opt and deg_opt.get('preset_name') != 'ais24':  # ais24 is x4 by definition
            deg_opt = {**deg_opt, 'scale': self.scale}
        try:
            self.degradation = Degradation.from_opt(deg_opt)
        except ValueError as exc:
            raise DatasetError(f'degradation: {exc}') from None
        if self.degradation.scale != self.scale:
            raise DatasetError(f'degradation: scale {self.degradation.scale} differs from the scale {self.scale} '
                               'of the options')
        if 'dataroot_gt' not in opt:
            raise DatasetError('dataroot_gt: missing')
        self.hr = ImageSet(opt['dataroot_gt'], opt.get('io_backend', {}).get('type', 'disk'), 'dataroot_gt')
        self.keys = self.hr.keys
        if self.train:
            self.gt_size, self.keys = train_keys(self.hr, self.keys, opt, self.scale)
        else:
            self.level = opt.get('level', self.degradation.levels[0])
            if self.level not in self.degradation.levels:
                raise DatasetError(f'level: {self.level!r} is not one of the degradation levels '
                                   f'{self.degradation.levels}')
        self.rng = WorkerRNG(self.degradation.seed)

    def __getitem__(self, index):
        key = self.keys[index]
        hr = crop_to_multiple(self.hr.read(key), self.scale)
        if self.train:
            rng = self.rng()
            level = self.degradation.sample_level(rng)
            top = int(rng.integers(hr.shape[0] - self.gt_size + 1))
            left = int(rng.integers(hr.shape[1] - self.gt_size + 1))
            hr = hr[top:top + self.gt_size, left:left + self.gt_size]
            lr = self.degradation(hr, level)
            hr, lr = augment([hr.copy(), lr.copy()], self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        else:
            level = self.level
            lr = self.degradation(hr, level)
        path = self.hr.path(key)
        return to_sample(hr, lr, path, path, level, self.degradation.level_name(level))

    def __len__(self):
        return len(self.keys)
