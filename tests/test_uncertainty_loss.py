"""UncertaintyMSELoss, SAFMN++'s pixel loss (AIS 2024 RTSR survey §3.3: "uncertainty-based MSE
loss [Hamilton et al. 2020; FeatUp, ICLR 2024] and FFT-based L1 loss"): the formula against a
direct computation, FeatUp's scale head, the maximum-likelihood meaning of the scale, the guard
against unoptimized scale parameters, and training on real photographs (with the FFT term as the
recipe uses it)."""
import math

import pytest
import torch
from torch.nn import functional as F

import rtsr_arch  # noqa: F401  (registers the losses)
from basicsr.losses import build_loss
from basicsr.models import build_model
from basicsr.utils.registry import LOSS_REGISTRY
from helpers import ROOT, photo
from rtsr_arch.archs.safmnpp_arch import SAFMNPP
from rtsr_arch.losses.frequency_loss import FFTLoss
from rtsr_arch.losses.uncertainty_loss import ScaleNet, UncertaintyMSELoss, gaussian_nll
from rtsr_arch.models.rtsr_model import loss_log_name
from rtsr_arch.utils.options import load_options

pytestmark = pytest.mark.usefixtures('torch_single_thread')


def _photo_pair(dtype=torch.float64):
    """Real photographs (target) and a noisy, blurred prediction of them."""
    target = torch.cat([photo('astronaut', 32, 40, dtype=dtype), photo('coffee', 32, 40, dtype=dtype)])
    g = torch.Generator().manual_seed(1)
    pred = F.avg_pool2d(target, 3, 1, 1, count_include_pad=False) + 0.03 * torch.randn(target.shape, generator=g,
                                                                                       dtype=dtype)
    return pred, target


def test_registered_and_named():
    assert 'UncertaintyMSELoss' in LOSS_REGISTRY
    loss = build_loss({'type': 'UncertaintyMSELoss', 'loss_weight': 1.0})
    assert isinstance(loss, UncertaintyMSELoss) and loss.mode == 'predicted'
    assert loss_log_name({'type': 'UncertaintyMSELoss'}) == 'l_uncertainty_mse'
    with pytest.raises(ValueError, match="scale='local'"):
        UncertaintyMSELoss(scale='local')
    with pytest.raises(ValueError):
        UncertaintyMSELoss(reduction='avg')


def test_predicted_scale_matches_featup_formula():
    """L = mean((p - t)^2 / (2 s^2) + log s), s = max(exp(conv1x1(t) + 0.1), 1e-4), written out."""
    pred, target = _photo_pair()
    loss = UncertaintyMSELoss(loss_weight=0.7).double()
    w, b = loss.scale_net.net.weight, loss.scale_net.net.bias
    assert w.shape == (1, 3, 1, 1) and b.shape == (1,) and sum(p.numel() for p in loss.parameters()) == 4
    s = torch.exp(torch.einsum('nchw,c->nhw', target, w.view(3)) + b + 0.1).clamp_min(1e-4).unsqueeze(1)
    expected = 0.7 * ((pred - target) ** 2 / (2 * s ** 2) + torch.log(s)).mean()
    torch.testing.assert_close(loss(pred, target), expected, rtol=1e-12, atol=1e-14)
    # the reductions, and a pixel weight as BasicSR's MSELoss (weighted mean over the weighted region)
    none = UncertaintyMSELoss(reduction='none').double()
    none.load_state_dict(loss.state_dict())
    elementwise = none(pred, target)
    assert elementwise.shape == pred.shape
    torch.testing.assert_close(0.7 * elementwise.mean(), loss(pred, target))
    mask = torch.zeros(2, 1, 32, 40, dtype=torch.float64)
    mask[..., 4:20, 5:30] = 1
    torch.testing.assert_close(loss(pred, target, mask), 0.7 * elementwise[..., 4:20, 5:30].mean())


def test_featup_initialization():
    """ScaleNet starts at 0.1x PyTorch's init: s close to exp(0.1) everywhere (a plain scaled MSE
    at the start); the floor 1e-4 holds."""
    torch.manual_seed(0)
    net = ScaleNet(3)
    bound = 1 / math.sqrt(3)  # PyTorch's kaiming-uniform bound for a 1x1 conv with 3 inputs
    assert net.net.weight.abs().max() <= 0.1 * bound and net.net.bias.abs().max() <= 0.1 * bound
    s = net(photo('chelsea', 16, 16))
    assert s.shape == (1, 1, 16, 16) and (s.log() - 0.1).abs().max() < 0.2
    with torch.no_grad():
        net.net.bias.fill_(-50.0)
    assert torch.equal(net(photo('chelsea', 16, 16)), torch.full((1, 1, 16, 16), 1e-4))


def test_global_scale_and_given_scale():
    pred, target = _photo_pair()
    loss = UncertaintyMSELoss(scale='global').double()
    assert [n for n, _ in loss.named_parameters()] == ['log_scale']
    assert float(loss.log_scale.detach()) == pytest.approx(0.1)
    s = math.exp(0.1)
    torch.testing.assert_close(loss(pred, target), ((pred - target) ** 2 / (2 * s * s)).mean() + math.log(s))
    given = torch.full((2, 1, 32, 40), 0.05, dtype=torch.float64)  # e.g. a network's own uncertainty map
    torch.testing.assert_close(loss(pred, target, scale=given), gaussian_nll(pred, target, given).mean())
    torch.testing.assert_close(gaussian_nll(pred, target, given), (pred - target) ** 2 / 0.005 + math.log(0.05))


def test_the_scale_is_a_maximum_likelihood_estimate():
    """For a fixed residual, d L / d log s = 1 - mse / s^2 vanishes exactly at s^2 = mse (the normal
    likelihood's variance estimate), and fitting s alone converges there."""
    pred, target = _photo_pair()
    mse = float(((pred - target) ** 2).mean())
    loss = UncertaintyMSELoss(scale='global').double()
    with torch.no_grad():
        loss.log_scale.fill_(0.5 * math.log(mse))
    grad, = torch.autograd.grad(loss(pred, target), loss.log_scale)
    assert abs(float(grad)) < 1e-12
    with torch.no_grad():
        loss.log_scale.fill_(0.0)
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.05)
    for _ in range(400):
        optimizer.zero_grad()
        loss(pred, target).backward()
        optimizer.step()
    assert math.exp(2 * float(loss.log_scale.detach())) == pytest.approx(mse, rel=1e-3)


def test_predicted_scale_learns_heteroscedastic_noise():
    """Noise whose standard deviation depends on the target's intensity, sigma = exp(2 g - 4) with
    g the grey level: FeatUp's ScaleNet fitted alone recovers sigma per pixel."""
    target = torch.cat([photo(name, 48, 48, dtype=torch.float64) for name in ('astronaut', 'coffee', 'chelsea')])
    sigma = torch.exp(2 * target.mean(1, keepdim=True) - 4)
    g = torch.Generator().manual_seed(2)
    pred = target + sigma * torch.randn(target.shape, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    loss = UncertaintyMSELoss().double()
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        loss(pred, target).backward()
        optimizer.step()
    with torch.no_grad():
        s = loss.scale(target)
    ratio = (s / sigma).log().abs()
    print(f'predicted / true sigma: max |log ratio| {float(ratio.max()):.3f}, '
          f'sigma range {float(sigma.min()):.3f}..{float(sigma.max()):.3f}')
    assert float(ratio.max()) < 0.1  # within 10 % everywhere, while sigma itself varies 7x


def _train(model, losses, optimizer, steps=40):
    """Adam steps on real photographs (HR crops, antialiased bicubic LR); returns per-step totals and MSEs."""
    s = model.upscale
    hr = torch.cat([photo(p, 16 * s, 16 * s) for p in ('astronaut', 'coffee', 'chelsea', 'rocket')])
    lq = F.interpolate(hr, scale_factor=1 / s, mode='bicubic', antialias=True, align_corners=False)
    totals, mses = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(lq)
        total = sum(loss(out, hr) for loss in losses)
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
        mses.append(float(F.mse_loss(out.detach(), hr)))
    return totals, mses


def test_loss_falls_when_safmnpp_trains_on_photographs():
    """The recipe's losses (uncertainty MSE + 0.05 x one-sided FFT L1), network and scale head in
    one Adam optimizer: the total and the plain MSE both fall; the scale head moves."""
    torch.manual_seed(0)
    model = SAFMNPP(num_feat=8, num_block=1, upscale=2).train()
    nll = UncertaintyMSELoss()
    fft = FFTLoss(loss_weight=0.05, onesided=True)
    before = [p.detach().clone() for p in nll.parameters()]
    optimizer = torch.optim.Adam(list(model.parameters()) + list(nll.parameters()), lr=2e-3)
    totals, mses = _train(model, [nll, fft], optimizer)
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    mse_first, mse_last = sum(mses[:5]) / 5, sum(mses[-5:]) / 5
    print(f'total {first:.4f} -> {last:.4f}, MSE {mse_first:.5f} -> {mse_last:.5f}')
    assert last < first - 0.1 * abs(first) and mse_last < 0.7 * mse_first
    assert any(not torch.equal(a, b) for a, b in zip(before, nll.parameters()))


def test_fft_term_is_safmns_rfft2_l1():
    """FFTLoss(onesided=True) is the official sunny2109/SAFMN FFTLoss: L1 between the stacked
    real/imaginary parts of torch.fft.rfft2 (unnormalized), averaged."""
    pred, target = _photo_pair()
    fp, ft = torch.fft.rfft2(pred), torch.fft.rfft2(target)
    expected = (torch.stack([fp.real, fp.imag], -1) - torch.stack([ft.real, ft.imag], -1)).abs().mean()
    torch.testing.assert_close(FFTLoss(onesided=True)(pred, target), expected, rtol=1e-12, atol=1e-12)


def test_unoptimized_scale_parameters_are_refused():
    """A training loop whose optimizer leaves the scale head out: the gradients pile up unconsumed
    and the parameters never move, so the loss raises instead of silently being a scaled MSE."""
    torch.manual_seed(0)
    model = SAFMNPP(num_feat=8, num_block=1, upscale=2).train()
    nll = UncertaintyMSELoss(patience=5)
    with pytest.raises(RuntimeError, match='not in the optimizer'):
        _train(model, [nll], torch.optim.Adam(model.parameters(), lr=2e-3), steps=10)
    # evaluation, no-grad and a given scale never trip it
    nll = UncertaintyMSELoss(patience=2)
    pred, target = _photo_pair(torch.float32)
    for _ in range(5):
        nll(pred.requires_grad_(), target).backward()  # pending gradient, unchanged values ...
        with torch.no_grad():
            nll(pred, target)  # ... but not a training call with gradients
        nll(pred, target, scale=torch.ones(1)).backward()
        nll.eval()
        nll(pred, target)
        nll.train()
        nll.zero_grad()


def test_rtsr_model_optimizes_and_saves_the_scale_head(tmp_path):
    """RTSRModel puts a loss's learnable parameters in the optimizer and in the training state."""
    opt = load_options(ROOT / 'options/train/SAFMNPP/train_SAFMNPP_x4_AIS24.yml')
    exp = tmp_path / 'exp'
    opt.update(num_gpu=0, is_train=True, dist=False, rank=0, world_size=1, auto_resume=False, root_path=str(tmp_path))
    opt['path'].update(pretrain_network_g=None, models=str(exp / 'models'), training_states=str(exp / 'states'),
                       experiments_root=str(exp), log=str(exp), visualization=str(exp / 'vis'))
    model = build_model(opt)
    optimized = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    loss = next(c for _, c in model.cri_list if isinstance(c, UncertaintyMSELoss))
    assert all(id(p) in optimized for p in loss.parameters())
    state = model.training_state(0, 1)
    assert set(state['networks']['loss_l_uncertainty_mse']) == set(loss.state_dict())
