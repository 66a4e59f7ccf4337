"""The generic checks of the architecture contract, as functions: ``test_contract.py`` runs them on
every row of ``cases.py``, and its negative controls run them on deliberately broken inputs to
show that each can fail."""
import copy
import math
import zlib

import torch
from basicsr.utils.registry import ARCH_REGISTRY

import rtsr_arch
from helpers import n_params, photo, randomize
from rtsr_arch.archs.official import IMPORTERS, find_importers
from rtsr_arch.archs.rep import ReparamBlock
from rtsr_arch.utils.checkpoint import load_state_dict_checked
from rtsr_arch.utils.options import build_network

TOL64 = 1e-10  # absolute, float64 (weights drawn with fan-in scaling keep outputs O(1))
TOL32 = 1e-5  # relative to max |y|, float32


def seed_of(*key):
    return zlib.crc32(repr(key).encode())


def rtsr_architectures():
    """{name: class} of every architecture this package registers in BasicSR's registry."""
    return {name: cls for name, cls in ARCH_REGISTRY if cls.__module__.startswith('rtsr_arch.')}


def missing_rows(registered, cases):
    """Registered architectures without a row, and rows naming no registered architecture."""
    return sorted(set(registered) - set(cases)), sorted(set(cases) - set(registered))


def build(name, kwargs, seed=0, dtype=torch.float64):
    """The architecture ``name`` with ``kwargs``, every parameter random (fan-in scaled), eval."""
    model = build_network({'type': name, **kwargs})
    return randomize(model, seed=seed_of(name, kwargs, seed), std=1.0, fan_in=True).to(dtype).eval()


def smallest_size(model):
    m = model.input_multiple
    return max(m, math.ceil(model.min_input_size / m) * m)


def valid_sizes(model):
    """Input sizes down to the smallest valid one, with odd multiples of the input multiple."""
    m, s = model.input_multiple, smallest_size(model)
    sizes = [(s, s), (s, 3 * m), (5 * m, s), (7 * m, 9 * m)]
    return [(h, w) for h, w in sizes if min(h, w) >= s]


def photo_input(model, h, w, dtype, batch=1):
    x = photo('astronaut', h, w, dtype=dtype, batch=batch)
    channels = model.network_opt.get('num_in_ch', 3)
    return x.repeat(1, (channels + 2) // 3, 1, 1)[:, :channels]


def check_fused(model, x):
    """Reparameterize a copy of ``model`` and compare on ``x``, every pixel: float64 max |diff| <=
    1e-10, float32 <= 1e-5 of the output scale. Returns ``(y, fused)``."""
    fused = rtsr_arch.reparameterize(copy.deepcopy(model))
    assert all(m.deploy for m in fused.modules() if isinstance(m, ReparamBlock))
    assert fused.network_opt['deploy'] is True
    with torch.no_grad():
        y, y_fused = model(x), fused(x)
    assert y.shape == y_fused.shape == (*x.shape[:2], x.shape[2] * model.upscale, x.shape[3] * model.upscale)
    err = (y - y_fused).abs().max().item()
    if x.dtype == torch.float64:  # absolute for outputs up to 1; relative beyond (unnormalized deep nets)
        assert err <= TOL64 * max(1.0, y.abs().max().item()), f'float64: fused vs training max |diff| {err:.3g}'
    else:
        scale = y.abs().max().item()
        assert err <= TOL32 * scale, f'float32: fused vs training max |diff| {err:.3g} vs scale {scale:.3g}'
    return y, fused


def check_deploy_build(fused, x):
    """The network built from the fused network's options (``deploy: true``) has the same keys and
    shapes, loads the fused state dict strictly and computes the same output, bit for bit."""
    built = build_network(fused.network_opt).to(x.dtype).eval()
    sd = fused.state_dict()
    assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in sd.items()]
    load_state_dict_checked(built, sd, 'fused')
    with torch.no_grad():
        assert torch.equal(built(x), fused(x))
    assert rtsr_arch.reparameterize(built) is built
    assert built.state_dict().keys() == sd.keys()


def check_param_counts(name, paper):
    """The published deploy (and training) parameter counts: of the deploy build, of the
    reparameterized training form, and of the training form."""
    train = build_network({'type': name, **paper.kwargs})
    deploy = build_network({'type': name, **paper.kwargs, 'deploy': True})
    if paper.train_params is not None:
        assert n_params(train) == paper.train_params, f'{name} {paper.kwargs}: training form {n_params(train):,}'
    assert n_params(deploy) == paper.deploy_params, f'{name} {paper.kwargs}: deploy build {n_params(deploy):,}'
    fused = rtsr_arch.reparameterize(train)
    assert n_params(fused) == paper.deploy_params, f'{name} {paper.kwargs}: reparameterized {n_params(fused):,}'


def check_importer_round_trip(model, x):
    """The model's own state dict (official key layout) is detected by exactly its importer, and
    the importer recovers every constructor keyword except those it declares assumed; given those
    as overrides, the rebuilt network loads strictly and computes the same output."""
    name = type(model).__name__
    matches = find_importers(model.state_dict())
    assert [importer.arch for importer, _ in matches] == [name], [importer.arch for importer, _ in matches]
    importer, sd = matches[0]
    assumed = set(importer.convert(sd, {}).assumed)
    result = importer.convert(sd, {k: model.network_opt[k] for k in assumed})
    rebuilt = build_network(result.network_opt).to(x.dtype).eval()
    load_state_dict_checked(rebuilt, result.state_dict, f'{name} round trip')
    differ = {k: (v, rebuilt.network_opt.get(k)) for k, v in model.network_opt.items()
              if k != type(model).preset_key and rebuilt.network_opt.get(k) != v}
    assert not differ, f'{name}: the importer did not recover {differ}'
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def has_importer(name):
    return name in IMPORTERS


def measured_receptive_radius(model):
    """Input pixels on each side that an output pixel depends on, measured: the support of the
    gradient of single output pixels (one per phase of the input multiple) w.r.t. the input."""
    m = model.input_multiple
    radius = model.receptive_radius
    size = math.ceil((2 * radius + 4 * m + 2) / m) * m
    x = photo_input(model, size, size, torch.float64).requires_grad_(True)
    y = model(x)
    c = size // 2 // m * m
    found = 0
    for phase in range(m):
        p = c + phase
        grad, = torch.autograd.grad(y[0, :, p * model.upscale, p * model.upscale].sum(), x, retain_graph=True)
        rows, cols = torch.nonzero(grad[0].abs().sum(0), as_tuple=True)
        found = max(found, int((rows - p).abs().max()), int((cols - p).abs().max()))
        assert rows.min() > 0 and cols.min() > 0 and rows.max() < size - 1 and cols.max() < size - 1, \
            'the measured support reaches the border: input too small'
    return found
