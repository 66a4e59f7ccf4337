"""rtsr-upscale end to end, in process (``main([...])``): folders of real photographs (PNG crops of
scikit-image samples), a corrupt file, resumable outputs, tiling, AVIF input, the official RT4KSR
x2 checkpoint (eduardzamfir/RT4KSR ``rt4ksr_x2.pth``) and the one-line errors."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rtsr_arch  # noqa: F401
from helpers import load_photo, randomize
from rtsr_arch.commands.upscale import main
from rtsr_arch.inference import upscale_image
from rtsr_arch.loader import load_model, save_model
from rtsr_arch.utils.options import build_network

pytestmark = pytest.mark.usefixtures('torch_single_thread')

FIXTURES = Path(os.environ.get('RTSR_OFFICIAL_FIXTURES')
                or Path(__file__).resolve().parents[2] / 'shared/fixtures/official')
CROPS = {'astronaut': (60, 100, 37, 51), 'coffee': (100, 150, 40, 64), 'chelsea': (80, 120, 33, 33)}


def _read(path):
    with Image.open(path) as img:
        return np.asarray(img.convert('RGB'))


@pytest.fixture
def photos(tmp_path):
    """A folder with three real photo crops (odd sizes) as PNG, and one corrupt PNG."""
    folder = tmp_path / 'in'
    folder.mkdir()
    for name, (top, left, h, w) in CROPS.items():
        Image.fromarray(load_photo(name)[top:top + h, left:left + w]).save(folder / f'{name}.png')
    good = (folder / 'coffee.png').read_bytes()
    (folder / 'broken.png').write_bytes(good[:len(good) // 3])  # a truncated file
    (folder / 'notes.txt').write_text('not an image: ignored in a folder')
    return folder


@pytest.fixture
def small_model(tmp_path):
    """A small random-weight RT4KSR x2 (training form) saved with its options, like rtsr-train's."""
    net = randomize(build_network({'type': 'RT4KSR', 'num_feat': 8, 'num_block': 1, 'upscale': 2}), seed=0,
                    fan_in=True)
    path = tmp_path / 'rt4ksr_small.pth'
    save_model(net, path)
    return path


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_folder_with_a_corrupt_file(photos, small_model, tmp_path, capsys):
    """Three photos -> three PNGs of exactly 2H x 2W equal to upscale_image on the decoded inputs;
    the truncated file is one stderr line naming it; exit status 1; a rerun skips every output
    and --overwrite redoes them."""
    out = tmp_path / 'out'
    assert main([str(small_model), str(photos), '--out', str(out), '--backend', 'torch']) == 1
    captured = capsys.readouterr()
    naming = [line for line in _lines(captured.err) if 'broken.png' in line]
    assert len(naming) == 1 and naming[0].startswith('rtsr-upscale: error: ')
    assert str(photos / 'broken.png') in naming[0]
    assert sorted(p.name for p in out.iterdir()) == ['astronaut_x2.png', 'chelsea_x2.png', 'coffee_x2.png']
    net = load_model(small_model)
    for name, (_, _, h, w) in CROPS.items():
        result = _read(out / f'{name}_x2.png')
        assert result.shape == (2 * h, 2 * w, 3)
        assert np.array_equal(result, upscale_image(net, _read(photos / f'{name}.png')))
    assert re.search(r'3 upscaled x2 \(torch\) .*[0-9.]+ frames/s; 0 skipped .*1 failed', captured.out)

    # resume: existing outputs are skipped (a changed output stays changed), --overwrite redoes them
    marker = np.zeros((2, 2, 3), np.uint8)
    Image.fromarray(marker).save(out / 'chelsea_x2.png')
    assert main([str(small_model), str(photos), '--out', str(out)]) == 1
    assert '0 upscaled x2' in capsys.readouterr().out and _read(out / 'chelsea_x2.png').shape == (2, 2, 3)
    assert main([str(small_model), str(photos / 'chelsea.png'), '--out', str(out), '--overwrite', '--quiet',
                 '--backend', 'torch']) == 0
    assert _read(out / 'chelsea_x2.png').shape == (66, 66, 3)
    assert not [p for p in out.iterdir() if p.name.startswith('.')]  # no temporary files left


def test_explicit_files_suffix_and_usage_errors(photos, small_model, tmp_path, capsys):
    """Explicit files with --suffix; an output that would overwrite an input, a missing model, a
    missing input and bad values are one line and exit status 2 (nothing written)."""
    out = tmp_path / 'out'
    assert main([str(small_model), str(photos / 'astronaut.png'), '--out', str(out), '--suffix', '_sr']) == 0
    assert _read(out / 'astronaut_sr.png').shape == (74, 102, 3)
    capsys.readouterr()
    cases = [  # (argv, what the one line must mention)
        ([str(tmp_path / 'missing.pth'), str(photos), '--out', str(out)], 'missing.pth'),
        ([str(small_model), str(photos / 'astronaut.png'), '--out', str(photos), '--suffix', ''],
         'overwrite the input'),
        ([str(small_model), str(tmp_path / 'nowhere'), '--out', str(out)], 'nowhere'),
        ([str(small_model), str(photos), '--out', str(out), '--tile', '0'], '--tile'),
        ([str(small_model), str(photos), '--out', str(out), '--precision', 'fp8'], 'fp8'),
        ([str(small_model), str(photos), '--out', str(out), '--tile-overlap', '4'], '--tile'),
    ]
    if not torch.cuda.is_available():
        cases.append(([str(small_model), str(photos), '--out', str(out), '--device', 'cuda'], 'CUDA'))
    for argv, mention in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = _lines(captured.err)
        assert len(lines) == 1 and lines[0].startswith('rtsr-upscale: error: ') and mention in lines[0], (argv, lines)
    assert sorted(p.name for p in out.iterdir()) == ['astronaut_sr.png']


def test_avif_input(small_model, tmp_path):
    """An .avif file (libsvtav1, as the AIS 2024 LR images) is decoded by the package's one AVIF
    decoder and upscaled."""
    from rtsr_arch.data.codecs import CodecUnavailableError, avif_decode, avif_encode
    from rtsr_arch.data.resize import to_yuv420p

    img = np.ascontiguousarray(load_photo('rocket')[200:232, 300:348])
    try:
        data = avif_encode(to_yuv420p(img), qp=31)
    except CodecUnavailableError as exc:
        pytest.skip(str(exc))
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'rocket.avif').write_bytes(data)
    assert main([str(small_model), str(tmp_path / 'in'), '--out', str(tmp_path / 'out'), '--quiet',
                 '--backend', 'torch']) == 0
    result = _read(tmp_path / 'out' / 'rocket_x2.png')
    assert np.array_equal(result, upscale_image(load_model(small_model), avif_decode(data)))


@pytest.mark.skipif(not (FIXTURES / 'rt4ksr_x2.pth').is_file(),
                    reason=f'official fixtures not found at {FIXTURES} (set RTSR_OFFICIAL_FIXTURES)')
def test_official_rt4ksr_x2_tiled_equals_untiled(tmp_path, capsys):
    """The official RT4KSR x2 checkpoint (auto-detected) upscales a real photo (odd size: padded);
    the output is a plausible x2 of the photo (close to a bicubic upscale), and --tile 32 writes a
    PNG identical to the untiled one or at most one level apart in a few pixels."""
    src = tmp_path / 'in'
    src.mkdir()
    img = np.ascontiguousarray(load_photo('astronaut')[100:197, 150:277])  # 97 x 127
    Image.fromarray(img).save(src / 'astronaut.png')
    model = str(FIXTURES / 'rt4ksr_x2.pth')
    assert main([model, str(src), '--out', str(tmp_path / 'whole')]) == 0
    assert main([model, str(src), '--out', str(tmp_path / 'tiled'), '--tile', '32']) == 0
    whole, tiled = _read(tmp_path / 'whole/astronaut_x2.png'), _read(tmp_path / 'tiled/astronaut_x2.png')
    assert whole.shape == tiled.shape == (194, 254, 3)
    bicubic = np.asarray(Image.fromarray(img).resize((254, 194), Image.BICUBIC)).astype(float)
    psnr = 10 * np.log10(255 ** 2 / np.mean((whole.astype(float) - bicubic) ** 2))
    assert psnr > 30, psnr  # the trained network reproduces the photo (random weights would not)
    diff = np.abs(whole.astype(int) - tiled)
    print(f'official RT4KSR x2, --tile 32 vs untiled: max |diff| {diff.max()} level(s), '
          f'{int((diff > 0).sum())} of {diff.size} values differ; PSNR vs bicubic {psnr:.1f} dB')
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_plain_basicsr_checkpoint_with_opt(photos, tmp_path, capsys):
    """A BasicSR checkpoint without embedded options ({'params_ema': ...}) is built from the
    network_g of --opt X.yml (its path.param_key_g chooses the weights); an option file without
    network_g is one line, exit status 2."""
    import yaml

    from rtsr_arch.archs.rep import reparameterize

    opt = {'type': 'LRSRN', 'num_feat': 8, 'num_block': 2, 'feature_size': 16, 'upscale': 3, 'act_type': 'gelu'}
    net = randomize(build_network(opt), seed=1, fan_in=True)
    ema = randomize(build_network(opt), seed=2, fan_in=True)
    ckpt = tmp_path / 'ckpts' / 'net_g_100.pth'
    ckpt.parent.mkdir()
    torch.save({'params': net.state_dict(), 'params_ema': ema.state_dict()}, ckpt)
    yml = tmp_path / 'train.yml'
    yml.write_text(yaml.safe_dump({'network_g': opt, 'path': {'param_key_g': 'params'}}))
    out = tmp_path / 'out'
    assert main([str(ckpt), str(photos / 'chelsea.png'), '--out', str(out), '--opt', str(yml), '--quiet',
                 '--backend', 'torch']) == 0
    result = _read(out / 'chelsea_x3.png')
    assert result.shape == (99, 99, 3)
    assert np.array_equal(result, upscale_image(reparameterize(net).eval(), _read(photos / 'chelsea.png')))
    capsys.readouterr()
    yml.write_text(yaml.safe_dump({'path': {'param_key_g': 'params'}}))
    assert main([str(ckpt), str(photos / 'chelsea.png'), '--out', str(tmp_path / 'out2'), '--opt', str(yml)]) == 2
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and 'network_g' in lines[0] and not (tmp_path / 'out2').exists()
