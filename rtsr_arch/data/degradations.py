"""HR -> LR degradations of the real-time SR challenges, described by a YAML mapping.

- NTIRE 2023 RTSR (x2, x3; ``eduardzamfir/NTIRE23-RTSR:demo/prepare_data.py``, same recipe in
  ``Ganzooo/LRSRN:source/datas/prepare_data.py``): centre-crop the HR to a multiple of the scale,
  PIL ``BICUBIC`` downscale, JPEG quality 90 with Pillow's defaults (4:2:0).
- AIS 2024 RTSR (x4; ``rlghksdbs/CASR`` ``png2avif.py``): ffmpeg Lanczos a = 5 into yuv420p, one
  AV1 key frame from libsvtav1 at ``-qp`` 31/39/47/55/63, ``-preset 5``, stored as AVIF.

:class:`Degradation` generalises both (kernel, codec, a list / weighted list / range of levels);
the kernels live in :mod:`rtsr_arch.data.resize`, the codecs in :mod:`rtsr_arch.data.codecs`.
Every function takes and returns uint8 RGB arrays (H, W, 3).
"""
import numpy as np

from rtsr_arch.data.codecs import (QP_RANGE, QUALITY_RANGE, CodecUnavailableError, avif_encode, decode, jpeg_encode,
                                   png_encode, require_av)
from rtsr_arch.data.resize import KERNELS, bicubic_downscale, downscale, lanczos, to_yuv420p

__all__ = ['crop_to_multiple', 'bicubic_downscale', 'jpeg_roundtrip', 'ntire23_lr', 'Degradation', 'PRESETS',
           'CodecUnavailableError']


def _check_rgb_uint8(img, name='img'):
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'{name}: expected a uint8 RGB array (H, W, 3); got {img.dtype} {img.shape}')
    return img


def crop_to_multiple(img, scale):
    """Centre crop so that height and width are multiples of ``scale`` (as the challenge's
    ``center_crop``: the excess is split, the extra pixel of an odd excess going to the bottom/right)."""
    img = _check_rgb_uint8(img)
    h, w = img.shape[:2]
    nh, nw = h - h % scale, w - w % scale
    if nh == 0 or nw == 0:
        raise ValueError(f'image {h}x{w} is smaller than the scale {scale}')
    top, left = (h - nh) // 2, (w - nw) // 2
    return img[top:top + nh, left:left + nw]


def jpeg_roundtrip(img, quality=90):
    """Encode as JPEG in memory with Pillow's defaults (4:2:0) and decode back to RGB uint8: the
    pixels a model reads from the challenge's LR files."""
    return decode(jpeg_encode(_check_rgb_uint8(img), quality))


def ntire23_lr(hr, scale, quality=90):
    """NTIRE 2023 RTSR degradation: returns ``(hr_cropped, lr)`` where ``hr_cropped`` is ``hr``
    centre-cropped to a multiple of ``scale`` and ``lr`` its bicubic downscale after a JPEG
    round trip at ``quality``; ``lr.shape[:2] * scale == hr_cropped.shape[:2]``."""
    hr = crop_to_multiple(hr, scale)
    return hr, jpeg_roundtrip(bicubic_downscale(hr, scale), quality)


# Challenge presets; other keys of the option mapping override them.
PRESETS = {
    'ntire23': {'resize': 'bicubic', 'codec': 'jpeg', 'levels': [90]},  # scale 2 or 3 must be given
    'ais24': {'scale': 4, 'resize': 'lanczos5', 'codec': 'avif', 'levels': [31, 39, 47, 55, 63]},
}
CODECS = {'jpeg': ('JPEG quality', QUALITY_RANGE, 'q', '.jpg'),
          'avif': ('libsvtav1 qp', QP_RANGE, 'qp', '.avif'),
          'none': ('(no levels)', (0, 0), 'clean', '.png')}
_KEYS = ('preset_name', 'scale', 'resize', 'codec', 'levels', 'weights', 'preset', 'seed')


def _bad(key, value, expected):
    return ValueError(f'degradation option {key!r}: got {value!r}; expected {expected}')


def _int(key, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise _bad(key, value, f'an int in [{low}, {high}]')
    return int(value)


class Degradation:
    """HR uint8 RGB (H, W, 3) -> LR uint8 RGB, described by a dict (a YAML mapping).

    Keys: ``scale`` (int), ``resize`` (``bicubic`` | ``lanczos3`` | ``lanczos5`` | ``area``, see
    :mod:`rtsr_arch.data.resize`), ``codec`` (``jpeg`` | ``avif`` | ``none``), ``levels`` (JPEG
    qualities or AVIF qps: a list of ints or ``{'low': a, 'high': b}``, inclusive), ``weights``
    (optional, one per listed level), ``preset`` (SVT-AV1 preset, avif only, default 5), ``seed``
    (optional int, kept for the datasets' samplers). ``preset_name: ntire23`` (with ``scale`` 2 or
    3) or ``preset_name: ais24`` fill in the challenge settings.
    """

    def __init__(self, scale, resize, codec, levels=None, weights=None, preset=None, seed=None):
        self.scale = _int('scale', scale, 1, 64)
        if resize not in KERNELS:
            raise _bad('resize', resize, 'one of ' + ', '.join(KERNELS))
        if codec not in CODECS:
            raise _bad('codec', codec, 'one of ' + ', '.join(CODECS))
        self.resize_kernel, self.codec = resize, codec
        what, (low, high), self._prefix, self.file_suffix = CODECS[codec]
        if codec == 'none':
            if levels is not None or weights is not None:
                raise _bad('levels' if levels is not None else 'weights', levels if levels is not None else weights,
                           "nothing for codec 'none'")
            levels = [0]
        if isinstance(levels, dict):
            if set(levels) != {'low', 'high'} or weights is not None:
                raise _bad('levels', levels, "{'low': a, 'high': b} (without weights)")
            a, b = (_int('levels', levels[k], low, high) for k in ('low', 'high'))
            if a > b:
                raise _bad('levels', levels, 'low <= high')
            levels = list(range(a, b + 1))
        if not isinstance(levels, (list, tuple)) or not levels:
            raise _bad('levels', levels, f"a non-empty list of {what}s or {{'low': a, 'high': b}}")
        self.levels = [_int('levels', v, low, high) for v in levels]
        if weights is not None:
            ok = isinstance(weights, (list, tuple)) and len(weights) == len(self.levels)
            if not ok or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in weights) \
                    or sum(weights) <= 0:
                raise _bad('weights', weights, f'{len(self.levels)} non-negative numbers (one per level), not all 0')
            weights = [float(v) for v in weights]
        self.weights = weights
        if preset is not None and codec != 'avif':
            raise _bad('preset', preset, "no SVT-AV1 preset unless codec is 'avif'")
        self.preset = _int('preset', 5 if preset is None else preset, 0, 13) if codec == 'avif' else None
        self.seed = None if seed is None else _int('seed', seed, 0, 2**63 - 1)
        if codec == 'avif' or resize.startswith('lanczos'):
            require_av()

    @classmethod
    def from_opt(cls, opt):
        """Build from an option mapping (see the class docstring); unknown keys or bad values raise a
        one-line ``ValueError`` naming the key."""
        if not isinstance(opt, dict):
            raise _bad('degradation', opt, 'a mapping')
        unknown = sorted(set(opt) - set(_KEYS), key=str)
        if unknown:
            raise _bad(unknown[0], opt[unknown[0]], 'a key among ' + ', '.join(_KEYS))
        opt = dict(opt)
        name = opt.pop('preset_name', None)
        if name is not None:
            if name not in PRESETS:
                raise _bad('preset_name', name, 'one of ' + ', '.join(PRESETS))
            if name == 'ntire23' and opt.get('scale') not in (2, 3):
                raise _bad('scale', opt.get('scale'), "2 or 3 with preset_name 'ntire23'")
            opt = {**PRESETS[name], **opt}
        for key in ('scale', 'resize', 'codec'):
            if key not in opt:
                raise _bad(key, None, 'a value (the key is required without preset_name)')
        return cls(**opt)

    @property
    def opt(self):
        """The resolved settings as a plain dict (``Degradation.from_opt(d.opt)`` rebuilds ``d``)."""
        opt = {'scale': self.scale, 'resize': self.resize_kernel, 'codec': self.codec}
        if self.codec != 'none':
            opt['levels'] = list(self.levels)
        for key in ('weights', 'preset', 'seed'):
            if getattr(self, key) is not None:
                opt[key] = getattr(self, key)
        return opt

    def __repr__(self):
        return f'Degradation({self.opt})'

    def sample_level(self, rng):
        """A level drawn from ``rng`` (``numpy.random.Generator``): uniform, or by ``weights``."""
        p = None if self.weights is None else np.asarray(self.weights) / sum(self.weights)
        return int(rng.choice(self.levels, p=p))

    def level_name(self, level):
        """Folder / validation-set name of a level: ``q90``, ``qp31``; ``clean`` for codec 'none'."""
        return self._prefix if self.codec == 'none' else f'{self._prefix}{level}'

    def _check_hr(self, hr):
        hr = _check_rgb_uint8(hr, 'hr')
        if hr.shape[0] % self.scale or hr.shape[1] % self.scale:
            raise ValueError(f'hr: {hr.shape[0]}x{hr.shape[1]} is not a multiple of the scale {self.scale}; '
                             'centre-crop it first (crop_to_multiple)')
        return hr

    def resize(self, hr):
        """The clean LR (no codec): ``hr`` downscaled by ``scale`` with the resize kernel."""
        return downscale(self._check_hr(hr), self.scale, self.resize_kernel)

    def encode(self, hr, level):
        """The compressed LR file bytes (JPEG or AVIF; PNG for codec 'none')."""
        if self.codec == 'avif':
            hr = self._check_hr(hr)
            if self.resize_kernel.startswith('lanczos'):  # one swscale pass, as the challenge's -vf
                yuv = lanczos(hr, self.scale, a=int(self.resize_kernel[-1]), pix_fmt='yuv420p')
            else:
                yuv = to_yuv420p(downscale(hr, self.scale, self.resize_kernel))
            return avif_encode(yuv, level, self.preset)
        lr = self.resize(hr)
        return jpeg_encode(lr, level) if self.codec == 'jpeg' else png_encode(lr)

    decode = staticmethod(decode)

    def __call__(self, hr, level):
        """LR uint8 RGB (H / scale, W / scale, 3): the decoded :meth:`encode`; deterministic."""
        return self.resize(hr) if self.codec == 'none' else self.decode(self.encode(hr, level))
