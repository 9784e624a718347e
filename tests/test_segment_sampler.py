"""Segment sampling (VideoMAE's Something-Something v2 clips) and the no-flip option.

Reference: MCG-NJU/VideoMAE ``ssv2.py`` ``loadvideo_decord``, restated in plain Python:
training draws one frame from each of ``n`` segments of ``T // n`` frames; testing takes
the segment starts ``int(tick * i)`` and centres ``int(tick / 2 + tick * i)`` with
``tick = T / n``, sorted together and split by ``temporal_start::2`` into view 0 (starts)
and view 1 (centres). The loader must agree, on the kernel and through a real file.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_clips import coded_frames, frame_index
from test_samplers import RefRng

from vicmae_data import make_loader
from vicmae_data.format.beton import Sample
from vicmae_data.format.frames import FrameList
from vicmae_data.load.crops import draw_view_params, view_plan
from vicmae_data.load.loader import CLIP_RATIO, CLIP_VIDEO_SCALE
from vicmae_data.load.samplers import SAMPLERS, rng_init, segment
from vicmae_data.write.beton_writer import write_beton


def ref_train(T: int, n: int, rng: RefRng) -> list[int]:
    """VideoMAE's training draw (np.random.randint(average_duration) per segment)."""
    seg = T // n
    if seg == 0:  # VideoMAE takes frame 0 n times here; ours spreads like `distant`
        return [min(k * T // n, T - 1) for k in range(n)]
    return [i * seg + rng.integer(seg) for i in range(n)]


def ref_test(T: int, n: int) -> list[list[int]]:
    """VideoMAE's two test views: all_index sorted, then buffer[temporal_start::2]."""
    tick = T / float(n)
    all_index = sorted(
        [int(tick / 2.0 + tick * x) for x in range(n)] + [int(tick * x) for x in range(n)]
    )
    return [all_index[0::2], all_index[1::2]]


@pytest.mark.parametrize("T", [16, 17, 31, 45, 48, 95, 200])
def test_segment_equals_videomae(T: int) -> None:
    n = 16
    out = np.zeros(n, dtype=np.int64)
    state = np.zeros(1, dtype=np.uint64)
    for index in range(30):
        rng_init(3, 1, index, state)
        segment(T, n, -1, 1, out, state)
        assert out.tolist() == ref_train(T, n, RefRng(3, 1, index))
    for k, want in enumerate(ref_test(T, n)):
        segment(T, n, k, 2, out, state)
        assert out.tolist() == want, (T, k)


def test_short_videos_spread_instead_of_repeating_frame_zero() -> None:
    out = np.zeros(16, dtype=np.int64)
    state = np.zeros(1, dtype=np.uint64)
    rng_init(0, 0, 0, state)
    segment(5, 16, -1, 1, out, state)
    assert sorted(set(out.tolist())) == [0, 1, 2, 3, 4] and list(out) == sorted(out)


def test_segment_is_a_clip_sampler_and_flip_false_never_flips() -> None:
    assert SAMPLERS["segment"].clip and SAMPLERS["segment"].evaluation == "segment"
    settings = np.array([*CLIP_VIDEO_SCALE, 0.2, 1.0, *CLIP_RATIO, 224 / 256])
    state = np.zeros(1, dtype=np.uint64)
    flipped = set()
    for index in range(100):
        with_flip = np.zeros((16, 6), dtype=np.int32)
        without = np.zeros((16, 6), dtype=np.int32)
        for flip, params in ((True, with_flip), (False, without)):
            plan = view_plan("segment", train=True, flip=flip)
            draw_view_params(5, 0, index, 48, 240, 320, plan, settings, params, state)
        assert with_flip[:, 0].tolist() == ref_train(48, 16, RefRng(5, 0, index))
        assert (with_flip[:, 1:] == with_flip[0, 1:]).all()  # one crop and flip per clip
        # The same frames and crops: only the flip is dropped.
        np.testing.assert_array_equal(with_flip[:, :5], without[:, :5])
        assert (without[:, 5] == 0).all()
        flipped.add(int(with_flip[0, 5]))
    assert flipped == {0, 1}


def test_segment_test_views_through_a_real_file(tmp_path) -> None:
    """VideoMAE's 2 x 3 test views, read back from the decoded pixels' colour code."""
    from vicmae_data.synth.media import write_video
    from vicmae_data.write.settings import TranscodeSettings
    from vicmae_data.write.transcode import transcode

    lengths = (37, 12)
    samples = []
    for i, T in enumerate(lengths):
        video = write_video(tmp_path / f"v{i}.mp4", coded_frames(T), options={"crf": "12"})
        done = transcode(video, TranscodeSettings(short_side=48, quality=90))
        samples.append(Sample(FrameList(done.frames, done.height, done.width), i, {}))
    path = write_beton(tmp_path / "seg.beton", samples)
    n = 8
    for k in range(2):
        want = {i: ref_test(T, n)[k] for i, T in enumerate(lengths)}
        for j in range(3):
            loader = make_loader(path, 2, num_workers=1, sampling="segment", clip_frames=n,
                                 resolution=32, train=False, test_view=(k, 2, j, 3),
                                 drop_last=False)  # fmt: skip
            for batch in loader:
                assert batch.views.shape == (2, n, 3, 32, 32)
                for row, index in enumerate(batch.indices.tolist()):
                    got = [frame_index(v) for v in batch.views[row].numpy()]
                    assert got == want[index], (k, j, index)
