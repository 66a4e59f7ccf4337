"""SAFMN as entered in NTIRE 2023 ESR specifics (team NJUST_R, report §4.17, Li et al., CVPRW 2023;
SAFMN: Sun et al., ICCV 2023; official code sunny2109/SAFMN@68c2182, NTIRE2023_ESR/models/team15_SAFMN.py,
Apache-2.0 repository, MIT folder): the official state-dict layout and parameter count, the RepVGG
training form of the first and last convs and its fusion under the official keys, an independent
functional forward on the official keys, the released ``team15_SAFMN.pth`` against it on real
photographs at sizes divisible and not divisible by 16, the replicated quirks (GRN on whole-image
statistics, the bilinear image-space skip, no feature-space skip, bias-free blocks), the shared SAFM
layer, the ONNX graph at every size, and the honest declarations (not tile-exact; minimum input 16).
Keyword errors, preset counts, importer round trips and one ONNX export are checked for every
architecture by test_contract.py; the NTIRE 2023 ESR counts by test_ntire23_counts.py."""
import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import check_official_beats_bicubic, SIZES_BY_16, check_half_precision, check_official_reference, \
    check_onnx_at, load_official, load_recipe, max_rel, n_params, official_fixture, photo, randomize, state_layout, \
    tall_photo
from reference import safm
from rtsr_arch.archs.layers import SAFM, ffn_scale_for
from rtsr_arch.archs.official import OfficialImportError, find_importers, get_importer
from rtsr_arch.archs.safmn_arch import GRN, SAFMN
from rtsr_arch.loader import resolve_checkpoint
from rtsr_arch.utils.efficiency import count_ntire_esr

pytestmark = pytest.mark.usefixtures('torch_single_thread')

OFFICIAL = 'safmn_ntire23.pth'


# ----------------------------------------------------------------------------- independent reference

@torch.no_grad()
def safmn_reference(sd, x, upscale=4):
    """The official NTIRE 2023 ``SAFMN`` forward (sunny2109/SAFMN NTIRE2023_ESR/models/team15_SAFMN.py),
    written on the official keys with torch.nn.functional only: ident = bilinear x upscale of the
    input; to_feat (bias) -> GRN (L2 norms over H, W; divided by their channel mean + 1e-6; gamma *
    (x * N) + beta + x) -> blocks [x + SAFM(x); x + CCM(x)], bias-free, no normalization -> to_img
    (bias) -> PixelShuffle -> + ident. No feature-space skip. SAFM: ``reference.safm``."""
    sd = {k: v.to(x.dtype) for k, v in sd.items()}
    ident = F.interpolate(x, scale_factor=upscale, mode='bilinear', align_corners=False)
    y = F.conv2d(x, sd['to_feat.weight'], sd['to_feat.bias'], padding=1)
    g = torch.norm(y, p=2, dim=(2, 3), keepdim=True)
    y = sd['norm.gamma'] * (y * (g / (g.mean(dim=1, keepdim=True) + 1e-6))) + sd['norm.beta'] + y
    for i in sorted({int(k.split('.')[1]) for k in sd if k.startswith('feats.')}):
        p = f'feats.{i}.'
        y = safm(y, sd, p + 'safm.') + y
        t = F.gelu(F.conv2d(y, sd[p + 'ccm.ccm.0.weight'], padding=1))
        y = F.conv2d(t, sd[p + 'ccm.ccm.2.weight']) + y
    out = F.pixel_shuffle(F.conv2d(y, sd['to_img.0.weight'], sd['to_img.0.bias'], padding=1), upscale)
    return out + ident


def _rel(y, ref):
    return max_rel(y, ref, floor=1.0)


# ----------------------------------------------------------------------------- layout and counts

def test_safmn_state_dict_layout_is_official():
    """``SAFMN(dim=36, n_blocks=8, ffn_scale=2.0)`` deploy form: 62 tensors, official keys and shapes;
    every block conv bias-free, to_feat / to_img with bias, GRN gamma / beta (1, 36, 1, 1)."""
    shapes = state_layout(SAFMN(deploy=True))
    expected = {'norm.gamma': (1, 36, 1, 1), 'norm.beta': (1, 36, 1, 1),
                'to_feat.weight': (36, 3, 3, 3), 'to_feat.bias': (36,),
                'to_img.0.weight': (48, 36, 3, 3), 'to_img.0.bias': (48,)}
    for i in range(8):
        p = f'feats.{i}.'
        expected.update({f'{p}safm.mfr.{j}.weight': (9, 1, 3, 3) for j in range(4)})
        expected.update({p + 'safm.aggr.weight': (36, 36, 1, 1), p + 'ccm.ccm.0.weight': (72, 36, 3, 3),
                         p + 'ccm.ccm.2.weight': (36, 72, 1, 1)})
    assert shapes == expected and len(shapes) == 62
    assert n_params(SAFMN(deploy=True)) == n_params(SAFMN(preset='ntire23_esr', deploy=True)) == 237_000
    assert SAFMN(upscale=2, deploy=True).state_dict()['to_img.0.weight'].shape == (12, 36, 3, 3)


def test_safmn_parameter_count_formula():
    """Table 1 (NJUST_R): 0.237 M = GRN 72 + to_feat 1,008 + 8 x (4 x 81 + 1,296 + 23,328 + 2,592)
    + to_img 15,600; the training form adds the 1x1 branches of the head and tail (3 x 36 + 36,
    36 x 48 + 48)."""
    block = 4 * 9 * 9 + 36 * 36 + 36 * 72 * 9 + 72 * 36
    assert block == 27_540
    assert 72 + (3 * 36 * 9 + 36) + 8 * block + (36 * 48 * 9 + 48) == 237_000
    assert 237_000 + (3 * 36 + 36) + (36 * 48 + 48) == n_params(SAFMN()) == 238_920


def test_training_form_is_repvgg_and_fuses_under_the_official_keys():
    """§4.17: "We equip the first and last convolution with reparametrization technique [RepVGG]".
    The training form holds 3x3 + 1x1 branches at to_feat / to_img.0; reparameterize() leaves
    exactly the official key list, and the fused network equals the training form (float64)."""
    train = randomize(SAFMN(num_block=2), seed=1, std=1.0, fan_in=True).double().eval()
    keys = list(train.state_dict())
    assert [k for k in keys if k.startswith(('to_feat', 'to_img'))] == [
        f'{m}.{b}.conv.{t}' for m in ('to_feat', 'to_img.0') for b in ('rbr_dense', 'rbr_1x1')
        for t in ('weight', 'bias')]
    x = photo('coffee', 45, 67, dtype=torch.float64)
    with torch.no_grad():
        y = train(x)
    fused = rtsr_arch.reparameterize(train)
    assert list(fused.state_dict()) == list(SAFMN(num_block=2, deploy=True).state_dict())
    assert isinstance(fused.to_feat, torch.nn.Conv2d) and isinstance(fused.to_img[0], torch.nn.Conv2d)
    assert fused.network_opt['deploy'] is True
    with torch.no_grad():
        assert _rel(fused(x), y) <= 1e-12
    ref = safmn_reference(fused.state_dict(), x)
    assert _rel(y, ref) <= 1e-12


def test_safmn_declarations():
    net = SAFMN()
    assert net.upscale == 4 and net.input_multiple == 1 and net.min_input_size == 16
    assert net.tile_exact is False and net.receptive_radius is None and net.fp16_safe is True
    assert net.value_range == (0.0, 1.0)
    assert net.code == 'sunny2109/SAFMN@68c2182' and net.license.startswith('Apache-2.0')
    assert SAFMN.presets == {'ntire23_esr': dict(num_feat=36, num_block=8, ffn_scale=2.0, upscale=4)}


def test_safmn_keyword_errors_specific_to_it():
    with pytest.raises(ValueError, match=r'SAFMN: num_feat=34: expected a multiple of 4'):
        SAFMN(num_feat=34)
    with pytest.raises(ValueError, match=r'SAFMN: num_out_ch=1: must equal num_in_ch=3'):
        SAFMN(num_out_ch=1)  # the output adds the bilinearly upscaled input
    with pytest.raises(ValueError, match=r'SAFMN: ffn_scale=0.01'):
        SAFMN(num_feat=8, ffn_scale=0.01)
    with pytest.raises(ValueError, match=r"SAFMN: act_type='prelu'"):
        SAFMN(act_type='prelu')


# ----------------------------------------------------------------------------- forward vs reference

@pytest.mark.parametrize('kwargs', [dict(num_block=2), dict(num_feat=8, num_block=3, ffn_scale=1.5, upscale=2),
                                    dict(num_feat=12, num_block=1, upscale=3)])
def test_safmn_matches_the_functional_reference(kwargs):
    """Random weights (every parameter, GRN included), float64, real photographs at sizes divisible
    and not divisible by 16, down to 16 x 16."""
    model = randomize(SAFMN(**kwargs, deploy=True), seed=5, std=1.0, fan_in=True).double().eval()
    sd = model.state_dict()
    for name, h, w in SIZES_BY_16:
        x = photo(name, h, w, dtype=torch.float64)
        with torch.no_grad():
            y = model(x)
        ref = safmn_reference(sd, x, model.upscale)
        assert y.shape == ref.shape == (1, 3, h * model.upscale, w * model.upscale)
        assert _rel(y, ref) <= 1e-12, (name, h, w)


def test_grn_is_global_response_normalization():
    """GRN on a map: zero gamma / beta (its initialization) is the identity; otherwise each channel
    is scaled by its whole-map L2 norm over the channel mean of those norms."""
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    grn = GRN(6).double()
    assert torch.equal(grn(x), x)
    randomize(grn, seed=2)
    g = x.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
    expected = grn.gamma * x * g / (g.mean(dim=1, keepdim=True) + 1e-6) + grn.beta + x
    assert (grn(x) - expected).abs().max() <= 1e-12


def test_grn_makes_tiling_inexact():
    """Part of the reason for ``tile_exact = False``: GRN alone, on a crop, gives other values than
    the same region of the whole map (its statistics are the whole image's)."""
    grn = randomize(GRN(4), seed=3).double()
    x = photo('astronaut', 32, 32, dtype=torch.float64).repeat(1, 2, 1, 1)[:, :4]
    with torch.no_grad():
        assert (grn(x)[..., :16, :16] - grn(x[..., :16, :16])).abs().max() > 1e-3


def test_the_skip_is_the_bilinear_image_not_the_features():
    """§4.17: "We change the skip-connection in feature space into image space". A zero tail makes
    the network exactly the bilinear (align_corners=False) upscaling of its input; the features
    reach the tail without a global feature skip (the reference has none, and matches)."""
    model = randomize(SAFMN(num_feat=8, num_block=1, deploy=True), seed=4, std=1.0, fan_in=True).double().eval()
    with torch.no_grad():
        model.to_img[0].weight.zero_()
        model.to_img[0].bias.zero_()
        x = photo('chelsea', 20, 30, dtype=torch.float64)
        assert torch.equal(model(x), F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False))


# ----------------------------------------------------------------------------- the shared SAFM layer

@pytest.mark.parametrize('pool_shift, bias', [(1, False), (1, True), (0, True)])
def test_shared_safm_layer_matches_the_reference(pool_shift, bias):
    """rtsr_arch.archs.layers.SAFM (used by SAFMN and GFMN) against the functional SAFM: the NTIRE
    2023 pooling (1/4, 1/8, 1/16) with and without biases, and the ICCV 2023 SAFMN's (1/2, 1/4, 1/8)."""
    layer = randomize(SAFM(12, pool_shift=pool_shift, bias=bias), seed=9, std=1.0, fan_in=True).double()
    assert layer.min_input_size == 2 ** (3 + pool_shift)
    assert [k for k in layer.state_dict() if k.endswith('bias')] == (
        [f'mfr.{i}.bias' for i in range(4)] + ['aggr.bias'] if bias else [])
    for name, h, w in SIZES_BY_16:
        x = photo(name, h, w, dtype=torch.float64).repeat(1, 4, 1, 1)
        with torch.no_grad():
            assert _rel(layer(x), safm(x, layer.state_dict(), '', pool_shift)) <= 1e-12


def test_shared_safm_layer_refuses_bad_widths_and_counts_pooled_convs():
    with pytest.raises(ValueError, match='SAFM: dim=10 must be a positive multiple of n_levels=4'):
        SAFM(10)
    counts = count_ntire_esr(SAFM(36, bias=False), (1, 36, 256, 256))
    assert counts.num_conv == 5  # four depthwise convs and aggr, each called once
    assert counts.activations == 9 * (256 ** 2 + 64 ** 2 + 32 ** 2 + 16 ** 2) + 36 * 256 ** 2
    assert counts.flops == 9 * 9 * (256 ** 2 + 64 ** 2 + 32 ** 2 + 16 ** 2) + 36 * 36 * 256 ** 2  # GELU: 0


def test_ffn_scale_is_recovered_as_written():
    assert ffn_scale_for(36, 72) == 2.0 and ffn_scale_for(33, 59) == 1.8 and ffn_scale_for(8, 12) == 1.5
    for dim in range(4, 65, 4):
        for hidden in range(1, 3 * dim):
            assert int(dim * ffn_scale_for(dim, hidden)) == hidden


# ----------------------------------------------------------------------------- importer

def test_importer_reads_both_forms_and_refuses_a_mixed_one():
    """The released layout is the deploy form (plain head / tail convs); this package's training
    form (RepVGG head / tail) is read with deploy=False; one plain and one RepVGG is refused."""
    importer = get_importer('SAFMN')
    train_sd = SAFMN(num_feat=8, num_block=2, upscale=3).state_dict()
    result = importer.convert(train_sd, {})
    assert result.network_opt == dict(type='SAFMN', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2,
                                      ffn_scale=2.0, upscale=3, act_type='gelu', deploy=False)
    assert result.assumed == ('act_type',)
    deploy_sd = rtsr_arch.reparameterize(SAFMN(num_feat=8, num_block=2, upscale=3)).state_dict()
    assert importer.convert(deploy_sd, {}).network_opt['deploy'] is True
    mixed = {k: v for k, v in deploy_sd.items() if not k.startswith('to_img')}
    mixed.update({k: v for k, v in train_sd.items() if k.startswith('to_img')})
    assert [imp.arch for imp, _ in find_importers(mixed)] == ['SAFMN']
    with pytest.raises(OfficialImportError, match='not in the same form'):
        importer.convert(mixed, {})


# ----------------------------------------------------------------------------- the official weights

def test_official_checkpoint_layout():
    """team15_SAFMN.pth: ``{params}`` only, the 62 deploy keys, 237,000 values; detected as SAFMN only."""
    ckpt = load_official(OFFICIAL)
    assert set(ckpt) == {'params'}
    assert list(ckpt['params']) == list(SAFMN(deploy=True).state_dict())
    assert sum(v.numel() for v in ckpt['params'].values()) == 237_000
    assert [imp.arch for imp, _ in find_importers(ckpt)] == ['SAFMN']


@pytest.mark.parametrize('name, h, w', SIZES_BY_16)
def test_official_weights_reproduce_the_reference(name, h, w):
    """``rtsr_arch.load_model(path)`` (auto-detected, no architecture given) reproduces the
    functional reference: float32 to rounding, float64 to 1e-12."""
    ckpt = load_official(OFFICIAL)
    resolved = resolve_checkpoint(official_fixture(OFFICIAL))
    assert resolved.how == 'official SAFMN checkpoint'
    assert resolved.network_opt == dict(type='SAFMN', num_in_ch=3, num_out_ch=3, num_feat=36, num_block=8,
                                        ffn_scale=2.0, upscale=4, act_type='gelu', deploy=True)
    check_official_reference(official_fixture(OFFICIAL), ckpt['params'], safmn_reference,
                             photo(name, h, w, dtype=torch.float64))


def test_official_weights_beat_bicubic():
    check_official_beats_bicubic(official_fixture(OFFICIAL), 'SAFMN')


def test_official_weights_fp16():
    """fp16_safe on the trained weights (GRN's whole-image L2 norm included): half inference within
    1e-2 of the output peak."""
    check_half_precision(official_fixture(OFFICIAL), photo('chelsea', 60, 90), torch.float16, 1e-2, relative=True)


def test_official_onnx_export_is_exact_at_every_size(tmp_path):
    """The official network exported once runs in onnxruntime at sizes divisible and not divisible
    by 16 (16x16; 114 rows, where a plain nearest Resize would pick other rows; 540 rows, the 4K x4
    LR height) and matches PyTorch to 1e-4 of the output peak (GRN, pooling, resizes and the
    bilinear skip all follow the input size in the graph)."""
    net = rtsr_arch.load_model(official_fixture(OFFICIAL))
    images = [photo(name, h, w) for name, h, w in SIZES_BY_16[2:4]] + [tall_photo(16)]  # 16x16, 114x20, 540x16
    check_onnx_at(net, tmp_path / 'safmn.onnx', images)


# ----------------------------------------------------------------------------- the training recipe

def test_recipe_follows_the_report():
    """options/train/SAFMN: §4.17's single stage (LSDIR, LR 96 / batch 64, L1 + frequency loss,
    Adam 1e-3 -> 1e-6 cosine over 600k) on the training form, validated fused."""
    opt = load_recipe('SAFMN', 'train_SAFMN_x4_NTIRE23_LSDIR')
    data, train = opt['datasets']['train'], opt['train']
    assert opt['model_type'] == 'RTSRModel' and opt['scale'] == 4
    assert data['type'] == 'PairedImageDataset' and data['gt_size'] == 384 and data['batch_size_per_gpu'] == 64
    assert 'LSDIR' in data['dataroot_gt'] and data['filename_tmpl'] == '{}x4'
    assert [loss['type'] for loss in train['losses']] == ['L1Loss', 'FFTLoss']
    assert (train['optim_g']['type'], train['optim_g']['lr']) == ('Adam', 1e-3)
    assert train['scheduler'] == dict(type='CosineAnnealingRestartLR', periods=[600000], restart_weights=[1],
                                      eta_min=1e-6)
    assert train['total_iter'] == 600000 and train['deploy_export'] is True and opt['val']['deploy'] is True
    net = SAFMN(**{k: v for k, v in opt['network_g'].items() if k != 'type'})
    assert net.network_opt == SAFMN(preset='ntire23_esr').network_opt | {'preset': None}
    assert n_params(net) == 238_920 and n_params(rtsr_arch.reparameterize(net)) == 237_000
