"""Image sets for the datasets and tools: a folder or a BasicSR LMDB, read as uint8 RGB, with
one-line errors that name the option key, the folder and the file.

LMDBs follow BasicSR 1.4.2 (``basicsr/utils/lmdb_util.py``, ``basicsr/data/data_util.py``):
``<name>.lmdb/`` with ``meta_info.txt`` lines ``<key>.png (h,w,c) <compress_level>``, PNG values
decoded by OpenCV as ``imfrombytes`` does. They are opened as BasicSR's ``LmdbBackend`` opens them
(read-only, no lock, no readahead) but once per process and path (:func:`lmdb_env`): py-lmdb refuses
to open one environment twice in a process (e.g. a train and several validation sets over one HR
LMDB), and an environment inherited through ``fork`` must not be used by the child; for the same
reason BasicSR's own LMDB datasets cannot read the same LMDB in the same process. Files in
folders are paired by stem; JPEG and AVIF files are decoded with ``Degradation.decode`` (the one
decoder used for LR generation too), other formats (PNG, ...) with OpenCV like BasicSR.
"""
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from basicsr.utils import img2tensor

from rtsr_arch.data.degradations import Degradation

__all__ = ['DatasetError', 'IMG_EXTENSIONS', 'ImageSet', 'WorkerRNG', 'decode_image', 'encode_png', 'lmdb_env',
           'to_sample', 'train_keys']

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.avif', '.bmp', '.tif', '.tiff', '.webp')


class DatasetError(ValueError):
    """A problem with dataset files or options; the message is one line naming the key and file."""


_LMDB_ENVS = {}  # real path -> (pid, read-only environment)


def lmdb_env(root):
    """The read-only environment of the LMDB ``root`` in this process (opened on first use)."""
    import lmdb

    root = os.path.realpath(root)
    pid, env = _LMDB_ENVS.get(root, (None, None))
    if pid != os.getpid():
        if env is not None:
            env.close()  # inherited through fork: unusable here, and it would block a new open
        env = lmdb.open(root, readonly=True, lock=False, readahead=False)
        _LMDB_ENVS[root] = (os.getpid(), env)
    return env


def decode_image(data, name):
    """Bytes of an image file -> uint8 RGB (H, W, 3); a corrupt or unreadable image raises
    :class:`DatasetError` naming ``name``."""
    if not data:
        raise DatasetError(f'{name}: empty or missing image data')
    if data.startswith(b'\xff\xd8\xff') or data[4:8] == b'ftyp':  # JPEG SOI, or an ISO-BMFF (AVIF) box
        try:
            img = Degradation.decode(data)
        except Exception as exc:  # the decoders raise many types for truncated/corrupt data
            raise DatasetError(f'{name}: cannot decode image ({type(exc).__name__}: {exc})'.splitlines()[0]) from None
    else:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f'{name}: cannot decode image (corrupt or unsupported format)')
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def encode_png(img, compress_level=1):
    """uint8 RGB -> PNG bytes as BasicSR's LMDB tools write them (OpenCV, so ``imfrombytes`` reads
    the same colours back)."""
    ok, buf = cv2.imencode('.png', cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise DatasetError('cannot encode image as PNG')
    return buf.tobytes()


class ImageSet:
    """The images of one option key (``dataroot_gt``, ``dataroot_lq.qp31`` ...), by key.

    ``backend`` is ``'disk'`` (keys = file stems of the images in the folder, any extension of
    :data:`IMG_EXTENSIONS`) or ``'lmdb'`` (keys from ``meta_info.txt``). ``sizes`` maps key -> (h, w)
    when known without decoding (LMDB meta_info), else is empty. Picklable; the LMDB is opened
    lazily in each process (as BasicSR's datasets do).
    """

    def __init__(self, root, backend, opt_key):
        self.root, self.backend, self.opt_key = str(root), backend, opt_key
        self.sizes = {}
        path = Path(self.root)
        if backend not in ('disk', 'lmdb'):
            raise DatasetError(f"io_backend.type: expected 'disk' or 'lmdb'; got {backend!r}")
        if not path.is_dir():
            raise DatasetError(f'{opt_key}: no such folder {self.root}')
        if backend == 'lmdb':
            meta = path / 'meta_info.txt'
            if not (path / 'data.mdb').is_file() or not meta.is_file():
                raise DatasetError(f'{opt_key}: {self.root} is not a BasicSR LMDB (needs data.mdb and meta_info.txt)')
            self.files = {}
            for line in meta.read_text().splitlines():
                if line.strip():
                    name, shape = line.split()[:2]
                    h, w = (int(v) for v in shape.strip('()').split(',')[:2])
                    self.sizes[name.split('.')[0]] = (h, w)
            self.keys = sorted(self.sizes)
        else:
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
            self.files = {}
            for p in files:
                if p.stem in self.files:
                    raise DatasetError(f'{opt_key}: two images with the stem {p.stem!r}: '
                                   f'{self.files[p.stem].name}, {p.name}')
                self.files[p.stem] = p
            self.keys = list(self.files)
        if not self.keys:
            raise DatasetError(f'{opt_key}: no images in {self.root}')

    def path(self, key):
        """What the datasets return as ``*_path``: the file path, or the LMDB key (as BasicSR)."""
        return str(self.files[key]) if self.backend == 'disk' else key

    def where(self, key):
        """The file (or ``LMDB:key``) for error messages."""
        return str(self.files[key]) if self.backend == 'disk' else f'{self.root}:{key}'

    def read(self, key):
        """The image ``key`` as uint8 RGB (H, W, 3)."""
        if self.backend == 'disk':
            try:
                data = self.files[key].read_bytes()
            except OSError as exc:
                raise DatasetError(f'{self.files[key]}: cannot read ({exc.strerror})') from None
        else:
            with lmdb_env(self.root).begin() as txn:
                data = txn.get(key.encode('ascii'))
        return decode_image(data, self.where(key))

    def size(self, key):
        """(h, w) of image ``key``: from meta_info, else from the file header (PIL, no decoding),
        else by decoding it."""
        if key in self.sizes:
            return self.sizes[key]
        try:
            with Image.open(self.files[key]) as img:
                return img.size[::-1]
        except Exception:  # a format PIL cannot parse (e.g. AVIF without plugin) or a corrupt file
            return self.read(key).shape[:2]


def train_keys(image_set, keys, opt, scale):
    """``(gt_size, keys)`` for the train phase: ``opt['gt_size']`` checked, and the ``keys`` whose
    image, centre-cropped to a multiple of ``scale``, has both sides >= gt_size. A smaller image is a
    :class:`DatasetError` naming it, or with ``opt['skip_small']`` a warning counting the skipped."""
    gt_size, skip_small = opt.get('gt_size'), opt.get('skip_small', False)
    if isinstance(gt_size, bool) or not isinstance(gt_size, int) or gt_size <= 0 or gt_size % scale:
        raise DatasetError(f'gt_size: expected a positive multiple of the scale {scale}; got {gt_size!r}')
    small = []
    for key in keys:
        h, w = image_set.size(key)
        if min(h - h % scale, w - w % scale) < gt_size:
            if not skip_small:
                raise DatasetError(f'{image_set.where(key)}: image {h}x{w} is smaller than gt_size {gt_size} '
                                   '(set skip_small: true to skip such images)')
            small.append(key)
    if small:
        warnings.warn(f'{image_set.opt_key}: skipping {len(small)} of {len(keys)} images smaller than gt_size '
                      f'{gt_size} (first: {image_set.where(small[0])})', stacklevel=3)
    small = set(small)
    kept = [k for k in keys if k not in small]
    if not kept:
        raise DatasetError(f'{image_set.opt_key}: every image in {image_set.root} is smaller than gt_size {gt_size}')
    return gt_size, kept


class WorkerRNG:
    """A numpy Generator per process, seeded with ``torch.initial_seed()`` of that process.

    In the main process that is BasicSR's ``manual_seed`` (+ rank); in a DataLoader worker it is
    torch's worker seed (base seed drawn from the seeded main generator at each epoch, + worker id),
    so the draws are reproducible for a manual seed and sampler order, and differ between workers
    and epochs. The generator is re-created whenever the process seed changes (fork, new epoch).
    ``salt`` (e.g. the degradation's ``seed``) gives an independent stream for the same seed.
    """

    def __init__(self, salt=None):
        self._salt = [] if salt is None else [salt]
        self._seed, self._rng = None, None

    def __call__(self):
        seed = torch.initial_seed()
        if self._rng is None or seed != self._seed:
            self._seed, self._rng = seed, np.random.default_rng([seed, *self._salt])
        return self._rng


def to_sample(gt, lq, gt_path, lq_path, level, level_name):
    """The dict BasicSR's models read: RGB float [0, 1] CHW tensors plus paths and the level."""
    gt, lq = img2tensor([gt.astype(np.float32) / 255.0, lq.astype(np.float32) / 255.0], bgr2rgb=False)
    return {'lq': lq, 'gt': gt, 'lq_path': lq_path, 'gt_path': gt_path,
            'level': int(level), 'level_name': level_name}
