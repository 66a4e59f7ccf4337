"""rtsr-upscale on video files (rtsr_arch.video): short clips made here from a real photograph
(:func:`rtsr_arch.video.pan_zoom_clip`, a pan and zoom over scikit-image's astronaut) with an AAC
track, display rotation and a colour description.

The references are independent of the pipeline: the input clip's own packets and frames read
back with PyAV, and :func:`rtsr_arch.inference.upscale_image` (the image path) on the decoded
input frames; with a lossless codec (PNG in .mov, FFV1 in .mkv) the upscaled frames must equal it
exactly."""
import re
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import rtsr_arch  # noqa: F401
from helpers import randomize
from rtsr_arch.commands.upscale import collect_jobs, main
from rtsr_arch.inference import upscale_image
from rtsr_arch.loader import load_model, save_model
from rtsr_arch.utils.options import build_network
from rtsr_arch.video import EncodeSettings, pan_zoom_clip, partial_path, upscale_video

pytestmark = pytest.mark.usefixtures('torch_single_thread')

BT709 = {'color_primaries': 1, 'color_trc': 1, 'colorspace': 1}


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    """A tiny random-weight LRSRN x2 (8 features, one block) saved like rtsr-train's checkpoints."""
    net = randomize(build_network({'type': 'LRSRN', 'num_feat': 8, 'num_block': 1, 'feature_size': 16,
                                   'upscale': 2}), seed=0, fan_in=True)
    path = tmp_path_factory.mktemp('model') / 'lrsrn_x2.pth'
    save_model(net, path)
    return path


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    """12 frames of 48x64 at 24000/1001 fps, PNG (lossless RGB) in .mov with an AAC track, rotated
    90 degrees, BT.709 tagged, with a title; ``(path, frames encoded)``."""
    path = tmp_path_factory.mktemp('clip') / 'pan.mov'
    frames = pan_zoom_clip(path, 12, (48, 64), codec='png', pix_fmt='rgb24', rotation=90, colour=BT709,
                           metadata={'title': 'a pan over the astronaut'})
    return path, frames


def _probe(path):
    """What the tests compare, read back with PyAV: video pts, rate, time base, colour fields,
    rotation, RGB frames, audio packets (bytes, pts), container duration and metadata."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        cc = v.codec_context
        info = {'rate': v.average_rate, 'time_base': v.time_base, 'duration': c.duration,
                'title': c.metadata.get('title'), 'codec': cc.name, 'pix_fmt': cc.pix_fmt, 'colour': {k: getattr(cc, k) for k in BT709}}
        audio = [s.index for s in c.streams.audio]
        packets = [(bytes(p), p.pts, p.time_base) for p in c.demux(audio=0) if p.size] if audio else []
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    info.update(pts=[f.pts for f in frames], rotation=frames[0].rotation if frames else None,
                rgb=np.stack([f.to_ndarray(format='rgb24') for f in frames]), audio=packets)
    return info


def _copy_with_bad_packet(src, dst, index):
    """Remux ``src`` to ``dst`` with video packet ``index`` replaced by garbage bytes."""
    with av.open(str(src)) as inp, av.open(str(dst), 'w') as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        k = 0
        for packet in inp.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == 'video':
                if k == index:
                    bad = av.Packet(b'\x00not a frame' * 8)
                    bad.pts, bad.dts, bad.time_base, bad.is_keyframe = packet.pts, packet.dts, packet.time_base, True
                    packet = bad
                k += 1
            packet.stream = streams[packet.stream_index]
            out.mux(packet)


def test_lossless_clip_keeps_timing_audio_metadata_and_equals_image_path(model, clip, tmp_path, capsys):
    """PNG in .mov -> PNG in .mov: 12 frames with the input's pts, rate, duration; audio packets
    identical (bytes and pts); rotation, colour description and title kept; every frame equal to
    upscale_image on the decoded input frame; a per-stage line; nothing hidden left behind."""
    src, encoded = clip
    out = tmp_path / 'out'
    assert main([str(model), str(src), '--out', str(out), '--codec', 'png', '--batch', '5', '--backend', 'torch']) == 0
    err = capsys.readouterr().err
    assert re.search(r'12 frames in [0-9.]+ s .*decode [0-9.]+, inference [0-9.]+, encode [0-9.]+', err), err
    assert sorted(p.name for p in out.iterdir()) == ['pan_x2.mov']
    got, ref = _probe(out / 'pan_x2.mov'), _probe(src)
    assert np.array_equal(ref['rgb'], encoded)  # the input is lossless: its frames are the photo crops
    assert got['pts'] == ref['pts'] == [1001 * i for i in range(12)]
    assert got['rate'] == ref['rate'] == Fraction(24000, 1001) and got['time_base'] == ref['time_base']
    assert got['duration'] == ref['duration']
    assert len(ref['audio']) > 10 and got['audio'] == ref['audio']
    assert got['rotation'] == ref['rotation'] == 90
    assert got['colour'] == ref['colour'] == BT709
    assert got['title'] == ref['title'] == 'a pan over the astronaut'
    assert got['rgb'].shape == (12, 96, 128, 3)
    expected = upscale_image(load_model(model), ref['rgb'])
    assert np.array_equal(got['rgb'], expected)
    assert not np.array_equal(got['rgb'][0], got['rgb'][1])  # the clip moves: frames are not one image repeated


def test_default_x264_into_mkv_and_pixel_format_errors(model, clip, tmp_path, capsys):
    """The default codec (libx264, yuv420p) with --container mkv: 12 frames at the input's times,
    the audio packets unchanged, close to the image path (lossy); 10-bit output; a pixel format the
    codec lacks and a lossless codec with --crf are one-line usage errors (exit 2, nothing written)."""
    src, _ = clip
    out = tmp_path / 'out'
    assert main([str(model), str(src), '--out', str(out), '--container', 'mkv', '--preset', 'ultrafast',
                 '--backend', 'torch', '--quiet']) == 0
    got, ref = _probe(out / 'pan_x2.mkv'), _probe(src)
    assert (got['codec'], got['pix_fmt']) == ('h264', 'yuv420p')
    # Matroska cannot store the AAC track's negative start (-1024 samples of encoder delay, an edit
    # list in .mov): the muxer shifts every stream by the same amount; the timing is otherwise the same
    video_shift = [float(p * got['time_base'] - q * ref['time_base']) for p, q in zip(got['pts'], ref['pts'])]
    audio_shift = [float(a[1] * a[2] - b[1] * b[2]) for a, b in zip(got['audio'], ref['audio'])]
    assert len(video_shift) == 12 and len(audio_shift) == len(ref['audio'])
    assert np.ptp(video_shift + audio_shift) <= 1e-3 and abs(video_shift[0] - 1024 / 48000) <= 1e-3, video_shift
    assert got['rate'] == Fraction(24000, 1001)
    assert [a[0] for a in got['audio']] == [a[0] for a in ref['audio']]
    # the random-weight network's output is saturated colour noise that 4:2:0 chroma cannot hold:
    # compare luma (measured 36.7 dB; the frames in reverse order, a wrong pairing, stay far below)
    luma = lambda rgb: rgb.astype(float) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    psnr = lambda a, b: 10 * np.log10(255 ** 2 / np.mean((luma(a) - luma(b)) ** 2))  # noqa: E731
    expected = upscale_image(load_model(model), ref['rgb'])
    assert psnr(got['rgb'], expected) > 33 > psnr(got['rgb'], expected[::-1]) + 5, (
        psnr(got['rgb'], expected), psnr(got['rgb'], expected[::-1]))
    # 10-bit: the same frames in yuv420p10le (a nearest-neighbour x2 stands in for the network here)
    report = upscale_video(src, tmp_path / 'ten.mkv', lambda x: x.repeat(2, axis=1).repeat(2, axis=2),
                           EncodeSettings('libx264', preset='ultrafast', pix_fmt='yuv420p10le'))
    ten = _probe(tmp_path / 'ten.mkv')
    assert report.frames == 12 and ten['pix_fmt'] == 'yuv420p10le' and len(ten['pts']) == 12
    capsys.readouterr()
    for extra, mention in ((['--codec', 'png', '--pix-fmt', 'yuv420p'], 'rgb24'), (['--codec', 'ffv1', '--crf', '5'],
                                                                                    'lossless')):
        assert main([str(model), str(src), '--out', str(tmp_path / 'bad'), *extra]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and mention in lines[0], lines
    assert not (tmp_path / 'bad').exists()


def test_corrupt_packet_is_reported_then_skipped_or_repeated(model, tmp_path, capsys):
    """FFV1 in .mkv with the 6th video packet replaced by garbage: one warning naming its time
    (5 x 1001/24000 s = 0.209 s); 'skip' writes 11 frames (that pts missing), 'repeat' 12 with the
    5th output frame repeated; the other frames equal the image path; exit status 0."""
    good, bad = tmp_path / 'good.mkv', tmp_path / 'in' / 'bad.mkv'
    bad.parent.mkdir()
    # every frame a key frame (g=1): FFV1 otherwise carries its context state over to the next frames
    frames = pan_zoom_clip(good, 12, (48, 64), codec='ffv1', pix_fmt='bgr0', audio=False, options={'g': '1'})
    _copy_with_bad_packet(good, bad, 5)
    expected = upscale_image(load_model(model), frames)
    for mode, count in (('skip', 11), ('repeat', 12)):
        out = tmp_path / mode
        assert main([str(model), str(bad), '--out', str(out), '--codec', 'ffv1', '--on-corrupt', mode,
                     '--backend', 'torch', '--batch', '3']) == 0
        err = capsys.readouterr().err
        warnings = [line for line in err.splitlines() if 'corrupt video frame' in line]
        assert len(warnings) == 1 and 'at 0.209 s' in warnings[0] and str(bad) in warnings[0], warnings
        done = 'skipped' if mode == 'skip' else 'replaced by the previous frame'
        assert re.search(rf'{count} frames in .* 1 corrupt input frame\(s\) {done}', err), err
        got = _probe(out / 'bad_x2.mkv')
        assert len(got['pts']) == count
        keep = [i for i in range(12) if i != 5]
        if mode == 'skip':
            assert np.array_equal(got['rgb'], expected[keep])
        else:
            assert np.array_equal(got['rgb'][keep], expected[keep]) and np.array_equal(got['rgb'][5], expected[4])


def test_truncated_file_keeps_the_frames_before_the_cut(model, clip, tmp_path):
    """The .mov cut at two thirds: warnings with the frame cut in half (corrupt, at its time) and
    how many of the declared 12 frames were decoded; the output holds exactly those frames,
    upscaled as the image path does."""
    src, encoded = clip
    cut = tmp_path / 'cut.mov'
    data = src.read_bytes()
    cut.write_bytes(data[:len(data) * 2 // 3])
    warnings = []
    net = load_model(model)
    report = upscale_video(cut, tmp_path / 'cut_x2.mov', lambda x: upscale_image(net, x), EncodeSettings('png'),
                           warn=warnings.append)
    assert 0 < report.frames < 12
    # the count, after (possibly) the cut packet itself reported as a corrupt frame at the cut's time
    assert f'decoded {report.frames} of the 12 frames' in warnings[-1], warnings
    assert all(f'at {report.frames * 1001 / 24000:.3f} s' in w for w in warnings[:-1]) and len(warnings) <= 2, warnings
    got = _probe(tmp_path / 'cut_x2.mov')
    assert np.array_equal(got['rgb'], upscale_image(net, encoded[:report.frames]))


def test_a_failure_leaves_nothing_under_the_final_name(model, clip, tmp_path, capsys):
    """An error in inference (second batch) or an interrupt: the error propagates, neither the
    output nor its temporary file remain. The CLI then reports one line for that file (exit 1)
    and a rerun skips a finished output."""
    src, _ = clip
    output = tmp_path / 'out.mov'
    for error in (RuntimeError('out of luck'), KeyboardInterrupt()):
        calls = []

        def upscale(frames):
            calls.append(len(frames))
            if len(calls) == 2:
                raise error
            return np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)
        with pytest.raises(type(error)):
            upscale_video(src, output, upscale, EncodeSettings('png'), batch=4)
        assert not output.exists() and not partial_path(output).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]

    # an explicit file with an unknown extension is probed: a video -> VideoJob, anything else -> ImageJob
    odd = tmp_path / 'pan.clip'
    odd.write_bytes(src.read_bytes())
    (tmp_path / 'notes.clip').write_text('not a video')
    jobs = collect_jobs([odd, tmp_path / 'notes.clip'], tmp_path / 'o', '_x2')
    assert [(type(j).__name__, j.output.name) for j in jobs] == [('VideoJob', 'pan_x2.clip'),
                                                                 ('ImageJob', 'notes_x2.png')]

    # through the command: a video that is not one is a one-line error for that file, exit 1
    fake = tmp_path / 'in' / 'fake.mp4'
    fake.parent.mkdir()
    fake.write_bytes(b'not a video at all' * 10)
    assert main([str(model), str(fake), '--out', str(tmp_path / 'o'), '--backend', 'torch', '--quiet']) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]
    assert len(lines) == 1 and str(fake) in lines[0], lines
    assert not (tmp_path / 'o').exists() or not list((tmp_path / 'o').iterdir())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_fp16_pipeline(model, clip, tmp_path):
    """On CUDA (auto precision: fp16 for this fp16-safe network) the clip goes through with the
    same frame count, close to the fp32 CPU image path."""
    src, _ = clip
    out = tmp_path / 'out'
    assert main([str(model), str(src), '--out', str(out), '--codec', 'png', '--device', 'cuda', '--backend', 'torch',
                 '--quiet']) == 0
    got, ref = _probe(out / 'pan_x2.mov'), _probe(src)
    expected = upscale_image(load_model(model), ref['rgb']).astype(int)
    assert len(got['pts']) == 12 and np.abs(got['rgb'].astype(int) - expected).max() <= 4
