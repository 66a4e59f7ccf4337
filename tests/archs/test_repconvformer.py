"""RepConvFormer / CFSR specifics (NTIRE 2023 ESR report §4.29, team AIIA-SR; official code
Aitical/NTIRE23_ESR_AIIASR@918244d ``models/team38_RepConvFormer.py``, MIT): the official state-dict
layouts (deploy ``a.2.lkb_reparam``; training ``a.2.lkb_origin`` + ``a.2.small_conv``), an
independent functional reference on the official keys, the released ``team38_repconvformer.pth``
loaded through ``rtsr_arch.load_model`` against it on real photographs, the training form's exact
merge, the mean handling, the layer residual, the importer and the recipe. Fusion, keyword errors
and the generic checks are in test_contract.py; the NTIRE 2023 ESR counts in test_ntire23_counts.py.
"""
import pytest
import torch
from torch.nn import functional as F

import rtsr_arch
from helpers import check_official_weights, check_recipe_network, check_reference_and_fusion, load_official, \
    load_recipe, n_params, official_fixture, photo, randomize, state_layout
from reference import conv, count_blocks, layer_norm_2d, upsample
from rtsr_arch.archs.official import find_importers
from rtsr_arch.archs.repconvformer_arch import RepConvFormer, import_official_repconvformer
from rtsr_arch.loader import read_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')

MEAN = (0.4488, 0.4371, 0.4040)  # the official rgb_mean (DIV2K)


# ======================================================================= independent reference
# team38_RepConvFormer.py (LayerNorm channels_first, ReparamLargeKernelConv, MLP, ConvMod, Block,
# Layer, UpsampleOneStep, RepConvFormer with upsampler='pixelshuffledirect', img_range 1), on the
# official keys with torch.nn.functional only.

def _large_kernel(t, sd, p):
    c = t.shape[1]
    if f'{p}.lkb_reparam.weight' in sd:
        k = sd[f'{p}.lkb_reparam.weight'].shape[-1]
        return conv(t, sd, f'{p}.lkb_reparam', padding=k // 2, groups=c)
    k = sd[f'{p}.lkb_origin.weight'].shape[-1]
    out = conv(t, sd, f'{p}.lkb_origin', padding=k // 2, groups=c)
    if f'{p}.small_conv.weight' in sd:
        out = out + conv(t, sd, f'{p}.small_conv', padding=sd[f'{p}.small_conv.weight'].shape[-1] // 2, groups=c)
    return out


def repconvformer_reference(sd, x):
    """The official RepConvFormer forward on ``x`` in [0, 1] (data range 1.0, img_range 1)."""
    # the official ``torch.Tensor(rgb_mean)`` (float32), cast with ``type_as(x)``
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1).to(x.dtype) if x.shape[1] == 3 else 0.0
    y = fea = conv(x - mean, sd, 'conv_first', padding=1)
    for i in range(count_blocks(sd, 'layers.')):
        for j in range(count_blocks(sd, f'layers.{i}.blocks.')):
            p = f'layers.{i}.blocks.{j}'
            n = layer_norm_2d(y, sd, f'{p}.attn.norm')
            a = _large_kernel(F.gelu(conv(n, sd, f'{p}.attn.a.0')), sd, f'{p}.attn.a.2')
            y = y + sd[f'{p}.layer_scale_1'].view(1, -1, 1, 1) * conv(a * conv(n, sd, f'{p}.attn.v'), sd,
                                                                       f'{p}.attn.proj')
            t = F.gelu(conv(layer_norm_2d(y, sd, f'{p}.mlp.norm'), sd, f'{p}.mlp.fc1'))
            t = t + F.gelu(conv(t, sd, f'{p}.mlp.pos', padding=1, groups=t.shape[1]))
            y = y + sd[f'{p}.layer_scale_2'].view(1, -1, 1, 1) * conv(t, sd, f'{p}.mlp.fc2')
        y = conv(y, sd, f'layers.{i}.conv') + y  # the official Layer: conv(x) + x on the blocks' output
    y = conv(layer_norm_2d(y, sd, 'norm'), sd, 'conv_after_body', padding=1) + fea
    return upsample(y, sd, 'upsample.0', x.shape[1]) + mean


# ======================================================================= layouts

def test_repconvformer_deploy_layout_is_the_official_one():
    """RepConvFormer(..., small_kernel_merged=True): 252 tensors, 306,912 parameters; the mean is not
    in the state dict."""
    model = RepConvFormer(deploy=True)
    layout = state_layout(model)
    assert len(layout) == 252 and n_params(model) == 306_912 and 'mean' not in layout
    p = 'layers.1.blocks.5'
    assert layout[f'{p}.attn.a.2.lkb_reparam.weight'] == (48, 1, 9, 9) and layout[f'{p}.layer_scale_1'] == (48,)
    assert layout[f'{p}.mlp.fc1.weight'] == (96, 48, 1, 1) and layout[f'{p}.mlp.pos.weight'] == (96, 1, 3, 3)
    assert layout['layers.0.conv.weight'] == (48, 48, 1, 1) and layout['norm.weight'] == (48,)
    assert layout['upsample.0.weight'] == (48, 48, 3, 3)
    assert state_layout(rtsr_arch.reparameterize(RepConvFormer())) == layout


def test_repconvformer_training_layout():
    """small_kernel_merged=False: every a.2 holds lkb_origin (9x9) + small_conv (7x7), 335,712 parameters."""
    layout = state_layout(RepConvFormer())
    assert layout['layers.0.blocks.0.attn.a.2.lkb_origin.weight'] == (48, 1, 9, 9)
    assert layout['layers.0.blocks.0.attn.a.2.small_conv.weight'] == (48, 1, 7, 7)
    assert not any('lkb_reparam' in k for k in layout) and n_params(RepConvFormer()) == 335_712


# ======================================================================= the released weights

def test_repconvformer_official_weights_match_the_reference():
    """``team38_repconvformer.pth`` through load_model (auto-detected) reproduces the independent
    reference on photographs to float32 rounding (float64: ~1e-12) and beats bicubic."""
    check_official_weights(official_fixture('repconvformer.pth'), repconvformer_reference,
                           load_official('repconvformer.pth'), RepConvFormer, 306_912,
                           {'type': 'RepConvFormer', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 48, 'num_block': 6,
                            'num_layer': 2, 'upscale': 4, 'kernel_size': 9, 'small_kernel': 7, 'mlp_ratio': 2,
                            'deploy': True}, tol32=5e-6)


def test_repconvformer_official_file_is_detected_only_as_repconvformer():
    assert [m.arch for m, _ in find_importers(read_checkpoint(official_fixture('repconvformer.pth'))[0])] == ['RepConvFormer']


# ======================================================================= training form, mean, residuals

@pytest.mark.parametrize('kwargs', [dict(num_feat=6, num_block=2, num_layer=2, kernel_size=5, small_kernel=3),
                                    dict(num_feat=4, num_block=1, num_layer=1, upscale=2, mlp_ratio=3),
                                    dict(num_feat=4, num_block=1, num_layer=1, upscale=3, kernel_size=3,
                                         small_kernel=None, num_in_ch=1, num_out_ch=1)])
def test_repconvformer_training_form_matches_the_reference_and_merges_exactly(kwargs):
    """The training form equals the reference (lkb_origin + small_conv); the merged state dict
    through the reference deploy forward gives the same output on every pixel."""
    model = randomize(RepConvFormer(**kwargs), seed=4, std=1.0, fan_in=True).double().eval()
    c = model.conv_first.in_channels
    inputs = [photo('astronaut', h, w, dtype=torch.float64, batch=2)[:, :c] for h, w in ((1, 1), (6, 9))]
    check_reference_and_fusion(model, repconvformer_reference, inputs, gone=('small_conv', 'lkb_origin'))


def test_repconvformer_mean_is_a_buffer_added_back_at_the_output():
    """DIV2K's mean is subtracted from the input and added to the output (a non-persistent buffer,
    as the official plain tensor attribute): a network with zero weights outputs the mean; for
    grayscale images the mean is 0."""
    model = RepConvFormer(num_feat=4, num_block=1, num_layer=1)
    assert 'mean' in dict(model.named_buffers()) and 'mean' not in model.state_dict()
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        y = model(photo('coffee', 5, 6))
    assert torch.allclose(y, torch.tensor(MEAN).view(1, 3, 1, 1).expand_as(y))
    assert torch.equal(RepConvFormer(num_in_ch=1, num_out_ch=1, num_feat=4).mean, torch.zeros(1, 1, 1, 1))
    assert RepConvFormer(num_feat=4).half().mean.dtype == torch.float16  # follows the network's dtype


def test_repconvformer_layer_residual_is_around_the_1x1_conv_only():
    """As the official ``Layer.forward`` (``for blk: x = blk(x); return self.conv(x) + x``): the
    residual adds the blocks' output, not the layer's input."""
    layer = randomize(RepConvFormer(num_feat=4, num_block=1, num_layer=1, deploy=True), seed=8).layers[0].double()
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        blocks = layer.blocks[0](x)
        assert torch.equal(layer(x), layer.conv(blocks) + blocks)
        assert (layer(x) - (layer.conv(blocks) + x)).abs().max() > 1e-3


def test_repconvformer_refuses_inconsistent_keywords():
    with pytest.raises(ValueError, match=r'^RepConvFormer: small_kernel=7: expected at most kernel_size=5'):
        RepConvFormer(kernel_size=5)
    with pytest.raises(ValueError, match=r'^RepConvFormer: num_out_ch=1: expected num_in_ch=3'):
        RepConvFormer(num_out_ch=1)
    with pytest.raises(ValueError, match=r'^RepConvFormer: kernel_size=8'):
        RepConvFormer(kernel_size=8)


# ======================================================================= importer

def test_repconvformer_importer_reads_both_forms():
    """The training form determines every keyword; a deploy form cannot tell the small kernel (merged
    away): the official 7 is assumed when it fits, with a note."""
    model = RepConvFormer(num_feat=4, num_block=2, num_layer=3, upscale=3, kernel_size=7, small_kernel=5,
                          mlp_ratio=3)
    result = import_official_repconvformer(model.state_dict(), {})
    assert result.assumed == () and result.network_opt == model.network_opt
    deployed = import_official_repconvformer(rtsr_arch.reparameterize(model).state_dict(), {})
    assert deployed.assumed == ('small_kernel',) and 'small_kernel' in deployed.notes[0]
    assert deployed.network_opt == {**model.network_opt, 'small_kernel': 7, 'deploy': True}


def test_repconvformer_importer_refuses_layers_of_different_depths():
    sd = RepConvFormer(num_feat=4, num_block=2, num_layer=2).state_dict()
    for k in [k for k in sd if k.startswith('layers.1.blocks.1.')]:
        del sd[k]
    with pytest.raises(ValueError, match='different depths'):
        import_official_repconvformer(sd, {})


# ======================================================================= recipe

def test_repconvformer_recipe():
    """Report §4.29: DIV2K + Flickr2K bicubic x4, 64x64 LR patches, batch 16, Adam (0.9, 0.99), lr 2e-4,
    L1; the training form (9x9 + 7x7) validated merged."""
    opt = load_recipe('RepConvFormer', 'train_RepConvFormer_x4_L1')
    train, data = opt['train'], opt['datasets']['train']
    assert [loss['type'] for loss in train['losses']] == ['L1Loss']
    assert train['optim_g']['type'] == 'Adam' and train['optim_g']['betas'] == [0.9, 0.99]
    assert train['optim_g']['lr'] == 2e-4
    assert data['gt_size'] == 256 and data['batch_size_per_gpu'] * opt['num_gpu'] == 16
    assert data['type'] == 'PairedImageDataset' and 'DF2K' in data['dataroot_gt']
    assert opt['val']['deploy'] is True
    check_recipe_network(opt['network_g'], RepConvFormer, 335_712, 306_912)
