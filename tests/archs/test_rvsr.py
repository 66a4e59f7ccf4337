"""RVSR specifics (Li, Wei, Ge, team XJTU-AIR, AIS 2024 RTSR report §3.5; official code
huai-chang/RVSR@61f0c0a): the official state-dict layouts, the [-1, 1] normalization with the
bilinear base upsample computed in that space, x4 only, the squeeze-excite gate that makes tiling
inexact, and the two official checkpoints (``pretrianed/RVSR_rep.pth``, deploy;
``pretrianed/pretrained.ckpt``, a PyTorch-Lightning training checkpoint) against an independent
functional forward written on the official keys. Fusion, parameter counts, importer round trips and
keyword errors are checked for every architecture by test_contract.py."""
import copy

import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import check_half_precision, load_official, module_names, n_params, official_fixture, photo, psnr, randomize
from reference import conv, pad_with
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.rvsr_arch import RVSR

pytestmark = pytest.mark.usefixtures('torch_single_thread')

REP_CONV_TRAIN = ('expand_conv', 'fea_conv', 'reduce_conv', 'expand1_conv', 'fea1_conv', 'reduce1_conv',
                  'res_conv3x3', 'res_conv1x1')
# four real photographs, 48x60 crops (x4 outputs 192x240), as in the official-fixture checks
CROPS = (('astronaut', 60, 180), ('coffee', 120, 200), ('chelsea', 100, 150), ('rocket', 200, 250))


def photos(dtype=torch.float32):
    return torch.cat([photo(name, 48, 60, top=top, left=left, dtype=dtype) for name, top, left in CROPS])


class _Inert:
    """Stand-in for ``torch.optim.adam.Adam``, the one foreign class in the Lightning checkpoint's
    hyper-parameters, so torch's own weights-only unpickler can read it (independently of
    rtsr_arch's restricted reader)."""


def _plain_dict(*args):
    """Stand-in for ``collections.defaultdict`` (the optimizer's state), whose items torch's
    weights-only unpickler refuses to set."""
    return {}


def official_train_state_dict():
    """``state_dict`` of huai-chang/RVSR ``pretrained.ckpt`` read by torch's weights-only unpickler
    with the optimizer class and its state's defaultdict mapped to inert stand-ins; ``network.``
    prefix removed."""
    with torch.serialization.safe_globals([(_Inert, 'torch.optim.adam.Adam'),
                                           (_plain_dict, 'collections.defaultdict'), dict]):
        ckpt = torch.load(official_fixture('rvsr_train.ckpt'), map_location='cpu', weights_only=True)
    assert all(k.startswith('network.') for k in ckpt['state_dict'])
    return {k[len('network.'):]: v for k, v in ckpt['state_dict'].items()}


def official_deploy_state_dict():
    return load_official('rvsr_rep.pth')


# ----------------------------------------------------------------------------- independent reference

def _rep_conv(x, sd, name):
    """Official ``RepConv``: ``rep_conv`` (deploy, ``models/inference_arch.py``) or the sum of the
    two 1-3-1 branches (the 1x1 output padded with its bias, the official ``pad_tensor``),
    ``res_conv3x3``, ``res_conv1x1`` and ``x`` (``train_arch.py``)."""
    if f'{name}.rep_conv.weight' in sd:
        return conv(x, sd, f'{name}.rep_conv', padding=1)
    out = conv(x, sd, f'{name}.res_conv3x3', padding=1) + conv(x, sd, f'{name}.res_conv1x1') + x
    for s in ('', '1'):
        t = pad_with(conv(x, sd, f'{name}.expand{s}_conv'), sd[f'{name}.expand{s}_conv.bias'])
        out = out + conv(conv(t, sd, f'{name}.fea{s}_conv'), sd, f'{name}.reduce{s}_conv')
    return out


@torch.no_grad()
def rvsr_reference(sd, x):
    """huai-chang/RVSR ``RVSR(sr_rate=4, N=16)`` on the official keys, with the official test
    normalization (``tools/trainer.py``: ``(x - 0.5) / 0.5`` in, ``sr / 2 + 0.5`` out): head ->
    8 x [RepConv -> timm SqueezeExcite (mean, fc1, ReLU, fc2, sigmoid gate) -> x + FFN (1x1, exact
    GELU, 1x1)] + head -> RepConv -> 1x1 -> PixelShuffle(4), + bilinear x4 of the normalized input."""
    x = (x - 0.5) / 0.5
    head = conv(x, sd, 'head.0', padding=1)
    h = head
    blocks = sorted({int(k.split('.')[1]) for k in sd if k.startswith('body.')})
    for i in blocks:
        p = f'body.{i}'
        h = _rep_conv(h, sd, f'{p}.token_mixer')
        s = F.relu(conv(h.mean((2, 3), keepdim=True), sd, f'{p}.attn.fc1'))
        h = h * torch.sigmoid(conv(s, sd, f'{p}.attn.fc2'))
        h = h + conv(F.gelu(conv(h, sd, f'{p}.channel_mixer.ffn.0')), sd, f'{p}.channel_mixer.ffn.2')
    h = F.pixel_shuffle(conv(_rep_conv(h + head, sd, 'tail.0'), sd, 'tail.1'), 4)
    sr = h + F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)
    return sr / 2 + 0.5


# ----------------------------------------------------------------------------- layout and declarations

def test_rvsr_state_dict_layout_is_official():
    """Key layout of huai-chang/RVSR ``models/train_arch.py`` / ``inference_arch.py`` (N = 16)."""
    block = {'channel_mixer.ffn.0', 'channel_mixer.ffn.2', 'attn.fc1', 'attn.fc2'}
    train = {'head.0', 'tail.1'} | {f'tail.0.{c}' for c in REP_CONV_TRAIN}
    train |= {f'body.{i}.{m}' for i in range(8) for m in block | {f'token_mixer.{c}' for c in REP_CONV_TRAIN}}
    deploy = {'head.0', 'tail.0.rep_conv', 'tail.1'}
    deploy |= {f'body.{i}.{m}' for i in range(8) for m in block | {'token_mixer.rep_conv'}}

    def layout(model):
        assert all(k.endswith(('.weight', '.bias')) for k in model.state_dict())
        return module_names(model)

    assert layout(RVSR()) == train
    assert layout(RVSR(deploy=True)) == deploy
    assert layout(rtsr_arch.reparameterize(RVSR())) == deploy
    sd = RVSR(deploy=True).state_dict()
    assert sd['head.0.weight'].shape == (16, 3, 3, 3) and sd['tail.1.weight'].shape == (48, 16, 1, 1)
    assert sd['body.0.attn.fc1.weight'].shape == (8, 16, 1, 1)  # timm SqueezeExcite(16, 0.25): 8
    assert sd['body.0.channel_mixer.ffn.0.weight'].shape == (32, 16, 1, 1)
    assert n_params(RVSR(deploy=True)) == 32_960 and n_params(RVSR()) == 221_168


def test_rvsr_declarations():
    net = RVSR()
    assert net.value_range == (-1.0, 1.0) and net.upscale == 4
    assert net.tile_exact is False and net.receptive_radius is None
    assert net.input_multiple == 1 and net.min_input_size == 1 and net.fp16_safe
    assert net.code == 'huai-chang/RVSR@61f0c0a' and net.license == 'Apache-2.0'


@pytest.mark.parametrize('kwargs, words', [(dict(upscale=2), 'upscale=2'), (dict(num_out_ch=1), 'num_out_ch=1')])
def test_rvsr_refuses_what_the_official_network_cannot_do(kwargs, words):
    """x4 only (the official tail hard-codes PixelShuffle(4)); the input's upsample is added to the
    output, so output channels must equal input channels."""
    with pytest.raises(ValueError) as info:
        RVSR(**kwargs)
    assert '\n' not in str(info.value) and words in str(info.value) and 'RVSR' in str(info.value)


# ----------------------------------------------------------------------------- normalization quirk

def test_rvsr_computes_in_minus_one_one_with_the_base_upsample_in_that_space():
    """With the tail's last conv zeroed the network is its base: bilinear x4 of (x - 0.5) / 0.5,
    mapped back by /2 + 0.5 (= bilinear x4 of x, since bilinear weights sum to 1); and the whole
    forward equals the internal network fed [-1, 1] data and mapped back."""
    net = randomize(RVSR(num_feat=8, num_block=2), seed=5, std=1.0, fan_in=True).double().eval()
    x = photo('coffee', 13, 17, dtype=torch.float64, batch=2)
    base = copy.deepcopy(net)
    with torch.no_grad():
        base.tail[1].weight.zero_()
        base.tail[1].bias.zero_()
        y = base(x)
        ref = F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)
    assert (y - ref).abs().max() <= 1e-14
    # the conversion happens inside: the same network without it, on [-1, 1] data
    with torch.no_grad():
        xm = x * 2 - 1
        head = net.head(xm)
        internal = net.tail(net.body(head) + head) + F.interpolate(xm, scale_factor=4, mode='bilinear',
                                                                   align_corners=False)
        assert (net(x) - (internal / 2 + 0.5)).abs().max() <= 1e-14
        # a base computed in [0, 1] instead would differ by (1 - bilinear(1))/2 = 0: the choice
        # matters only through the residual h, which is trained in [-1, 1] units (half of [0, 1])
        assert (net(x) - (net.tail(net.body(head) + head) + ref)).abs().max() > 1e-3


def test_rvsr_squeeze_excite_is_global():
    """Changing a pixel far outside any 3x3 receptive field changes every output pixel (through the
    squeeze-excite means): tiled inference cannot be exact, as declared."""
    # (a seed whose squeeze-excite ReLUs are not all off: with them off the gate is constant)
    net = randomize(RVSR(num_feat=6, num_block=1, se_channels=3), seed=10, std=1.0, fan_in=True).double().eval()
    x = photo('chelsea', 40, 40, dtype=torch.float64)
    x2 = x.clone()
    x2[..., -1, -1] += 0.5
    with torch.no_grad():
        d = (net(x) - net(x2)).abs()
    assert d[..., :40, :40].min() > 0  # the top-left quarter of the output, ~35 px from the change


# ----------------------------------------------------------------------------- official checkpoints

def test_rvsr_official_layouts_match_and_share_the_unfused_tensors():
    """Both official files load strictly into their forms; the tensors that are not
    reparameterized (head, attn, ffn, tail.1) are identical in both, so they come from one run."""
    train, deploy = official_train_state_dict(), official_deploy_state_dict()
    assert list(deploy) == list(RVSR(deploy=True).state_dict())  # same keys, same order
    assert list(train) == list(RVSR().state_dict())
    assert len(train) == 212 and sum(v.numel() for v in train.values()) == 221_168
    assert len(deploy) == 86 and sum(v.numel() for v in deploy.values()) == 32_960
    shared = [k for k in deploy if 'rep_conv' not in k]
    assert len(shared) == 68 and all(torch.equal(train[k], deploy[k]) for k in shared)


@pytest.mark.parametrize('filename', ['rvsr_rep.pth', 'rvsr_train.ckpt'])
def test_rvsr_official_checkpoint_reproduces_the_reference(filename):
    """``rtsr_arch.load_model(path)`` (auto-detected, no options) reproduces the independent
    functional forward of the official network on real photographs: to float32 rounding, and to
    ~1e-12 in float64 (two of the crops). For the Lightning checkpoint both the stored training form
    and the fused deploy form are checked against the reference of the training form."""
    path = official_fixture(filename)
    sd = official_train_state_dict() if filename.endswith('.ckpt') else official_deploy_state_dict()
    for dtype in (torch.float32, torch.float64):
        x = photos(dtype)[:2]
        ref = rvsr_reference({k: v.to(dtype) for k, v in sd.items()}, x)
        forms = (True, None) if filename.endswith('.ckpt') else (True,)
        for deploy in forms:
            net = rtsr_arch.load_model(path, dtype=dtype, deploy=deploy)
            assert isinstance(net, RVSR) and net.network_opt['act_type'] == 'gelu'
            assert n_params(net) == (32_960 if deploy else 221_168)
            with torch.no_grad():
                y = net(x)
            err = (y - ref).abs().max().item()
            print(f'{filename} {dtype} deploy={deploy}: max |load_model - reference| = {err:.3g}')
            assert y.shape == (2, 3, 192, 240)
            assert err <= (2e-5 if dtype == torch.float32 else 1e-12), err


def test_rvsr_official_weights_super_resolve():
    """Sanity of the whole path (normalization in and out included): on 192x240 photographs
    downscaled x4 (bicubic, antialiased, 8-bit), the official network beats the bilinear upsample
    it adds its residual to by more than 1 dB PSNR on average (measured: +1.4 dB; it was trained on
    AVIF-compressed inputs, not on these)."""
    net = rtsr_arch.load_model(official_fixture('rvsr_rep.pth'))
    gains = []
    for name, top, left in CROPS:
        hr = photo(name, 192, 240, top=top, left=left)
        lr = F.interpolate(hr, scale_factor=0.25, mode='bicubic', antialias=True, align_corners=False)
        lr = (lr.clamp(0, 1) * 255).round() / 255
        with torch.no_grad():
            sr = net(lr).clamp(0, 1)
        bilinear = F.interpolate(lr, scale_factor=4, mode='bilinear', align_corners=False)
        gains.append(psnr(sr, hr) - psnr(bilinear, hr))
    print('PSNR gain over bilinear (dB):', [round(g, 2) for g in gains])
    assert sum(gains) / len(gains) > 1.0 and min(gains) > 0


def test_rvsr_our_fusion_of_the_training_checkpoint_reproduces_the_official_deploy_file():
    """Our merge of ``pretrained.ckpt`` vs the official ``RVSR_rep.pth`` (merged by the official
    ``reparameterize.py``, on a GPU): the outputs agree to float32 rounding on real photographs,
    the fused kernels to ~1e-6."""
    fused = rtsr_arch.load_model(official_fixture('rvsr_train.ckpt'))
    official = rtsr_arch.load_model(official_fixture('rvsr_rep.pth'))
    x = photos()
    with torch.no_grad():
        err = (fused(x) - official(x)).abs().max().item()
    ours, theirs = fused.state_dict(), official.state_dict()
    assert ours.keys() == theirs.keys()
    kernel_err = max((ours[k] - theirs[k]).abs().max().item() for k in ours if 'rep_conv' in k)
    print(f'fused rvsr_train.ckpt vs rvsr_rep.pth: outputs max |diff| {err:.3g}, rep_conv tensors {kernel_err:.3g}')
    assert err <= 2e-6 and kernel_err <= 1e-5
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if 'rep_conv' not in k)
    # and in float64 our fusion is exact: fused == training form of the same checkpoint
    train = rtsr_arch.load_model(official_fixture('rvsr_train.ckpt'), deploy=None, dtype=torch.float64)
    fused64 = rtsr_arch.reparameterize(copy.deepcopy(train))
    x64 = photos(torch.float64)
    with torch.no_grad():
        assert (train(x64) - fused64(x64)).abs().max() <= 1e-12


def test_rvsr_lightning_checkpoint_of_the_official_trainer_loads(tmp_path):
    """A checkpoint in the layout the official PyTorch-Lightning trainer writes (``state_dict`` with
    ``network.`` keys, the optimizer object pickled into the hyper-parameters, which torch's
    weights-only unpickler refuses) loads through ``load_model`` with no options: read by the
    restricted reader, detected, fused, equal to the network it was saved from."""
    model = randomize(RVSR(num_feat=6, num_block=2, se_channels=4), seed=3, std=1.0, fan_in=True).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    path = tmp_path / 'RVSR_epoch=0001.ckpt'
    torch.save({'epoch': 1, 'global_step': 140, 'pytorch-lightning_version': '1.5.0',
                'state_dict': {f'network.{k}': v for k, v in model.state_dict().items()},
                'hyper_parameters': {'conf': {'trainer': {'lr_scheduler': {'params': {'optimizer': optimizer}}}}}},
               path)
    with pytest.raises(Exception):
        torch.load(path, map_location='cpu', weights_only=True)
    net = rtsr_arch.load_model(path)
    assert net.network_opt['se_channels'] == 4 and net.network_opt['deploy'] is True
    x = photo('astronaut', 20, 24)
    with torch.no_grad():
        y = model(x)
        assert (net(x) - y).abs().max() <= 1e-5 * y.abs().max()  # fused: float32 rounding


def test_rvsr_official_checkpoints_are_detected_only_as_rvsr():
    for filename in ('rvsr_rep.pth', 'rvsr_train.ckpt'):
        checkpoint = rtsr_arch.utils.checkpoint.load_checkpoint(official_fixture(filename))
        assert [imp.arch for imp, _ in find_importers(checkpoint)] == ['RVSR']
        resolved = rtsr_arch.loader.resolve_checkpoint(official_fixture(filename))
        assert resolved.how == 'official RVSR checkpoint'
        assert resolved.network_opt == {'type': 'RVSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16,
                                        'num_block': 8, 'upscale': 4, 'act_type': 'gelu', 'ffn_ratio': 2,
                                        'se_channels': 8, 'deploy': filename == 'rvsr_rep.pth'}


def test_rvsr_importer_notes_and_prelu_detection():
    sd = RVSR(num_feat=4, num_block=1, se_channels=2).state_dict()
    (importer, stripped), = find_importers(sd)
    result = importer.convert(stripped, {})
    assert result.assumed == ('act_type',) and 'gelu' in result.notes[0]
    assert importer.convert(stripped, {'act_type': 'relu'}).network_opt['act_type'] == 'relu'
    prelu = RVSR(num_feat=4, num_block=1, se_channels=2, act_type='prelu').state_dict()
    (importer, stripped), = find_importers(prelu)
    assert importer.convert(stripped, {}).network_opt['act_type'] == 'prelu'
    # one missing or extra key, or a wrong shape, is not an RVSR checkpoint
    for broken in ({k: v for k, v in sd.items() if k != 'body.0.attn.fc2.bias'},
                   {**sd, 'body.0.attn.extra.weight': torch.zeros(1)},
                   {**sd, 'tail.1.weight': torch.zeros(12, 4, 1, 1), 'tail.1.bias': torch.zeros(12)}):
        assert [imp.arch for imp, _ in find_importers(broken)] != ['RVSR']


def test_rvsr_official_weights_in_fp16():
    """The official weights in float16 (the AIS 2024 runtime protocol) stay within a few levels of
    float32 on real photographs."""
    check_half_precision(official_fixture('rvsr_rep.pth'), photos(), torch.float16, 1e-2)
