"""Shared test helpers (``from helpers import photo, randomize``): real photos as input tensors,
fully random network parameters, loading scripts that are not in a package."""
import functools
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ['photo', 'randomize', 'load_module', 'load_photo', 'PHOTOS', 'ROOT']

ROOT = Path(__file__).resolve().parents[1]

# scikit-image sample photos that ship with the package (no download needed)
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'immunohistochemistry')


@functools.lru_cache(maxsize=None)
def load_photo(name):
    """The scikit-image sample photo ``name`` as a read-only uint8 RGB array."""
    import skimage.data

    if name not in PHOTOS:
        raise ValueError(f"unknown photo '{name}'; expected one of: {', '.join(PHOTOS)}")
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:  # grayscale (camera): replicate to RGB
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    img.setflags(write=False)
    return img


def photo(name='astronaut', h=64, w=64, *, top=None, left=None, dtype=torch.float32, device='cpu', batch=1):
    """A float [0, 1] NCHW tensor: an ``h`` x ``w`` crop of the scikit-image sample photo ``name``.

    The crop is centred unless ``top`` / ``left`` are given; ``batch`` > 1 stacks crops shifted by
    a few pixels so the batch entries differ.
    """
    img = load_photo(name)
    height, width = img.shape[:2]
    shift = 3 * (batch - 1)
    if h + shift > height or w + shift > width:
        raise ValueError(f"photo '{name}' is {height}x{width}; cannot crop {h}x{w} (batch {batch})")
    top = (height - h - shift) // 2 if top is None else top
    left = (width - w - shift) // 2 if left is None else left
    crops = [img[top + 3 * i:top + 3 * i + h, left + 3 * i:left + 3 * i + w] for i in range(batch)]
    x = torch.from_numpy(np.stack(crops).astype(np.float64) / 255.0).permute(0, 3, 1, 2)
    return x.to(device=device, dtype=dtype).contiguous()


@torch.no_grad()
def randomize(model: nn.Module, seed=0, std=0.5, fan_in=False):
    """Set every parameter of ``model`` to random values; returns ``model``.

    Every parameter (conv/linear weights, biases, PReLU slopes, LayerNorm and BatchNorm affine,
    scalar gates, ...) is drawn from N(0, std^2); BatchNorm running means from N(0, std^2) and
    running variances log-normally around 1 (always positive), so no zero/one initialization can
    hide a bug. With ``fan_in=True`` tensors with two or more dimensions (kernels) use
    std / sqrt(fan_in) instead, which keeps activations O(1) through deep networks (float64
    comparisons can then be absolute). Buffers other than BatchNorm statistics (fixed masks,
    blur kernels) are left alone: they are structure, not parameters. Deterministic for a seed.
    """
    gen = torch.Generator().manual_seed(seed)

    def draw(t, scale):
        values = torch.randn(t.shape, generator=gen, dtype=torch.float64) * scale
        t.copy_(values.to(dtype=t.dtype, device=t.device))

    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        scale = std
        if fan_in and p.dim() >= 2:
            scale = std / math.sqrt(max(1, p[0].numel()))
        draw(p, scale)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            draw(module.running_mean, std)
            var = torch.exp(torch.randn(module.running_var.shape, generator=gen, dtype=torch.float64) * 0.5)
            module.running_var.copy_(var.to(module.running_var))
    return model


def load_module(path):
    """Import a script that is not in a package (``tools/*.py``, ``tests/official_reference.py``)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
