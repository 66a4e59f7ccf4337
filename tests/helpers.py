"""Shared test helpers (``from helpers import photo, randomize``): real photographs as input tensors
(single crops, batches, HR crops with their bicubic LR), fully random network parameters, loading
scripts that are not in a package; the official-checkpoint fixtures (skip when absent); the
comparisons the architecture tests repeat (PSNR and its gain over bicubic, official weights against
an independent reference, half precision, ONNX at given sizes, training recipes). ``rtsr_arch`` is
imported inside the functions that use it, never at import time."""
import contextlib
import functools
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ['photo', 'photos', 'lr_photos', 'tall_photo', 'randomize', 'load_module', 'load_photo', 'PHOTOS', 'ROOT',
           'SIZES_BY_16', 'OFFICIAL_FIXTURES', 'official_fixture', 'load_official', 'n_params', 'state_layout',
           'conv_shapes', 'esa_light_shapes', 'module_names', 'psnr', 'bicubic', 'gain_over_bicubic', 'max_rel', 'reference_errors',
           'check_official_weights', 'check_official_beats_bicubic', 'check_param_key_on_request', 'check_reference_and_fusion', 'check_official_reference',
           'check_half_precision', 'output_peaks', 'check_onnx_at', 'load_recipe', 'check_recipe_network']

ROOT = Path(__file__).resolve().parents[1]

# scikit-image sample photos that ship with the package (no download needed)
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'immunohistochemistry')
# photograph crops for networks that pool by up to 16: a size divisible by 16, two that are not (114
# rows: where onnxruntime's own nearest Resize picks other source rows than PyTorch's), the minimum 16
SIZES_BY_16 = (('astronaut', 32, 48), ('coffee', 45, 67), ('chelsea', 16, 16), ('rocket', 114, 20))
# the official-checkpoint fixtures: third-party files outside the repository (the folder lists the
# source and licence of each); tests that need one skip when it is absent
OFFICIAL_FIXTURES = Path(os.environ.get('RTSR_OFFICIAL_FIXTURES') or ROOT.parent / 'shared/fixtures/official')


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
    """Import a script that is not in a package (``tools/*.py``, ``tests/archs/reference.py``)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- official fixtures

def official_fixture(name):
    """The path of the official fixture ``name``; skips the test when it is absent."""
    path = OFFICIAL_FIXTURES / name
    if not path.is_file():
        pytest.skip(f'official fixture {path} not found (set RTSR_OFFICIAL_FIXTURES)')
    return path


def load_official(name, dtype=None):
    """The official fixture ``name`` read by ``torch.load(weights_only=True)`` onto the CPU (skips when
    absent); ``dtype``: the floating tensors of a state dict cast to it."""
    obj = torch.load(official_fixture(name), map_location='cpu', weights_only=True)
    if dtype is None:
        return obj
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in obj.items()}


# ----------------------------------------------------------------------------- networks and state dicts

def n_params(model):
    return sum(p.numel() for p in model.parameters())  # parameters() de-duplicates shared tensors


def _state_dict(obj):
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def state_layout(obj):
    """``{key: shape}`` of a module's state dict (or of a state dict)."""
    return {k: tuple(v.shape) for k, v in _state_dict(obj).items()}


def conv_shapes(convs, prefix='', bias=True):
    """The expected layout of convs given as ``(name, weight shape)`` pairs: ``{prefix + name.weight:
    shape, prefix + name.bias: (shape[0],)}`` (no bias entries with ``bias=False``)."""
    layout = {}
    for name, shape in convs:
        layout[f'{prefix}{name}.weight'] = tuple(shape)
        if bias:
            layout[f'{prefix}{name}.bias'] = (shape[0],)
    return layout


def esa_light_shapes(c, f=16):
    """``(name, weight shape)`` of RLFN's light ESA on ``c`` channels with ``f`` inner channels (the
    official ``ESA(f, c, nn.Conv2d)`` of RLFN, DIPNet, PFDN, RepRFN, DLFAN), for :func:`conv_shapes`."""
    return [('conv1', (f, c, 1, 1)), ('conv_f', (f, f, 1, 1)), ('conv2', (f, f, 3, 3)), ('conv3', (f, f, 3, 3)),
            ('conv4', (c, f, 1, 1))]


def module_names(obj):
    """The key prefixes (``'head.0'`` of ``'head.0.weight'``) of a module's state dict (or a state dict)."""
    return {k.rsplit('.', 1)[0] for k in _state_dict(obj)}


# ----------------------------------------------------------------------------- photographs and PSNR

def photos(h, w, dtype=torch.float32, names=PHOTOS[:3]):
    """Centred ``h`` x ``w`` crops of the named photographs, one batch."""
    return torch.cat([photo(name, h, w, dtype=dtype) for name in names])


def lr_photos(h=32, w=48, scale=4, dtype=torch.float32, names=PHOTOS[:2]):
    """HR crops (``h * scale`` x ``w * scale``) of the named photographs and their antialiased bicubic
    LR (``h`` x ``w``, the NTIRE ESR degradation), computed in float64; ``(hr, lr)``."""
    hr = photos(h * scale, w * scale, torch.float64, names)
    lr = F.interpolate(hr, scale_factor=1 / scale, mode='bicubic', antialias=True, align_corners=False)
    return hr.to(dtype), lr.clamp(0, 1).to(dtype)


def tall_photo(w):
    """A 540 x ``w`` input (540 rows: the LR height of a 4K frame at x4): two 270-row crops stacked."""
    return torch.cat([photo('astronaut', 270, w), photo('coffee', 270, w)], dim=2)


def write_noise_pairs(root, counts, seed=0):
    """Tiny smooth random training data: for each ``split: count`` of ``counts``, ``count`` 32x32 HR
    PNGs (8x8 noise upscaled bicubically) in ``root/split/hr`` and their 16x16 bicubic LR in
    ``root/split/lr``, with the same names (BasicSR's ``PairedImageDataset``, ``filename_tmpl: '{}'``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        for i in range(count):
            hr = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((32, 32), Image.BICUBIC)
            for sub, img in (('hr', hr), ('lr', hr.resize((16, 16), Image.BICUBIC))):
                (Path(root) / split / sub).mkdir(parents=True, exist_ok=True)
                img.save(Path(root) / split / sub / f'{i}.png')
    return root


def write_photo_pairs(folder, crops, scale=2, lr_suffix='.png'):
    """``folder/hr/<name>.png`` and ``folder/lr/<name><lr_suffix>``: each uint8 photo crop of
    ``crops`` and its NTIRE 2023 LR (bicubic ÷scale, JPEG q90, decoded), as for a
    ``PairedImageDataset`` with ``filename_tmpl: '{}'``."""
    from PIL import Image

    from rtsr_arch.data.degradations import ntire23_lr

    for sub in ('hr', 'lr'):
        (Path(folder) / sub).mkdir(parents=True, exist_ok=True)
    for name, img in crops.items():
        hr, lr = ntire23_lr(img, scale)
        Image.fromarray(hr).save(Path(folder) / 'hr' / f'{name}.png')
        Image.fromarray(lr).save(Path(folder) / 'lr' / f'{name}{lr_suffix}')


def paired_datasets(root, gt_size, batch, enlarge=1, workers=0):
    """BasicSR ``datasets`` options over :func:`write_noise_pairs`' folders: a ``PairedImageDataset``
    training set ``tiny`` (flips and rotations, no prefetcher) and a validation set ``held_out``."""
    pair = {'type': 'PairedImageDataset', 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}
    return {'train': {**pair, 'name': 'tiny', 'dataroot_gt': str(Path(root) / 'train/hr'),
                      'dataroot_lq': str(Path(root) / 'train/lr'), 'gt_size': gt_size, 'use_hflip': True,
                      'use_rot': True, 'num_worker_per_gpu': workers, 'batch_size_per_gpu': batch,
                      'dataset_enlarge_ratio': enlarge, 'prefetch_mode': None},
            'val': {**pair, 'name': 'held_out', 'dataroot_gt': str(Path(root) / 'val/hr'),
                    'dataroot_lq': str(Path(root) / 'val/lr')}}


def psnr(y, hr, border=4, quantize=False):
    """PSNR (dB) of ``y`` against ``hr``, images in [0, 1]: ``y`` clamped to [0, 1], ``border`` pixels
    cropped on each side (the NTIRE evaluation), over the whole batch; ``quantize``: both rounded to
    8-bit levels first, as saved images."""
    y, hr = y.double().clamp(0, 1), hr.double()
    if quantize:
        y, hr = (y * 255).round() / 255, (hr * 255).round() / 255
    mse = ((y - hr)[..., border:-border, border:-border] ** 2).mean()
    return (-10 * torch.log10(mse)).item()


def bicubic(lr, scale=4):
    return F.interpolate(lr, scale_factor=scale, mode='bicubic', align_corners=False)


def gain_over_bicubic(sr, hr, lr, quantize=False):
    """PSNR of ``sr`` minus that of bicubic upscaling of ``lr``, both against ``hr``: a sanity check
    of the data range of official weights (they super-resolve only in the range they were trained in)."""
    return psnr(sr, hr, quantize=quantize) - psnr(bicubic(lr, hr.shape[-1] // lr.shape[-1]), hr, quantize=quantize)


def max_rel(y, ref, floor=0.0):
    """``max |y - ref| / max(floor, max |ref|)``, in float64."""
    y, ref = y.double(), ref.double()
    return float((y - ref).abs().max() / max(floor, float(ref.abs().max())))


# ----------------------------------------------------------------------------- repeated checks

def reference_errors(path, reference, sd, x, model=None, **load):
    """The checkpoint ``path`` through ``rtsr_arch.load_model`` (auto-detected; ``load``: its keywords)
    against ``reference(state dict, input)`` run on ``sd``: in float32 on ``x`` (``model``: the
    float32 network, if already loaded) and in float64 on ``x.double()``, each reference in the same
    precision as the network. Returns ``(y32, y64, max |diff| float32, max |diff| float64)``."""
    import rtsr_arch

    def cast(dtype):
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    with torch.no_grad():
        y32 = (model or rtsr_arch.load_model(path, **load))(x.float())
        err32 = (y32 - reference(cast(torch.float32), x.float())).abs().max().item()
        y64 = rtsr_arch.load_model(path, dtype=torch.float64, **load)(x.double())
        err64 = (y64 - reference(cast(torch.float64), x.double())).abs().max().item()
    print(f'{Path(path).name} {tuple(x.shape)}: max |ours - reference| float32 {err32:.2e}, float64 {err64:.2e}')
    return y32, y64, err32, err64


def check_official_weights(path, reference, sd, cls, params=None, network_opt=None, tol32=2e-6, min_gain=1.0):
    """The official checkpoint ``path`` through ``rtsr_arch.load_model`` (auto-detected, no architecture
    given) builds a ``cls`` (with ``params`` parameters and exactly ``network_opt``, when given) and,
    on the bicubic LR of two photographs (:func:`lr_photos`), reproduces ``reference(sd, input)``:
    float32 within ``tol32``, float64 within 1e-12 (:func:`reference_errors`); its float64 output beats
    bicubic upscaling by more than ``min_gain`` dB. Returns the float32 network."""
    import rtsr_arch

    model = rtsr_arch.load_model(path)
    assert type(model) is cls, type(model).__name__
    assert params is None or n_params(model) == params, n_params(model)
    assert network_opt is None or model.network_opt == network_opt, model.network_opt
    hr, lr = lr_photos()
    y, y64, err32, err64 = reference_errors(path, reference, sd, lr, model=model)
    gain = gain_over_bicubic(y64, hr, lr)
    print(f'{Path(path).name}: PSNR {psnr(y64, hr):.2f} dB ({gain:+.2f} dB over bicubic)')
    s = model.upscale
    assert y.shape == (*lr.shape[:2], s * lr.shape[2], s * lr.shape[3])
    assert err32 <= tol32 and err64 <= 1e-12, (err32, err64)
    assert gain > min_gain, gain
    return model


def check_reference_and_fusion(model, reference, inputs, gone, deploy_reference=None):
    """A float64 training-form ``model`` (random weights) equals ``reference(its state dict, x)`` on
    each of ``inputs`` to 1e-12 of the output scale (at least 1); its reparameterized state dict has
    no key containing any of ``gone`` and, run through ``deploy_reference`` (default ``reference``: the
    official deploy forward), gives the same output on every pixel to 1e-10 of that scale."""
    import copy

    import rtsr_arch

    deploy_reference = deploy_reference or reference
    fused = rtsr_arch.reparameterize(copy.deepcopy(model)).state_dict()
    assert not any(word in k for k in fused for word in gone), [k for k in fused if any(w in k for w in gone)]
    for x in inputs:
        with torch.no_grad():
            y = model(x)
            scale = max(1.0, y.abs().max().item())
            assert (y - reference(model.state_dict(), x)).abs().max() <= 1e-12 * scale, tuple(x.shape)
            assert (deploy_reference(fused, x) - y).abs().max() <= 1e-10 * scale, tuple(x.shape)


def check_official_reference(path, sd, reference, x64, near=(-0.3, 1.3), **load):
    """The official weights ``sd`` (what ``rtsr_arch.load_model(path, **load)`` must load, tensor for
    tensor) in float32 and float64 on the float64 photograph ``x64``, against ``reference(sd, input)``:
    float64 within 1e-12 (absolute); float32 within 1e-5 of the float64 reference's peak, and equal
    to (or within 1e-6 relative of) the reference run in float32; the output near [0, 1] (``near``),
    as a trained network's."""
    import rtsr_arch

    net32 = rtsr_arch.load_model(path, **load)
    net64 = rtsr_arch.load_model(path, dtype=torch.float64, **load)
    assert all(torch.equal(v, sd[k]) for k, v in net32.state_dict().items())
    with torch.no_grad():
        y32, y64 = net32(x64.float()), net64(x64)
        ref64, ref32 = reference(sd, x64), reference(sd, x64.float())
    d32, d64 = max_rel(y32, ref64), float((y64 - ref64).abs().max())
    print(f'{Path(path).name} {tuple(x64.shape)}: float32 max |diff| / peak {d32:.2e} (reference in float32: '
          f'{float((y32 - ref32).abs().max()):.2e}), float64 max |diff| {d64:.2e}')
    assert torch.equal(y32, ref32) or max_rel(y32, ref32) <= 1e-6
    assert d32 <= 1e-5 and d64 <= 1e-12
    assert near[0] <= float(y64.min()) and float(y64.max()) <= near[1]


def check_official_beats_bicubic(path, label, min_gain=1.0):
    """Sanity of the data range of official weights: a 128x192 astronaut crop downscaled x4
    (antialiased bicubic) and restored by the checkpoint ``path`` beats bicubic upsampling by more
    than ``min_gain`` dB (PSNR, RGB, border 4, 8-bit, as the NTIRE 2023 ESR evaluation)."""
    import rtsr_arch

    net = rtsr_arch.load_model(path)
    hr, lr = lr_photos(names=('astronaut',))
    with torch.no_grad():
        gain = gain_over_bicubic(net(lr), hr, lr, quantize=True)
    print(f'PSNR {label} {gain:+.2f} dB over bicubic')
    assert gain > min_gain


def check_param_key_on_request(path, reference, param_key='params_ema', min_diff=1e-5):
    """``load_model(path, param_key=...)`` loads exactly ``ckpt[param_key]``; its float64 output on a
    photo is ``reference`` on those weights and differs from the default key's output by more than
    ``min_diff`` (so the key really chose other weights)."""
    import rtsr_arch

    from rtsr_arch.utils.checkpoint import load_checkpoint

    weights = load_checkpoint(path)[param_key]
    chosen = rtsr_arch.load_model(path, param_key=param_key, dtype=torch.float64)
    default = rtsr_arch.load_model(path, dtype=torch.float64)
    assert all(torch.equal(v, weights[k]) for k, v in chosen.state_dict().items())
    x = photo('coffee', 45, 67, dtype=torch.float64)
    with torch.no_grad():
        y_chosen, y = chosen(x), default(x)
    assert (y_chosen - reference(weights, x)).abs().max() <= 1e-12
    assert (y_chosen - y).abs().max() > min_diff


def check_half_precision(path, x, dtype, tol, relative=False, **load):
    """The checkpoint ``path`` loaded by ``rtsr_arch.load_model`` in float32 and in ``dtype``
    (float16, bfloat16) and run on ``x``: the ``dtype`` output is finite and within ``tol`` of the
    float32 one (``relative``: of its peak). Returns the max |difference|."""
    import rtsr_arch

    with torch.no_grad():
        y32 = rtsr_arch.load_model(path, **load)(x)
        y16 = rtsr_arch.load_model(path, dtype=dtype, **load)(x.to(dtype)).float()
    diff = (y16 - y32).abs().max().item()
    scale = y32.abs().max().item() if relative else 1.0
    print(f'{Path(path).name} {dtype} on {tuple(x.shape)}: max |diff| vs float32 {diff:.2e}'
          + (f' (output peak {scale:.3g})' if relative else ''))
    assert torch.isfinite(y16).all() and diff <= tol * scale, (dtype, diff)
    return diff


@contextlib.contextmanager
def output_peaks(modules):
    """Collects ``max |output|`` of every call of ``modules`` (forward hooks, removed on exit) into the
    list it yields."""
    peaks = []
    handles = [m.register_forward_hook(lambda mod, inputs, out: peaks.append(out.abs().max().item())) for m in modules]
    try:
        yield peaks
    finally:
        for handle in handles:
            handle.remove()


def check_onnx_at(net, path, images, rtol=1e-4):
    """``rtsr_arch.export.export_onnx`` of ``net`` to ``path`` (its own check included), then the graph
    run by onnxruntime on each of ``images``: output dims carry the scale, every image is checked at
    its own size, and each output is within ``rtol`` of PyTorch's peak. Returns the checks."""
    from rtsr_arch.export import check_onnx, export_onnx

    report = export_onnx(net, path)
    s = net.upscale
    assert tuple(report.output_dims[-2:]) == (f'{s}*height', f'{s}*width'), report.output_dims
    checks = check_onnx(path, net, images=images)
    for c in checks:
        print(report.exporter, c)
    assert [tuple(c.input_shape[-2:]) for c in checks] == [tuple(x.shape[-2:]) for x in images]
    assert max(c.max_abs_diff / c.peak for c in checks) <= rtol
    return checks


def load_recipe(arch, stem):
    """The training options ``options/train/<arch>/<stem>.yml``, loaded and checked."""
    from rtsr_arch.utils.options import load_options

    return load_options(ROOT / 'options/train' / arch / f'{stem}.yml')


def check_recipe_network(network_opt, cls, params=None, deploy_params=None):
    """A recipe's ``network_g`` builds a ``cls`` with ``params`` parameters (when given; and
    ``deploy_params`` once reparameterized, in place); returns the network."""
    import rtsr_arch
    from rtsr_arch.utils.options import build_network

    net = build_network(network_opt)
    assert type(net) is cls, type(net).__name__
    assert params is None or n_params(net) == params, n_params(net)
    if deploy_params is not None:
        assert n_params(rtsr_arch.reparameterize(net)) == deploy_params
    return net
