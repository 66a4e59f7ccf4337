"""rtsr_arch.inference: padding to the declared input multiple, exact tiling, the uint8 path,
precision, and RTSRModel.test on odd sizes; on real photographs with random-weight networks.

References for what is checked:
- RT4KSR (Zamfir et al., CVPRW 2023; eduardzamfir/RT4KSR): PixelUnshuffle(2) first, so inputs
  must have even sizes (``input_multiple = 2``); 3x3 convs at half resolution.
- LRSRN (Gankhuyag et al., CVPRW 2023; Ganzooo/LRSRN): one 3x3 conv per RepConv block.
- Tiled inference with context pixels cropped away after the network is the scheme of
  SwinIR's / Real-ESRGAN's ``tile`` testing (JingyunLiang/SwinIR ``main_test_swinir.py``,
  xinntao/Real-ESRGAN ``realesrgan/utils.py``); here the overlap comes from the declared
  receptive radius (measured with autograd for every architecture in tests/archs/test_contract.py).

Padding and tiling exactness for every registered architecture are in tests/archs/test_contract.py;
this file tests the mechanisms.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rtsr_arch  # noqa: F401  (registers the architectures before basicsr's registries are used)
from helpers import load_photo, photo, randomize
from rtsr_arch.archs.contract import SRArch
from rtsr_arch.archs.rep import reparameterize
from rtsr_arch.inference import padded_size, tile_spans, upscale_image, upscale_tensor
from rtsr_arch.utils.options import build_network

pytestmark = pytest.mark.usefixtures('torch_single_thread')

RT4KSR_SMALL = {'type': 'RT4KSR', 'num_feat': 8, 'num_block': 1}
LRSRN_SMALL = {'type': 'LRSRN', 'num_feat': 8, 'num_block': 2, 'feature_size': 16}
NETS = {
    'lrsrn_x2': {**LRSRN_SMALL, 'upscale': 2},
    'lrsrn_x3': {**LRSRN_SMALL, 'upscale': 3, 'variant': 'blockv2'},
    'rt4ksr_x2': {**RT4KSR_SMALL, 'upscale': 2},
    'rt4ksr_x3': {**RT4KSR_SMALL, 'upscale': 3},
    'rt4ksr_x2_hf': {**RT4KSR_SMALL, 'upscale': 2, 'hf_gate': True},
}


def _net(opt, dtype=torch.float64, seed=0, deploy=False):
    """A random-weight network (every parameter drawn, fan-in scaled) in eval mode."""
    net = randomize(build_network(opt), seed=seed, std=0.5, fan_in=True)
    if deploy:
        reparameterize(net)
    return net.to(dtype).eval()


def _max_diff(a, b):
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------------- padding
def test_rt4ksr_rejects_odd_sizes_without_padding():
    """Control: RT4KSR itself cannot run a 37x51 input (PixelUnshuffle(2)), so the padding is needed."""
    net = _net(NETS['rt4ksr_x2'])
    with pytest.raises(RuntimeError):
        net(photo('coffee', 37, 51, dtype=torch.float64))


class _GlobalMean(SRArch):
    """A test network outside the registry: input multiple 3, minimum size 15 (asserted in forward,
    as an ESA pooling would fail), and a global mean (squeeze-excite-like): not tile-exact."""

    input_multiple = 3
    min_input_size = 15
    tile_exact = False

    def __init__(self, upscale: int = 2):
        super().__init__()
        self.upscale = upscale
        self.receptive_radius = None
        self.conv = torch.nn.Conv2d(3, 3 * upscale ** 2, 3, padding=1)
        self.shuffle = torch.nn.PixelShuffle(upscale)

    def forward(self, x):
        h, w = x.shape[-2:]
        assert h >= 15 and w >= 15 and h % 3 == 0 and w % 3 == 0, (h, w)
        y = self.conv(x)
        return self.shuffle(y + y.mean(dim=(2, 3), keepdim=True))


def test_min_input_size_and_multiple_padding():
    """A 7x20 crop through a network needing >= 15 and multiples of 3: padded to 15x21, cropped back,
    equal to the network on the edge-replicated 15x21 input."""
    assert padded_size(7, 20, 3, 15) == (15, 21)
    net = randomize(_GlobalMean(), seed=1, fan_in=True).double().eval()
    x = photo('chelsea', 7, 20, dtype=torch.float64)
    y = upscale_tensor(net, x)
    padded = np.pad(x[0].numpy(), ((0, 0), (0, 8), (0, 1)), mode='edge')
    with torch.no_grad():
        ref = net(torch.from_numpy(padded)[None])[..., :14, :40]
    assert y.shape == (1, 3, 14, 40) and _max_diff(y, ref) == 0


def test_not_tile_exact_network_warns_once():
    """Tiling a network with a global operation runs, warns once per network, and differs from the
    untiled output (which is why it warns)."""
    net = randomize(_GlobalMean(), seed=2, fan_in=True).double().eval()
    x = photo('rocket', 45, 60, dtype=torch.float64)
    with pytest.warns(UserWarning, match='not tile_exact'):
        tiled = upscale_tensor(net, x, tile=15)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        again = upscale_tensor(net, x, tile=15)
    assert tiled.shape == (1, 3, 90, 120) and _max_diff(tiled, again) == 0
    assert _max_diff(tiled, upscale_tensor(net, x)) > 1e-6


# ------------------------------------------------------------------------------------------- tiling
def test_tile_spans_cover_and_align():
    for size, tile, overlap, m in [(38, 13, 9, 2), (52, 4, 11, 2), (51, 9, 4, 3), (16, 16, 5, 1), (10, 3, 0, 1)]:
        spans = tile_spans(size, tile, overlap, m)
        cores = [(a, b) for _, _, a, b in spans]
        assert cores[0][0] == 0 and cores[-1][1] == size
        assert all(b == a2 for (_, b), (a2, _) in zip(cores, cores[1:]))  # a partition
        o = -(-overlap // m) * m
        for lo, hi, a, b in spans:
            assert lo % m == 0 and hi % m == 0 and a % m == 0
            assert lo == max(0, a - o) and hi == min(size, b + o)


@pytest.mark.parametrize('name, short_overlap', [('lrsrn_x2', 3), ('rt4ksr_x2', 6), ('rt4ksr_x2_hf', 8)])
def test_overlap_below_the_receptive_radius_differs(name, short_overlap):
    """Negative control: too little context changes the output near the seams (the exactness test
    can fail), with a warning. For RT4KSR (half-resolution convs, tile origins even) one half-
    resolution pixel too few (radius - 3) is the first overlap that must differ."""
    net = _net(NETS[name])
    assert short_overlap < net.receptive_radius
    x = photo('astronaut', 37, 51, dtype=torch.float64)
    ref = upscale_tensor(net, x)
    with pytest.warns(UserWarning, match='below the receptive radius'):
        tiled = upscale_tensor(net, x, tile=10, tile_overlap=short_overlap)
    assert _max_diff(tiled, ref) > 1e-6


# ------------------------------------------------------------------------------------------- uint8
@pytest.mark.parametrize('tile', [None, 12])
def test_upscale_image_uint8(tile):
    """uint8 HxWx3 in, uint8 (s*H)x(s*W)x3 out, equal to upscale_tensor on img/255 then clamp,
    x255, round; a batch NxHxWx3 gives the same frames."""
    net = _net(NETS['rt4ksr_x3'], dtype=torch.float32, deploy=True)
    img = np.ascontiguousarray(load_photo('immunohistochemistry')[100:133, 200:251])
    out = upscale_image(net, img, tile=tile)
    assert out.shape == (99, 153, 3) and out.dtype == np.uint8
    x = torch.from_numpy(img.astype(np.float32) / np.float32(255)).permute(2, 0, 1)[None]
    ref = upscale_tensor(net, x).clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).numpy()
    if tile is None:
        assert np.array_equal(out, ref)
    else:  # float32 tiles: at most one level off, and rarely
        diff = np.abs(out.astype(int) - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    flipped = np.ascontiguousarray(img[::-1])
    batch = upscale_image(net, np.stack([img, flipped]), tile=tile)
    assert batch.shape == (2, 99, 153, 3) and batch.dtype == np.uint8
    for frame, single in zip(batch, (out, upscale_image(net, flipped, tile=tile))):
        diff = np.abs(frame.astype(int) - single)  # float32 convs of a batch: rounding only
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_upscale_image_rejects_non_uint8():
    net = _net(NETS['lrsrn_x2'], dtype=torch.float32)
    with pytest.raises(ValueError, match='uint8'):
        upscale_image(net, load_photo('coffee')[:8, :8].astype(np.float32))


# ------------------------------------------------------------------------------------------- precision
def test_fp16_refused_for_a_network_that_is_not_fp16_safe():
    net = _net(NETS['lrsrn_x2'], dtype=torch.float32)
    net.fp16_safe = False  # as an architecture with an overflowing reduction would declare
    with pytest.raises(ValueError, match='not fp16_safe') as err:
        upscale_tensor(net, photo('coffee', 16, 16), dtype='fp16')
    assert '\n' not in str(err.value)
    assert next(net.parameters()).dtype == torch.float32  # refused before converting anything


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_runs_in_place_and_is_close(dtype):
    """bf16/fp16 convert the network in place (once) and stay close to float32 on a real photo; fp16 on
    a CPU torch without half kernels would be a one-line ValueError instead."""
    net = _net(NETS['rt4ksr_x2'], dtype=torch.float32, deploy=True)
    x = photo('astronaut', 33, 40)
    ref = upscale_tensor(net, x)
    try:
        y = upscale_tensor(net, x, dtype=dtype)
    except ValueError as exc:
        assert 'not supported' in str(exc) and '\n' not in str(exc)
        pytest.skip(f'{dtype} unsupported here: {exc}')
    assert next(net.parameters()).dtype == dtype
    assert y.dtype == torch.float32 and y.shape == ref.shape
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    assert _max_diff(y, ref) <= tol * ref.abs().max().item()


def test_bad_arguments_are_one_line_errors():
    net = _net(NETS['lrsrn_x2'], dtype=torch.float32)
    for kwargs, match in (({'tile': 0}, 'tile'), ({'tile': 8, 'tile_overlap': -1}, 'tile_overlap'),
                          ({'dtype': 'fp8'}, 'dtype')):
        with pytest.raises(ValueError, match=match):
            upscale_tensor(net, photo('coffee', 16, 16), **kwargs)
    with pytest.raises(ValueError, match='input channels'):
        upscale_tensor(net, torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match='float'):
        upscale_tensor(net, torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------- RTSRModel.test
def _rtsr_model(tmp_path, network_g, train=None):
    from basicsr.models import build_model

    opt = {'name': 'odd', 'model_type': 'RTSRModel', 'scale': network_g['upscale'], 'num_gpu': 0,
           'is_train': bool(train), 'dist': False, 'rank': 0, 'world_size': 1, 'network_g': dict(network_g),
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                    'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'states')},
           'val': {'deploy': False}}
    if train:
        opt['train'] = train
    return build_model(opt)


def test_rtsr_model_test_pads_odd_sizes(tmp_path):
    """RTSRModel.test on a 37x51 lq through RT4KSR x2 (rtsr-test / validation of a photograph whose
    size is odd) gives a 74x102 output equal to the network on the edge-padded input, cropped."""
    model = _rtsr_model(tmp_path, {**RT4KSR_SMALL, 'upscale': 2})
    randomize(model.net_g, seed=3, fan_in=True)
    lq = photo('rocket', 37, 51)
    model.feed_data({'lq': lq})
    model.test()
    assert model.output.shape == (1, 3, 74, 102)
    padded = F.pad(lq, (0, 1, 0, 1), mode='replicate')
    with torch.no_grad():
        ref = model.net_g(padded)[..., :74, :102]
    assert _max_diff(model.output, ref) <= 1e-6
    visuals = model.get_current_visuals()  # what validation does next, including in-place clamps
    from basicsr.utils import tensor2img
    assert tensor2img([visuals['result']]).shape == (74, 102, 3)


def test_rtsr_model_test_uses_ema_then_deploy_net_and_restores_mode(tmp_path):
    """Training form: the EMA network is used (as BasicSR's SRModel.test), net_g stays in training
    mode; with a deploy network set for validation, that one is used."""
    train = {'ema_decay': 0.5, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
             'losses': [{'type': 'L1Loss', 'loss_weight': 1.0}], 'deploy_export': False}
    model = _rtsr_model(tmp_path, {**RT4KSR_SMALL, 'upscale': 2}, train)
    randomize(model.net_g, seed=4, fan_in=True)
    randomize(model.net_g_ema, seed=5, fan_in=True)
    lq = photo('coffee', 29, 30)
    model.feed_data({'lq': lq})
    model.test()
    assert model.net_g.training
    assert _max_diff(model.output, upscale_tensor(model.net_g_ema, lq)) == 0
    assert _max_diff(model.output, upscale_tensor(model.net_g.eval(), lq)) > 1e-3
    model.net_g.train()
    deployed = _net({**RT4KSR_SMALL, 'upscale': 2}, dtype=torch.float32, seed=6, deploy=True)
    model._eval_net = deployed
    model.test()
    assert model.output.shape == (1, 3, 58, 60)
    assert _max_diff(model.output, upscale_tensor(deployed, lq)) == 0
