"""The challenge degradations against independent references: the ffmpeg CLI (imageio-ffmpeg's static
build, SVT-AV1 4.x) for Lanczos-5 and libsvtav1 ``-qp``, Pillow for JPEG and for decoding AVIF
(libavif), on real photographs (scikit-image sample photos)."""
import builtins
import io
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, features

from rtsr_arch.data.codecs import CodecUnavailableError, avif_encode, yuv420p_planes
from rtsr_arch.data.degradations import Degradation, crop_to_multiple, jpeg_roundtrip, ntire23_lr
from rtsr_arch.data.resize import lanczos
from basicsr.metrics import calculate_psnr

from helpers import load_photo

CHALLENGE_VF = 'scale=ceil(iw/4):ceil(ih/4):flags=lanczos+accurate_rnd+full_chroma_int:sws_dither=none:param0=5'
AIS24_QIDX = {31: 34, 39: 65, 47: 108, 55: 145, 63: 184}  # ffmpeg CLI -qp, SVT-AV1 4.x, preset 5 (measured with trace_headers)


def crop(name, h, w, top=0, left=0):
    return np.ascontiguousarray(load_photo(name)[top:top + h, left:left + w])


def psnr(a, b):
    """RGB PSNR (peak 255, whole image) of two uint8 images: BasicSR's metric."""
    return float(calculate_psnr(a, b, crop_border=0, input_order='HWC'))


@pytest.fixture(scope='module')
def ffmpeg():
    imageio_ffmpeg = pytest.importorskip('imageio_ffmpeg')
    exe = imageio_ffmpeg.get_ffmpeg_exe()

    def run(*args, stdin=None):
        out = subprocess.run([exe, '-hide_banner', '-nostdin', *args], input=stdin, capture_output=True)
        assert out.returncode == 0, out.stderr.decode(errors='replace')[-2000:]
        return out
    return run


def base_q_idx(ffmpeg, path, fmt=()):
    """The key frame's base_q_idx as FFmpeg's trace_headers bitstream filter prints it."""
    log = ffmpeg(*fmt, '-i', str(path), '-c', 'copy', '-bsf:v', 'trace_headers', '-f', 'null', '-').stderr.decode()
    values = re.findall(r'base_q_idx\s+[01]+ = (\d+)', log)
    assert len(values) == 1, log[-2000:]
    return int(values[0])


@pytest.mark.parametrize('name,h,w', [('astronaut', 256, 256), ('coffee', 262, 258), ('rocket', 301, 199)])
def test_lanczos5_yuv420p_matches_ffmpeg_cli(ffmpeg, name, h, w):
    hr = crop(name, h, w, 40, 60)
    ours = yuv420p_planes(lanczos(hr, 4, a=5, pix_fmt='yuv420p'))
    raw = ffmpeg('-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-i', '-', '-vf', CHALLENGE_VF,
                 '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-', stdin=hr.tobytes()).stdout
    lh, lw = -(-h // 4), -(-w // 4)  # ceil
    ch, cw = -(-lh // 2), -(-lw // 2)
    ref = np.frombuffer(raw, np.uint8)
    assert ref.size == lh * lw + 2 * ch * cw
    expected = [ref[:lh * lw].reshape(lh, lw), ref[lh * lw:lh * lw + ch * cw].reshape(ch, cw),
                ref[lh * lw + ch * cw:].reshape(ch, cw)]
    for plane, (a, b) in zip('YUV', zip(ours, expected)):
        np.testing.assert_array_equal(a, b, err_msg=f'{plane} plane')


def test_lanczos5_rgb_matches_ffmpeg_cli(ffmpeg):
    hr = crop('chelsea', 240, 320)
    ours = Degradation(4, 'lanczos5', 'none').resize(hr)
    raw = ffmpeg('-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', '320x240', '-i', '-', '-vf', CHALLENGE_VF,
                 '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-', stdin=hr.tobytes()).stdout
    np.testing.assert_array_equal(ours, np.frombuffer(raw, np.uint8).reshape(60, 80, 3))


def test_other_kernels():
    cv2 = pytest.importorskip('cv2')
    hr = crop('coffee', 240, 360)
    area = Degradation(3, 'area', 'none').resize(hr)
    np.testing.assert_array_equal(area, cv2.resize(hr, (120, 80), interpolation=cv2.INTER_AREA))
    bicubic = Degradation(3, 'bicubic', 'none').resize(hr)
    np.testing.assert_array_equal(bicubic, np.asarray(Image.fromarray(hr).resize((120, 80), Image.BICUBIC)))
    l3, l5 = (Degradation(3, k, 'none').resize(hr) for k in ('lanczos3', 'lanczos5'))
    pil_lanczos = np.asarray(Image.fromarray(hr).resize((120, 80), Image.LANCZOS))  # also a = 3, antialiased
    assert l3.shape == l5.shape == (80, 120, 3)
    assert psnr(l3, pil_lanczos) > 40 and psnr(l3, pil_lanczos) > psnr(l5, pil_lanczos)
    assert not np.array_equal(l3, l5)


@pytest.mark.parametrize('quality', [70, 90, 95])
def test_jpeg_matches_pillow(quality):
    hr = crop('chelsea', 240, 300)
    deg = Degradation.from_opt({'scale': 3, 'resize': 'bicubic', 'codec': 'jpeg', 'levels': [quality]})
    lr = np.asarray(Image.fromarray(hr).resize((100, 80), Image.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, 'JPEG', quality=quality)
    assert deg.encode(hr, quality) == buf.getvalue()
    pil_decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))
    np.testing.assert_array_equal(deg(hr, quality), pil_decoded)
    np.testing.assert_array_equal(Degradation.decode(buf.getvalue()), pil_decoded)
    assert deg.file_suffix == '.jpg' and deg.level_name(quality) == f'q{quality}'


def test_ntire23_preset_equals_ntire23_lr():
    img = crop('rocket', 301, 403)
    deg = Degradation.from_opt({'preset_name': 'ntire23', 'scale': 3})
    hr, lr = ntire23_lr(img, 3)
    assert hr.shape == (300, 402, 3) and np.array_equal(hr, crop_to_multiple(img, 3))
    np.testing.assert_array_equal(deg(hr, 90), lr)
    np.testing.assert_array_equal(jpeg_roundtrip(deg.resize(hr)), lr)


@pytest.fixture(scope='module')
def ais24():
    return Degradation.from_opt({'preset_name': 'ais24'})


@pytest.fixture(scope='module')
def avif_files(ais24):
    """qp -> (hr, .avif bytes) for a 256x256 astronaut crop."""
    hr = crop('astronaut', 256, 256, 20, 150)
    return hr, {qp: ais24.encode(hr, qp) for qp in ais24.levels}


def test_avif_base_q_idx_matches_ffmpeg_qp(ffmpeg, ais24, avif_files, tmp_path):
    hr, files = avif_files
    yuv = np.concatenate([p.ravel() for p in yuv420p_planes(lanczos(hr, 4, pix_fmt='yuv420p'))])
    cli_has_svt = b'libsvtav1' in ffmpeg('-encoders').stdout
    measured = {}
    for qp, data in files.items():
        path = tmp_path / f'{qp}.avif'
        path.write_bytes(data)
        measured[qp] = base_q_idx(ffmpeg, path)
        if cli_has_svt:  # the challenge's encoder through the CLI, same yuv420p input
            obu = tmp_path / f'cli{qp}.obu'
            ffmpeg('-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-s', '64x64', '-i', '-', '-c:v', 'libsvtav1',
                   '-qp', str(qp), '-preset', '5', '-f', 'obu', str(obu), stdin=yuv.tobytes())
            assert base_q_idx(ffmpeg, obu, ('-f', 'obu')) == measured[qp]
    assert measured == AIS24_QIDX
    assert ais24.file_suffix == '.avif' and ais24.level_name(31) == 'qp31'


def test_avif_deterministic_and_decodes(ais24, avif_files):
    hr, files = avif_files
    assert ais24.encode(hr, 47) == files[47]
    lr = ais24(hr, 47)
    assert lr.shape == (64, 64, 3) and lr.dtype == np.uint8
    np.testing.assert_array_equal(lr, Degradation.decode(files[47]))
    np.testing.assert_array_equal(lr, ais24(hr, 47))


@pytest.mark.parametrize('name', ['astronaut', 'coffee', 'rocket', 'immunohistochemistry'])
def test_avif_psnr_falls_with_qp(ais24, name):
    hr = crop(name, 256, 256, 30, 100)
    clean = ais24.resize(hr)
    values = [psnr(ais24(hr, qp), clean) for qp in ais24.levels]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert 20 < values[-1] and values[0] < 50, values  # a real degradation, not a broken one


@pytest.mark.skipif(not features.check('avif'), reason='this Pillow has no AVIF (libavif) support')
@pytest.mark.parametrize('h,w', [(256, 256), (260, 252), (252, 268)])  # LR 64x64, 63x65 and 67x63
def test_avif_decode_matches_libavif(h, w):
    hr = crop('coffee', h, w, 10, 50)
    for qp in (31, 63):
        data = avif_encode(lanczos(hr, 4, pix_fmt='yuv420p'), qp)  # the ceil-size LR of the challenge's -vf
        with Image.open(io.BytesIO(data)) as img:
            libavif = np.asarray(img.convert('RGB')).astype(int)
        ours = Degradation.decode(data)
        assert ours.shape == libavif.shape == (-(-h // 4), -(-w // 4), 3)
        assert np.abs(ours - libavif).max() <= 2


def test_from_opt_levels_and_sampling():
    deg = Degradation.from_opt({'scale': 4, 'resize': 'bicubic', 'codec': 'jpeg', 'levels': {'low': 70, 'high': 95}})
    assert deg.levels == list(range(70, 96)) and deg.opt['levels'] == deg.levels
    rng = np.random.default_rng(0)
    assert set(deg.sample_level(rng) for _ in range(500)) == set(range(70, 96))
    deg = Degradation.from_opt({'preset_name': 'ais24', 'weights': [0, 0, 1, 0, 3], 'preset': 8, 'seed': 3})
    assert deg.scale == 4 and deg.preset == 8 and deg.seed == 3
    draws = [deg.sample_level(rng) for _ in range(400)]
    assert set(draws) == {47, 63} and 0.65 < draws.count(63) / 400 < 0.85
    assert Degradation.from_opt(deg.opt).opt == deg.opt
    ntire = Degradation.from_opt({'preset_name': 'ntire23', 'scale': 2})
    assert (ntire.scale, ntire.resize_kernel, ntire.codec, ntire.levels) == (2, 'bicubic', 'jpeg', [90])
    clean = Degradation.from_opt({'scale': 2, 'resize': 'area', 'codec': 'none'})
    assert clean.file_suffix == '.png' and clean.level_name(clean.sample_level(rng)) == 'clean'
    with pytest.raises(ValueError, match='not a multiple of the scale'):
        clean(crop('astronaut', 31, 32), 0)


@pytest.mark.parametrize('opt,key', [
    ({'preset_name': 'ais24', 'qp': 31}, 'qp'),
    ({'preset_name': 'ais25'}, 'preset_name'),
    ({'preset_name': 'ntire23'}, 'scale'),
    ({'preset_name': 'ntire23', 'scale': 4}, 'scale'),
    ({'scale': 2, 'resize': 'cubic', 'codec': 'jpeg', 'levels': [90]}, 'resize'),
    ({'scale': 2, 'resize': 'bicubic', 'codec': 'webp', 'levels': [90]}, 'codec'),
    ({'scale': 2.0, 'resize': 'bicubic', 'codec': 'jpeg', 'levels': [90]}, 'scale'),
    ({'scale': 2, 'resize': 'bicubic', 'codec': 'jpeg'}, 'levels'),
    ({'scale': 2, 'resize': 'bicubic', 'codec': 'jpeg', 'levels': [90, 101]}, 'levels'),
    ({'preset_name': 'ais24', 'levels': [0]}, 'levels'),
    ({'preset_name': 'ais24', 'levels': {'low': 40, 'high': 31}}, 'levels'),
    ({'preset_name': 'ais24', 'levels': {'low': 31}}, 'levels'),
    ({'preset_name': 'ais24', 'weights': [1, 2]}, 'weights'),
    ({'preset_name': 'ais24', 'weights': [1, 1, 1, 1, -1]}, 'weights'),
    ({'preset_name': 'ais24', 'preset': 14}, 'preset'),
    ({'preset_name': 'ntire23', 'scale': 2, 'preset': 5}, 'preset'),
    ({'scale': 2, 'resize': 'bicubic', 'codec': 'none', 'levels': [1]}, 'levels'),
    ({'preset_name': 'ais24', 'seed': 'x'}, 'seed'),
    ({'resize': 'bicubic', 'codec': 'none'}, 'scale'),
])
def test_from_opt_rejects(opt, key):
    with pytest.raises(ValueError) as err:
        Degradation.from_opt(opt)
    message = str(err.value)
    assert f"'{key}'" in message and 'expected' in message and '\n' not in message


def test_missing_pyav_is_one_line(monkeypatch):
    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == 'av' or name.startswith('av.'):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)
    monkeypatch.delitem(sys.modules, 'av', raising=False)
    monkeypatch.setattr(builtins, '__import__', no_av)
    for opt in ({'preset_name': 'ais24'}, {'scale': 2, 'resize': 'lanczos3', 'codec': 'jpeg', 'levels': [90]}):
        with pytest.raises(CodecUnavailableError) as err:
            Degradation.from_opt(opt)
        assert 'pip install av' in str(err.value) and '\n' not in str(err.value)
    hr = crop('astronaut', 64, 64)  # JPEG + bicubic needs no PyAV
    assert Degradation.from_opt({'preset_name': 'ntire23', 'scale': 2})(hr, 90).shape == (32, 32, 3)


def test_missing_svt_is_one_line(monkeypatch):
    import av

    monkeypatch.setattr(av, 'codecs_available', set(av.codecs_available) - {'libsvtav1'})
    with pytest.raises(CodecUnavailableError, match=r'lacks libsvtav1: pip install av'):
        Degradation.from_opt({'preset_name': 'ais24'})
