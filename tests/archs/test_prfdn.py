"""PRFDN specifics (NTIRE 2023 ESR report §4.21, team SEU_CNII, "Expand Big, Then Shrink" RFDN;
official code yindaheng98/NTIRE2023_ESR@9d5f418 ``models/rfdn_half/``, MIT): the released
``PRFDN_28.992.pth`` is a whole pickled module (``torch.save(model)`` of ``RFDNEXP``): read by the
restricted reader without running its code, its structure inspected as data, its state dict
loaded through ``rtsr_arch.load_model`` (auto-detected) against an independent functional reference
on real photographs; what tells a PRFDN state dict from an RFDN one (the ESA width), the importer
and the recipe. The generic checks are in test_contract.py; the NTIRE 2023 ESR counts in
test_ntire23_counts.py.
"""
import pytest
import torch

from helpers import check_half_precision, check_official_weights, check_recipe_network, load_recipe, lr_photos, \
    official_fixture
from reference import rfdn_forward
from rtsr_arch.archs.official import PickledModuleStateDict, find_importers, official_state_dict
from rtsr_arch.archs.prfdn_arch import PRFDN, import_official_prfdn, is_prfdn_state_dict
from rtsr_arch.archs.rfdn_arch import RFDN
from rtsr_arch.loader import read_checkpoint, resolve_checkpoint
from rtsr_arch.utils.checkpoint import PickledPlaceholder, load_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')

SLOPE = 0.05


# ======================================================================= independent reference
# models/rfdn_half/RFDNEXP.py (RFDNEXP, RFDB_EXP) and models/rfdn_baseline/block.py (ESA, the
# forward ESA_EXP inherits) compute RFDN's forward (reference.rfdn_forward: RFDBs with RFDN's ESA,
# LeakyReLU 0.05) at other widths, in data range 255.

def prfdn_reference(sd, x):
    """The official forward on RGB ``x`` in [0, 1]: the network runs on x * 255 (data range 255) and
    its output is divided by 255."""
    return rfdn_forward(sd, x * 255.0, SLOPE) / 255.0


# ======================================================================= the pickled module

def test_prfdn_file_is_a_pickled_module_read_as_data():
    """``torch.load(weights_only=True)`` refuses the file (it names the team's classes); the restricted
    reader rebuilds its tensors and records every other object as an inert placeholder, so its
    structure can be checked without running any of its code: RFDNEXP -> RFDB_EXP blocks with one
    LeakyReLU(0.05) each, ESA_EXP with conv2 3x3 stride 2 padding 0 and an in-place ReLU, the
    upsampler a 3x3 conv then PixelShuffle(4)."""
    path = official_fixture('prfdn_seu.pth')
    with pytest.raises(Exception):
        torch.load(path, map_location='cpu', weights_only=True)
    obj = load_checkpoint(path)
    assert isinstance(obj, PickledPlaceholder) and obj.pickled_name == 'models.rfdn_half.RFDNEXP.RFDNEXP'
    modules = obj._modules
    assert list(modules) == ['fea_conv', 'B1', 'B2', 'B3', 'B4', 'c', 'LR_conv', 'upsampler']
    block = modules['B1']._modules
    assert modules['B1'].pickled_name == 'models.rfdn_half.RFDNEXP.RFDB_EXP'
    assert block['act'].pickled_name == 'torch.nn.modules.activation.LeakyReLU' and block['act'].negative_slope == SLOPE
    assert modules['c']._modules['1'].negative_slope == SLOPE
    esa = block['esa']
    assert esa.pickled_name == 'models.rfdn_half.block.ESA_EXP'
    assert (esa._modules['conv2'].stride, esa._modules['conv2'].padding) == ((2, 2), (0, 0))
    assert esa._modules['relu'].pickled_name == 'torch.nn.modules.activation.ReLU'
    assert modules['upsampler']._modules['1'].upscale_factor == 4
    sd = official_state_dict(obj)
    assert isinstance(sd, PickledModuleStateDict) and sd.pickled_class == obj.pickled_name
    assert len(sd) == 128 and sum(v.numel() for v in sd.values()) == 616_312


def test_prfdn_file_keeps_the_zero_expansion_of_fea_conv():
    """The network was expanded from a trained RFDN (C 50) by zero-padding its convs: fea_conv's
    extra ten output channels are still exactly zero in the released file."""
    sd = official_state_dict(load_checkpoint(official_fixture('prfdn_seu.pth')))
    assert sd['fea_conv.weight'].shape == (60, 3, 3, 3)
    assert not sd['fea_conv.weight'][50:].any() and not sd['fea_conv.bias'][50:].any()
    assert sd['fea_conv.weight'][:50].abs().max() > 0.01
    assert sd['B1.esa.conv1.weight'].shape == (14, 60, 1, 1)  # ESA 14, not 60 // 4 = 15


def test_prfdn_official_weights_match_the_reference():
    """``PRFDN_28.992.pth`` through load_model (auto-detected; the import notes say it is a pickled
    module read without running its code) reproduces the independent reference on photographs to
    float32 rounding (float64: ~1e-12) and beats bicubic."""
    path = official_fixture('prfdn_seu.pth')
    resolved = resolve_checkpoint(path)
    assert resolved.how == 'official PRFDN checkpoint'
    assert any('pickled module' in note and 'without running its code' in note for note in resolved.notes)
    check_official_weights(path, prfdn_reference, dict(resolved.state_dict), PRFDN, 616_312,
                           {'type': 'PRFDN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 60, 'num_block': 4,
                            'upscale': 4, 'act_type': 'lrelu', 'esa_channels': 14, 'deploy': True}, tol32=5e-6)


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_prfdn_official_weights_in_half_precision(dtype, tol):
    """fp16_safe: the [0, 255] features of the released network stay within float16's range."""
    check_half_precision(official_fixture('prfdn_seu.pth'), lr_photos()[1], dtype, tol)


# ======================================================================= PRFDN vs RFDN

def test_prfdn_is_told_from_rfdn_by_its_esa_width():
    """Same keys as RFDN; the ESA width other than C // 4 is PRFDN's (the official file: C 60, f 14),
    C // 4 is RFDN's (the official RFDN always uses C // 4); PRFDN refuses f = C // 4."""
    assert is_prfdn_state_dict(PRFDN().state_dict()) and is_prfdn_state_dict(PRFDN(num_feat=8, esa_channels=3)
                                                                             .state_dict())
    assert not is_prfdn_state_dict(RFDN().state_dict()) and not is_prfdn_state_dict(RFDN(num_feat=60).state_dict())
    assert set(PRFDN().state_dict()) == set(RFDN().state_dict())
    with pytest.raises(ValueError, match=r'^PRFDN: esa_channels=15: expected anything but num_feat // 4 = 15'):
        PRFDN(esa_channels=15)


def test_prfdn_detection_is_unique():
    """The released file and PRFDN state dicts are claimed by PRFDN's importer only, RFDN's by RFDN's.
    (Needs RFDN's detection to leave ESA widths other than C // 4 to PRFDN.)"""
    assert [m.arch for m, _ in find_importers(read_checkpoint(official_fixture('prfdn_seu.pth'))[0])] == ['PRFDN']
    assert [m.arch for m, _ in find_importers(PRFDN(num_feat=8, esa_channels=3).state_dict())] == ['PRFDN']
    assert 'PRFDN' not in [m.arch for m, _ in find_importers(RFDN().state_dict())]


def test_prfdn_importer_infers_the_shapes():
    model = PRFDN(num_feat=12, num_block=3, upscale=2, esa_channels=5)
    result = import_official_prfdn(model.state_dict(), {})
    assert set(result.assumed) == {'act_type', 'deploy'} and result.network_opt == model.network_opt
    assert not any('pickled' in note for note in result.notes)  # a plain state dict


# ======================================================================= recipe

def test_prfdn_recipe():
    """Report §4.21: LSDIR, Adam, lr 1e-5, 300 epochs; starts from the converted released weights."""
    opt = load_recipe('PRFDN', 'train_PRFDN_x4_LSDIR_finetune')
    train, data = opt['train'], opt['datasets']['train']
    assert train['optim_g']['type'] == 'Adam' and train['optim_g']['lr'] == 1e-5
    assert 'LSDIR' in data['dataroot_gt'] and data['type'] == 'PairedImageDataset'
    assert train['total_iter'] == 300 * -(-84_991 // (data['batch_size_per_gpu'] * opt['num_gpu']))
    check_recipe_network(opt['network_g'], PRFDN, 616_312)
