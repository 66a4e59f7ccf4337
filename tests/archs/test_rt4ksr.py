"""RT4KSR specifics (Zamfir, Conde, Timofte, CVPRW 2023; official code eduardzamfir/RT4KSR): the
official state-dict layout, the high-frequency branch with and without its gate, the Table 3b
sizes, the Gaussian blur. Fusion, parameter counts and keyword errors are checked for every
architecture by test_contract.py."""
import pytest
import torch
from torch import nn

import rtsr_arch
from helpers import module_names, n_params, photo, randomize
from rtsr_arch.archs.layers import GaussianBlur
from rtsr_arch.archs.rt4ksr_arch import RT4KSR, RT4KSR_SIZES

pytestmark = pytest.mark.usefixtures('torch_single_thread')


def test_rt4ksr_hf_branch_adds_no_deploy_parameters():
    """The released S model's deploy form holds head, hfb and gamma with or without the gate."""
    assert n_params(RT4KSR(hf_gate=True, deploy=True)) == n_params(RT4KSR(deploy=True)) == 44_521


def test_rt4ksr_state_dict_layout_is_official():
    """eduardzamfir/RT4KSR ``rt4ksr_x2.pth`` key layout (without DataParallel's ``module.``); no blur kernel."""
    rrrb_train = ('expand_conv', 'fea_conv', 'reduce_conv')
    train = {'gamma', 'head.0', 'tail.0', 'upsample.0'} | {f'hfb.0.{c}' for c in rrrb_train}
    train |= {f'body.{i}.{m}' for i in range(4) for m in ('norm',) + tuple(f'conv1.{c}' for c in rrrb_train)}
    deploy = {'gamma', 'head.0', 'tail.0', 'upsample.0', 'hfb.0.rep_conv', 'tail.1.rep_conv'}
    deploy |= {f'body.{i}.{m}' for i in range(4) for m in ('norm', 'conv1.rep_conv')}
    train |= {f'tail.1.{c}' for c in rrrb_train}

    assert module_names(RT4KSR()) == train  # 'gamma' stays 'gamma'
    assert module_names(RT4KSR(deploy=True)) == deploy
    assert module_names(rtsr_arch.reparameterize(RT4KSR())) == deploy
    sd = RT4KSR().state_dict()
    assert sd['head.0.weight'].shape == (24, 12, 3, 3) and sd['upsample.0.weight'].shape == (48, 24, 3, 3)
    assert RT4KSR(upscale=3).state_dict()['upsample.0.weight'].shape == (108, 24, 3, 3)
    assert sd['gamma'].shape == (1,)


def _hf_probe(model):
    calls = []
    handles = [m.register_forward_hook(lambda mod, inp, out: calls.append(type(mod).__name__))
               for m in (model.hfb, model.blur)]
    return calls, handles


@pytest.mark.parametrize('deploy', [False, True])
def test_rt4ksr_without_hf_gate_skips_the_hf_branch(deploy):
    model = randomize(RT4KSR(hf_gate=False, deploy=deploy), seed=31, std=1.0, fan_in=True).train()
    calls, _ = _hf_probe(model)
    x = photo('astronaut', 8, 12)
    y = model(x)
    (y * y).mean().backward()
    assert calls == []
    for name, p in model.named_parameters():
        if name.startswith('hfb.') or name == 'gamma':
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().max() > 0, name
    # and its weights do not matter
    with torch.no_grad():
        before = model(x)
        for p in list(model.hfb.parameters()) + [model.gamma]:
            p.add_(1.0)
        assert torch.equal(model(x), before)


@pytest.mark.parametrize('deploy', [False, True])
def test_rt4ksr_with_hf_gate_uses_the_hf_branch(deploy):
    model = randomize(RT4KSR(hf_gate=True, deploy=deploy), seed=32, std=1.0, fan_in=True).train()
    calls, _ = _hf_probe(model)
    x = photo('astronaut', 8, 12)
    y = model(x)
    (y * y).mean().backward()
    assert sorted(calls) == ['GaussianBlur', 'Sequential']
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    with torch.no_grad():
        before = model(x)
        next(model.hfb.parameters()).add_(0.5)
        assert (model(x) - before).abs().max() > 1e-3


def test_rt4ksr_hf_gate_formula_with_torchvision_blur():
    """tail(gamma * body(head(PU(x))) + hfb(head(PU(x - torchvision_blur(x))))) -> conv -> PS."""
    from torchvision.transforms import GaussianBlur as TVBlur

    model = randomize(RT4KSR(hf_gate=True, upscale=3), seed=33, std=1.0, fan_in=True).eval()
    x = photo('chelsea', 10, 14, batch=2)
    with torch.no_grad():
        down = nn.functional.pixel_unshuffle
        deep = model.body(model.head(down(x, 2)))
        hf = model.hfb(model.head(down(x - TVBlur(5, sigma=1.0)(x), 2)))
        ref = model.upsample(model.tail(model.gamma * deep + hf))
        y = model(x)
    assert ref.shape == (2, 3, 30, 42)
    assert (y - ref).abs().max() <= 1e-5 * y.abs().max()


@pytest.mark.parametrize('size', list(RT4KSR_SIZES))
def test_rt4ksr_sizes(size):
    num_block, num_feat = RT4KSR_SIZES[size]
    model = RT4KSR(size=size)
    assert len(model.body) == num_block and model.head[0].out_channels == num_feat
    assert model.tail[1].expand_conv.out_channels == 2 * num_feat


def test_rt4ksr_size_table():
    assert RT4KSR_SIZES == {'XXS': (2, 24), 'XS': (2, 32), 'S': (4, 24), 'M': (4, 32),
                            'L': (6, 24), 'XL': (6, 32), 'XXL': (8, 24), 'XXXL': (8, 32)}
    xl = RT4KSR(size='XL')
    assert len(xl.body) == 6 and xl.head[0].out_channels == 32
    default = RT4KSR()
    assert len(default.body) == 4 and default.head[0].out_channels == 24


# ======================================================================= GaussianBlur

def test_gaussian_blur_equals_torchvision_on_a_photo():
    from torchvision.transforms import GaussianBlur as TVBlur

    x = photo('astronaut', 64, 80, batch=2)
    ours = GaussianBlur(5, 1.0)
    y, ref = ours(x), TVBlur(5, sigma=1.0)(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert (y - ref).abs().max() <= 1e-6
    assert (y - x).abs().max() > 0.05  # it really blurs
    assert torch.equal(ours.high_frequencies(x), x - y)
    assert list(ours.state_dict()) == []  # the kernel is not checkpointed
    # float64 input stays float64 and agrees too
    x64 = x.double()
    assert ours(x64).dtype == torch.float64 and (ours(x64) - ref.double()).abs().max() <= 1e-6
