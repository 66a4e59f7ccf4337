"""LGTT specifics (NTIRE 2023 ESR, FRL Team 0; Li et al., CVPRW 2023, §4.27, Figs. 43-44; official code
and weights Jinchen2028/NTIRE2023_ESR ``models/team03_LGTT.py``, ``model_zoo/team03_LGTT.pth``): the
official state-dict layout (with BatchNorm buffers); an independent functional forward on the
official keys computing on [0, 255] images (windows attended one by one), against which the official
checkpoint, loaded by ``rtsr_arch.load_model`` with auto-detection, is compared on real photographs;
the quirks kept (q as its own key without scale, reflect padding and its minimum input of 19,
circular pixel mixer, the window shift of GTModelers at odd block indices) and why the network is
neither tile-exact nor declared fp16-safe. Keyword errors, counts, padding and ONNX export:
test_contract.py; NTIRE counters: test_ntire23_counts.py."""
import pytest
import torch
from torch.nn import functional as F

from helpers import check_official_weights, lr_photos, official_fixture, photo, photos, randomize
from reference import batch_norm, conv_same, frl_skeleton, shift_conv1x1, swish
from rtsr_arch.archs import lgtt_arch
from rtsr_arch.archs.lgtt_arch import LGTT, import_official_lgtt, pixel_mixer
from rtsr_arch.loader import load_model, resolve_checkpoint
from rtsr_arch.utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures('torch_single_thread')


# ----------------------------------------------------------------------------- reference forward
# From the report (§4.27: a multi-window, multi-head striped-window self-attention block per group,
# pixel mixers with BatchNorm elsewhere, shift-conv MLPs) and the official code's conventions (q as
# its own key, no scale; reflect padding; windows 36x8 then 8x36; heads head-major).

def pixel_mixer_reference(x):
    """Circular padding 1, then a depthwise one-hot 3x3 kernel per channel: c mod 5 = 0 takes the
    right neighbour, 1 the left, 2 the one below, 3 the one above, 4 itself."""
    c = x.shape[1]
    mask = torch.zeros(c, 1, 3, 3, dtype=x.dtype)
    mask[0::5, 0, 1, 2] = 1
    mask[1::5, 0, 1, 0] = 1
    mask[2::5, 0, 2, 1] = 1
    mask[3::5, 0, 0, 1] = 1
    mask[4::5, 0, 1, 1] = 1
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode='circular'), mask, groups=c)


def window_attention_reference(s, window, heads, shift):
    """One channel slice [q | v] attended window by window (a Python loop over the windows)."""
    b, c, h, w = s.shape
    wh, ww = window
    s = F.pad(s, (0, -w % ww, 0, -h % wh), mode='reflect')
    if shift:
        s = torch.roll(s, shift, dims=(2, 3))
    d = c // 2 // heads
    out = torch.zeros(b, c // 2, *s.shape[2:], dtype=s.dtype)
    for i in range(0, s.shape[2], wh):
        for j in range(0, s.shape[3], ww):
            win = s[:, :, i:i + wh, j:j + ww].reshape(b, 2, heads, d, wh * ww)
            q, v = win[:, 0], win[:, 1]
            attn = torch.softmax(torch.einsum('bhdn,bhdm->bhnm', q, q), dim=-1)
            out[:, :, i:i + wh, j:j + ww] = torch.einsum('bhnm,bhdm->bhdn', attn, v).reshape(b, c // 2, wh, ww)
    if shift:
        out = torch.roll(out, (-shift[0], -shift[1]), dims=(2, 3))
    return out[:, :, :h, :w]


@torch.no_grad()
def lgtt_reference(sd, x255, heads=3, windows=((36, 8), (8, 36)), act=swish):
    """Official LGTT on an image in [0, 255]; returns the [0, 255] output. A GTModeler at an odd
    block index shifts its windows by half their size (the official shift_list)."""
    groups = sorted({int(k.split('.')[1]) for k in sd if k.startswith('body.')})

    def body(x):
        for g in groups:
            blocks = sorted({int(k.split('.')[3]) for k in sd if k.startswith(f'body.{g}.mlp_list.')})
            for j in blocks:
                p = f'body.{g}.sa_list.{j}'
                if f'{p}.attn.0.weight' in sd:
                    qkv = batch_norm(conv_same(x, sd, f'{p}.attn.0'), sd, f'{p}.attn.1')
                    slices = qkv.chunk(len(windows), dim=1)
                    outs = [window_attention_reference(s, win, heads, (win[0] // 2, win[1] // 2) if j % 2 else None)
                            for s, win in zip(slices, windows)]
                    x = x + conv_same(torch.cat(outs, dim=1), sd, f'{p}.proj.0')
                else:
                    x = x + batch_norm(pixel_mixer_reference(x) - x, sd, f'{p}.norm')
                m = f'body.{g}.mlp_list.{j}'
                x = x + shift_conv1x1(act(shift_conv1x1(x, sd, f'{m}.fc1')), sd, f'{m}.fc2')
        return x
    return frl_skeleton(sd, x255, body)


# ----------------------------------------------------------------------------- layout

def test_lgtt_state_dict_layout_is_official():
    """Jinchen2028/NTIRE2023_ESR ``team03_LGTT.pth``: 236 tensors (BatchNorm buffers included),
    115,248 parameters: per group one GTModeler (2,910), five LTModeler BatchNorms (60 each), six
    shift-conv MLPs (3,690 each)."""
    model = LGTT()
    sd = model.state_dict()
    expected = {'head.weight': (30, 3, 3, 3), 'head.bias': (30,), 'tail.0.weight': (48, 30, 3, 3), 'tail.0.bias': (48,)}
    bn = ('weight', 'bias', 'running_mean', 'running_var')
    for g in range(4):
        p = f'body.{g}'
        expected.update({f'{p}.sa_list.0.attn.0.weight': (60, 30, 1, 1), f'{p}.sa_list.0.attn.0.bias': (60,),
                         f'{p}.sa_list.0.proj.0.weight': (30, 30, 1, 1), f'{p}.sa_list.0.proj.0.bias': (30,),
                         f'{p}.sa_list.0.attn.1.num_batches_tracked': ()})
        expected.update({f'{p}.sa_list.0.attn.1.{n}': (60,) for n in bn})
        for j in range(1, 6):
            expected.update({f'{p}.sa_list.{j}.norm.{n}': (30,) for n in bn})
            expected[f'{p}.sa_list.{j}.norm.num_batches_tracked'] = ()
        for j in range(6):
            expected.update({f'{p}.mlp_list.{j}.fc1.weight': (60, 30, 1, 1), f'{p}.mlp_list.{j}.fc1.bias': (60,),
                             f'{p}.mlp_list.{j}.fc2.weight': (30, 60, 1, 1), f'{p}.mlp_list.{j}.fc2.bias': (30,)})
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert len(sd) == 236 and sum(p.numel() for p in model.parameters()) == 115_248
    assert sum(v.numel() for v in sd.values()) == 115_248 + 1_704


def test_lgtt_equals_reference_forward_random_weights():
    """Random weights and BatchNorm statistics, float64, three configurations (the second has two
    GTModelers per group, so block 1 shifts its windows; the third has none): the network on
    [0, 1] equals the reference on [0, 255] / 255 at sizes that are and are not window multiples,
    down to the smallest input."""
    configs = ((dict(num_feat=10, num_group=2, num_block=2, num_heads=1, window_long=6, window_short=2),
                dict(heads=1, windows=((6, 2), (2, 6)))),
               (dict(num_feat=20, num_group=1, num_block=3, num_heads=2, num_gtmodeler=2, window_long=8,
                     window_short=4, upscale=3), dict(heads=2, windows=((8, 4), (4, 8)))),
               (dict(num_feat=10, num_group=1, num_block=2, num_gtmodeler=0, mlp_ratio=1, upscale=2, act_type='gelu'),
                dict(act=F.gelu)))
    for kwargs, ref_kwargs in configs:
        model = randomize(LGTT(**kwargs), seed=4, std=1.0, fan_in=True).double().eval()
        sd = model.state_dict()
        s = model.min_input_size
        for h, w in ((s, s), (16, 24), (19, 13)):
            x = photos(max(h, s), max(w, s), torch.float64)
            with torch.no_grad():
                ref = lgtt_reference(sd, 255 * x, **ref_kwargs) / 255
                err = (model(x) - ref).abs().max().item()
            assert err <= 1e-12 * max(1.0, ref.abs().max().item()), (kwargs, h, w, err)


def test_lgtt_official_checkpoint_reproduces_the_reference():
    """``team03_LGTT.pth`` through ``load_model`` (auto-detected; heads, windows and activation
    assumed as the official defaults) equals the reference on two photographs (LR of the NTIRE
    degradation, 32x48: partial windows on both axes, 32 rows in 36-row windows and 48 columns in
    36-column ones): float32 to rounding, float64 to ~1e-12; and it super-resolves (well above
    bicubic), which confirms the [0, 255] range."""
    path = official_fixture('lgtt.pth')
    resolved = resolve_checkpoint(path)
    assert resolved.how == 'official LGTT checkpoint'
    model = check_official_weights(path, lambda sd, x: lgtt_reference(sd, 255 * x) / 255,
                                   load_checkpoint(path)['params'], LGTT, tol32=1e-5, min_gain=2)
    assert model.upscale == 4 and model.min_input_size == 19


# ----------------------------------------------------------------------------- quirks

def test_lgtt_importer_assumes_what_the_weights_do_not_say():
    result = import_official_lgtt(LGTT(num_feat=20, num_group=2, num_block=4, num_heads=5, num_gtmodeler=2,
                                       mlp_ratio=3, upscale=2).state_dict(), {})
    opt = result.network_opt
    assert (opt['num_feat'], opt['num_group'], opt['num_block'], opt['num_gtmodeler'], opt['mlp_ratio'],
            opt['upscale']) == (20, 2, 4, 2, 3, 2)
    assert set(result.assumed) == {'num_heads', 'window_long', 'window_short', 'act_type', 'deploy'}
    assert (opt['num_heads'], opt['window_long'], opt['window_short']) == (3, 36, 8)


def test_lgtt_minimum_input_is_19():
    """Reflect padding to a multiple of 36 needs a pad smaller than the side: 18 rows fail, 19 work."""
    model = LGTT(num_feat=10, num_group=1, num_block=1, num_heads=1).eval()
    assert model.min_input_size == 19
    with torch.no_grad():
        assert model(photo('coffee', 19, 40)).shape == (1, 3, 76, 160)
        with pytest.raises(RuntimeError):
            model(photo('coffee', 18, 40))


def test_lgtt_pixel_mixer_wraps_around_and_is_not_tile_exact():
    """The pixel mixer is circular (a border pixel takes the opposite border's value), and windows
    start at the image origin with reflected padding: the same pixels inside a larger image come
    out differently, so the network declares ``tile_exact = False``."""
    x = torch.arange(5 * 4 * 6, dtype=torch.float64).view(1, 5, 4, 6)
    assert torch.equal(pixel_mixer(x), pixel_mixer_reference(x))
    assert pixel_mixer(x)[0, 0, 0, -1] == x[0, 0, 0, 0]  # right neighbour of the last column: the first
    model = randomize(LGTT(num_feat=10, num_group=1, num_block=2, num_heads=1, window_long=6, window_short=2), seed=1,
                      std=1.0, fan_in=True).double().eval()
    assert not model.tile_exact and model.receptive_radius is None
    big = photo('astronaut', 40, 40, dtype=torch.float64)
    with torch.no_grad():
        inner = model(big[..., 9:31, 9:31])[..., 24:64, 24:64]
        whole = model(big)[..., 60:100, 60:100]
    assert (inner - whole).abs().max() > 1e-3


def test_lgtt_attention_is_unscaled_and_fp16_unsafe(monkeypatch):
    """The attention logits are q·qᵀ without 1/√d: with the released weights they stay below ~60 on
    photographs (float16 is then accurate to ~2e-3), but nothing bounds them for other weights
    (random initialization: ~1e5, beyond float16's 65504, so float16 gives NaN): the network does
    not declare itself fp16-safe."""
    peaks = []
    softmax = torch.softmax

    def spy(t, dim):
        peaks.append(t.abs().max().item())
        return softmax(t, dim=dim)
    monkeypatch.setattr(lgtt_arch.torch, 'softmax', spy)
    random = randomize(LGTT(num_feat=10, num_group=1, num_block=2, num_heads=1, window_long=6, window_short=2),
                       seed=0, std=1.0, fan_in=True).eval()
    x = photos(24, 24)
    with torch.no_grad():
        random(x)
        assert max(peaks) > 65504
        assert not torch.isfinite(random.half()(x.half())).all()
    assert not LGTT.fp16_safe
    model = load_model(official_fixture('lgtt.pth'))
    peaks.clear()
    x = lr_photos()[1]
    with torch.no_grad():
        y32 = model(x)
        assert max(peaks) < 100
        y16 = model.half()(x.half()).float()
    err = (y16 - y32).abs().max().item()
    print(f'LGTT released weights: logits peak {max(peaks):.1f}, float16 vs float32 max |diff| {err:.3g}')
    assert err <= 5e-3
