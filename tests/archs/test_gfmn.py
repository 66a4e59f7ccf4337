"""GFMN (2023) specifics (team NJUST_M, NTIRE 2023 ESR report §4.6, Li et al., CVPRW 2023; official
code sunny2109/SAFMN@68c2182, NTIRE2023_ESR/models/team14_GFMN.py, Apache-2.0 repository, MIT
folder): the official state-dict layout and parameter count, an independent functional forward on
the official keys, the released ``team14_GFMN.pth`` (``params`` as the official test_demo.py,
``params_ema`` on request) against it on real photographs at sizes divisible and not divisible by
16, the GDFN gate without activation (the official GELU is commented out), the ONNX graph at every
size, and the honest declarations (not tile-exact; minimum input 16). Keyword errors, preset
counts, importer round trips and one ONNX export are checked for every architecture by
test_contract.py; the NTIRE 2023 ESR counts by test_ntire23_counts.py; the shared SAFM layer by
test_safmn.py."""
import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import check_official_beats_bicubic, check_param_key_on_request, SIZES_BY_16, check_half_precision, \
    check_official_reference, check_onnx_at, load_official, load_recipe, max_rel, n_params, official_fixture, photo, \
    randomize, state_layout, tall_photo
from reference import layer_norm_2d, safm
from rtsr_arch.archs.gfmn_arch import GFMN
from rtsr_arch.archs.official import find_importers, get_importer
from rtsr_arch.loader import resolve_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')

OFFICIAL = 'gfmn_ntire23.pth'


# ----------------------------------------------------------------------------- independent reference

@torch.no_grad()
def gfmn_reference(sd, x, upscale=4, gate=lambda a, b: a * b):
    """The official 2023 ``GFMN`` forward (sunny2109/SAFMN NTIRE2023_ESR/models/team14_GFMN.py),
    written on the official keys with torch.nn.functional only: to_feat -> blocks [x + SAFM(LN(x));
    x + FFN(LN(x))] -> + to_feat output -> to_img conv -> PixelShuffle. SAFM (``reference.safm``): 4
    chunks; chunk 0 depthwise 3x3 at full size, chunk i adaptive-max-pooled to (H // 2**(i+1),
    W // 2**(i+1)), depthwise 3x3 (biases), nearest back; concat -> 1x1 (bias) -> GELU -> times the
    SAFM input. FFN (bias-free): 1x1 -> depthwise 3x3 -> chunk -> x1 * x2 -> 1x1. LN: channels first,
    eps 1e-6."""
    sd = {k: v.to(x.dtype) for k, v in sd.items()}
    y = feat = F.conv2d(x, sd['to_feat.weight'], sd['to_feat.bias'], padding=1)
    for i in sorted({int(k.split('.')[1]) for k in sd if k.startswith('feats.')}):
        p = f'feats.{i}.'
        y = safm(layer_norm_2d(y, sd, p + 'norm1'), sd, p + 'safm.') + y
        t = F.conv2d(layer_norm_2d(y, sd, p + 'norm2'), sd[p + 'ffd.project_in.weight'])
        x1, x2 = F.conv2d(t, sd[p + 'ffd.dwconv.weight'], padding=1, groups=t.shape[1]).chunk(2, dim=1)
        y = F.conv2d(gate(x1, x2), sd[p + 'ffd.project_out.weight']) + y
    return F.pixel_shuffle(F.conv2d(y + feat, sd['to_img.0.weight'], sd['to_img.0.bias'], padding=1), upscale)


def _rel(y, ref):
    return max_rel(y, ref, floor=1.0)


# ----------------------------------------------------------------------------- layout and counts

def test_gfmn_state_dict_layout_is_official():
    """``GFMN(dim=36, n_blocks=8, ffn_scale=2)``: 140 tensors, official keys and shapes (SAFM with
    biases, bias-free FFN of width int(36 * 2) = 72, doubled in project_in / dwconv)."""
    shapes = state_layout(GFMN())
    expected = {'to_feat.weight': (36, 3, 3, 3), 'to_feat.bias': (36,),
                'to_img.0.weight': (48, 36, 3, 3), 'to_img.0.bias': (48,)}
    for i in range(8):
        p = f'feats.{i}.'
        expected.update({p + 'norm1.weight': (36,), p + 'norm1.bias': (36,), p + 'norm2.weight': (36,),
                         p + 'norm2.bias': (36,)})
        for j in range(4):
            expected.update({f'{p}safm.mfr.{j}.weight': (9, 1, 3, 3), f'{p}safm.mfr.{j}.bias': (9,)})
        expected.update({p + 'safm.aggr.weight': (36, 36, 1, 1), p + 'safm.aggr.bias': (36,),
                         p + 'ffd.project_in.weight': (144, 36, 1, 1), p + 'ffd.dwconv.weight': (144, 1, 3, 3),
                         p + 'ffd.project_out.weight': (36, 72, 1, 1)})
    assert shapes == expected and len(shapes) == 140
    assert n_params(GFMN()) == n_params(GFMN(deploy=True)) == n_params(GFMN(preset='ntire23_esr')) == 103_872
    # a single form: deploy builds the same network, reparameterize changes no key
    assert rtsr_arch.reparameterize(GFMN()).state_dict().keys() == GFMN(deploy=True).state_dict().keys()
    assert GFMN(upscale=2, num_out_ch=1).state_dict()['to_img.0.weight'].shape == (4, 36, 3, 3)


def test_gfmn_parameter_count_formula():
    """Table 1 (NJUST_M): 0.104 M = to_feat 1,008 + 8 x (LN 144 + SAFM 360 + 1,332 + FFN 5,184 +
    1,296 + 2,592) + to_img 15,600."""
    block = 2 * 72 + 4 * (81 + 9) + (36 * 36 + 36) + 36 * 144 + 144 * 9 + 72 * 36
    assert block == 10_908
    assert (3 * 36 * 9 + 36) + 8 * block + (36 * 48 * 9 + 48) == 103_872


def test_gfmn_declarations():
    net = GFMN()
    assert net.upscale == 4 and net.input_multiple == 1 and net.min_input_size == 16
    assert net.tile_exact is False and net.receptive_radius is None and net.fp16_safe is True
    assert net.code == 'sunny2109/SAFMN@68c2182' and net.license.startswith('Apache-2.0')
    assert GFMN.presets == {'ntire23_esr': dict(num_feat=36, num_block=8, ffn_scale=2.0, upscale=4)}


def test_gfmn_keyword_errors_specific_to_it():
    with pytest.raises(ValueError, match=r'GFMN: num_feat=30: expected a multiple of 4'):
        GFMN(num_feat=30)
    with pytest.raises(ValueError, match=r'GFMN: ffn_scale=0.01'):
        GFMN(num_feat=8, ffn_scale=0.01)
    with pytest.raises(ValueError, match=r"GFMN: act_type='prelu'"):
        GFMN(act_type='prelu')


# ----------------------------------------------------------------------------- forward vs reference

@pytest.mark.parametrize('kwargs', [{}, dict(num_feat=8, num_block=3, ffn_scale=1.5, upscale=2),
                                    dict(num_feat=12, num_block=1, upscale=3, num_in_ch=1, num_out_ch=1)])
def test_gfmn_matches_the_functional_reference(kwargs):
    """Random weights (LayerNorm affine included), float64, real photographs at sizes divisible and
    not divisible by 16, down to 16 x 16."""
    model = randomize(GFMN(**kwargs), seed=5, std=1.0, fan_in=True).double().eval()
    sd = model.state_dict()
    for name, h, w in SIZES_BY_16:
        x = photo(name, h, w, dtype=torch.float64)[:, :model.network_opt['num_in_ch']]
        with torch.no_grad():
            y = model(x)
        ref = gfmn_reference(sd, x, model.upscale)
        assert y.shape == ref.shape == (1, model.network_opt['num_out_ch'], h * model.upscale, w * model.upscale)
        assert _rel(y, ref) <= 1e-12, (name, h, w)


def test_gdfn_gate_has_no_activation():
    """The official FeedForward multiplies the two halves directly (``# x = F.gelu(x1) * x2`` is
    commented out): Restormer's GELU gate would change the released network's output visibly, so
    the reference check above would catch it."""
    ckpt = load_official(OFFICIAL)
    x = photo('coffee', 32, 48, dtype=torch.float64)
    ref = gfmn_reference(ckpt['params'], x)
    wrong = gfmn_reference(ckpt['params'], x, gate=lambda a, b: F.gelu(a) * b)
    assert (wrong - ref).abs().max() > 1e-3


def test_importer_infers_the_shapes_and_assumes_the_rest():
    importer = get_importer('GFMN')
    result = importer.convert(GFMN(num_feat=12, num_block=3, ffn_scale=1.5, upscale=3).state_dict(), {})
    assert result.network_opt == dict(type='GFMN', num_in_ch=3, num_out_ch=3, num_feat=12, num_block=3,
                                      ffn_scale=1.5, upscale=3, act_type='gelu', deploy=False)
    assert set(result.assumed) == {'deploy', 'act_type'}


# ----------------------------------------------------------------------------- the official weights

def test_official_checkpoint_layout():
    """team14_GFMN.pth: ``{params, params_ema}``, the same 140 keys, values differing by up to
    ~1.3e-4; detected as GFMN only (not as the 2024 GFMN, MFA or SAFMN)."""
    ckpt = load_official(OFFICIAL)
    assert set(ckpt) == {'params', 'params_ema'}
    assert list(ckpt['params']) == list(ckpt['params_ema']) == list(GFMN().state_dict())
    assert sum(v.numel() for v in ckpt['params'].values()) == 103_872
    diff = max(float((ckpt['params'][k] - ckpt['params_ema'][k]).abs().max()) for k in ckpt['params'])
    assert 0 < diff < 2e-4
    assert [imp.arch for imp, _ in find_importers(ckpt)] == ['GFMN']


@pytest.mark.parametrize('name, h, w', SIZES_BY_16)
def test_official_weights_reproduce_the_reference(name, h, w):
    """``rtsr_arch.load_model(path)`` (auto-detected, no architecture given) uses ``params`` as the
    official test_demo.py and reproduces the functional reference: float32 to rounding, float64 to 1e-12."""
    ckpt = load_official(OFFICIAL)
    resolved = resolve_checkpoint(official_fixture(OFFICIAL))
    assert resolved.how == 'official GFMN checkpoint'
    assert resolved.network_opt == dict(type='GFMN', num_in_ch=3, num_out_ch=3, num_feat=36, num_block=8,
                                        ffn_scale=2.0, upscale=4, act_type='gelu', deploy=False)
    check_official_reference(official_fixture(OFFICIAL), ckpt['params'], gfmn_reference,
                             photo(name, h, w, dtype=torch.float64))


def test_official_weights_beat_bicubic():
    check_official_beats_bicubic(official_fixture(OFFICIAL), 'GFMN')


def test_official_ema_weights_on_request():
    """``param_key='params_ema'`` loads the EMA weights, not the default ``params``."""
    check_param_key_on_request(official_fixture(OFFICIAL), gfmn_reference, min_diff=1e-5)


def test_official_weights_fp16():
    """fp16_safe on the trained weights: half inference within 1e-2 of the output peak."""
    check_half_precision(official_fixture(OFFICIAL), photo('chelsea', 60, 90), torch.float16, 1e-2, relative=True)


def test_official_onnx_export_is_exact_at_every_size(tmp_path):
    """The official network exported once runs in onnxruntime at sizes divisible and not divisible
    by 16 (16x16; 114 rows, where a plain nearest Resize would pick other rows; 540 rows, the 4K x4
    LR height) and matches PyTorch to 1e-4 of the output peak."""
    net = rtsr_arch.load_model(official_fixture(OFFICIAL))
    images = [photo(name, h, w) for name, h, w in SIZES_BY_16[2:4]] + [tall_photo(16)]  # 16x16, 114x20, 540x16
    check_onnx_at(net, tmp_path / 'gfmn.onnx', images)


# ----------------------------------------------------------------------------- the training recipe

def test_recipe_follows_the_report():
    """options/train/GFMN: §4.6's single stage (LSDIR, LR 96 / batch 64, L1 + frequency loss, Adam
    1e-3 -> 1e-6 cosine over 600k), EMA kept (the release holds params_ema)."""
    opt = load_recipe('GFMN', 'train_GFMN_x4_NTIRE23_LSDIR')
    data, train = opt['datasets']['train'], opt['train']
    assert opt['model_type'] == 'RTSRModel' and opt['scale'] == 4
    assert data['type'] == 'PairedImageDataset' and data['gt_size'] == 384 and data['batch_size_per_gpu'] == 64
    assert 'LSDIR' in data['dataroot_gt'] and data['filename_tmpl'] == '{}x4'
    assert [loss['type'] for loss in train['losses']] == ['L1Loss', 'FFTLoss']
    assert (train['optim_g']['type'], train['optim_g']['lr']) == ('Adam', 1e-3)
    assert train['scheduler'] == dict(type='CosineAnnealingRestartLR', periods=[600000], restart_weights=[1],
                                      eta_min=1e-6)
    assert train['total_iter'] == 600000 and train['ema_decay'] > 0
    net = GFMN(**{k: v for k, v in opt['network_g'].items() if k != 'type'})
    assert net.network_opt == GFMN(preset='ntire23_esr').network_opt | {'preset': None}
    assert n_params(net) == 103_872
