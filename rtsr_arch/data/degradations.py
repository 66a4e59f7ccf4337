"""LR generation of the NTIRE 2023 Real-Time SR challenge (x2, x3; JPEG).

The protocol (``eduardzamfir/NTIRE23-RTSR:demo/prepare_data.py``, and the same recipe in
``Ganzooo/LRSRN:source/datas/prepare_data.py``): centre-crop the HR image so its size divides by
the scale, downscale with PIL's antialiased ``BICUBIC``, store as JPEG quality 90 with Pillow's
defaults (4:2:0 chroma subsampling). Every function takes and returns uint8 RGB arrays (H, W, 3).
"""
import io

import numpy as np
from PIL import Image

__all__ = ['crop_to_multiple', 'bicubic_downscale', 'jpeg_roundtrip', 'ntire23_lr']


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


def bicubic_downscale(img, scale):
    """PIL ``Image.Resampling.BICUBIC`` resize to (W // scale, H // scale); PIL antialiases when
    downscaling (cv2's bicubic does not, and gives different LR)."""
    img = _check_rgb_uint8(img)
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((w // scale, h // scale), Image.Resampling.BICUBIC))


def jpeg_roundtrip(img, quality=90):
    """Encode as JPEG in memory with Pillow's defaults (4:2:0 at quality 90) and decode back to
    RGB uint8: the pixels a model reads from the challenge's LR files."""
    img = _check_rgb_uint8(img)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, 'JPEG', quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert('RGB'))


def ntire23_lr(hr, scale, quality=90):
    """NTIRE 2023 RTSR degradation: returns ``(hr_cropped, lr)`` where ``hr_cropped`` is ``hr``
    centre-cropped to a multiple of ``scale`` and ``lr`` its bicubic downscale after a JPEG
    round trip at ``quality``; ``lr.shape[:2] * scale == hr_cropped.shape[:2]``."""
    hr = crop_to_multiple(hr, scale)
    return hr, jpeg_roundtrip(bicubic_downscale(hr, scale), quality)
