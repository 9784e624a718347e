"""The clip contenders of ``bench_loader.py``: what ST-MAE's and VideoMAE's loaders do per
clip, and the clip loader's bound.

- :class:`ClipsDataset`: a ``torch.utils.data.Dataset`` that opens the video, seeks to the
  clip's window (PyAV: backward to a keyframe, then decodes up to the window's end, as
  ST-MAE's selective decoding through torchvision's video reader does; decord:
  ``VideoReader.get_batch``, as VideoMAE does), keeps the clip's 16 frames, and applies one
  random resized crop and flip to all of them (torchvision v2 on a ``(T, 3, H, W)`` tensor);
- :func:`decode_clips`: libwebp decoding the 16 full frames of each sample's clip in a
  compiled prange loop, nothing else (the bound).

Frames are picked by the loader's own rule (:func:`vicmae_data.load.samplers.clip`, which
is mae_st's ``temporal_sampling``), so every contender decodes the same kind of clip.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from numba import njit, prange
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vicmae_data.load.loader import CLIP_RATIO, CLIP_VIDEO_SCALE
from vicmae_data.load.native import libwebp
from vicmae_data.load.samplers import clip, rng_init

CLIP_FRAMES, CLIP_STRIDE = 16, 4  # ST-MAE's Kinetics fine-tuning (FINETUNE.md: 16 x 4)


def clip_indices(T: int) -> list[int]:
    """A random training clip's frames, by the loader's rule (mae_st's temporal_sampling)."""
    size = CLIP_FRAMES * CLIP_STRIDE
    start = np.random.uniform(0, max(T - size, 0))
    return [min(int(start + i * (size - 1) / (CLIP_FRAMES - 1)), T - 1) for i in range(CLIP_FRAMES)]


class ClipsDataset(Dataset):
    """What ST-MAE's and VideoMAE's loaders do per clip: open the file, seek to the window,
    decode it, keep the clip's frames, one random resized crop and flip for all of them."""

    def __init__(self, paths: list[Path], backend: str) -> None:
        self.paths, self.backend = paths, backend
        self.augment = v2.Compose(
            [
                v2.RandomResizedCrop(224, scale=CLIP_VIDEO_SCALE, ratio=CLIP_RATIO, antialias=True),
                v2.RandomHorizontalFlip(),
            ]
        )  # on a (T, 3, H, W) tensor: one draw for every frame

    def __len__(self) -> int:
        return len(self.paths)

    def _frames_pyav(self, path: Path) -> np.ndarray:
        """Seek (backward, to a keyframe) before the window and decode up to its end, as
        ST-MAE's selective decoding does; only the clip's frames are converted to RGB."""
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            picks = clip_indices(stream.frames)
            step = int(1 / (stream.average_rate * stream.time_base))
            first = stream.start_time or 0
            container.seek(first + picks[0] * step, stream=stream, backward=True)
            out, want = [], iter(picks)
            target = next(want)
            for frame in container.decode(stream):
                index = (frame.pts - first) // step
                while index >= target:
                    out.append(frame.to_ndarray(format="rgb24"))
                    target = next(want, None)
                    if target is None:
                        return np.stack(out)
            while len(out) < len(picks):  # the stream ended early: repeat its last frame
                out.append(out[-1])
            return np.stack(out)

    def _frames_decord(self, path: Path) -> np.ndarray:
        import decord

        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return vr.get_batch(clip_indices(len(vr))).asnumpy()  # VideoMAE's get_batch

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        frames = self._frames_decord(path) if self.backend == "decord" else self._frames_pyav(path)
        return self.augment(torch.from_numpy(frames).permute(0, 3, 1, 2))  # (T, 3, 224, 224)


_decode = libwebp.decode_rgb_into


@njit(parallel=True, nogil=True)
def decode_clips(blob, offsets, frame_start, T, H, W, scratch, seed, epoch):
    """Full decodes of each sample's clip frames (the clip sampler's training picks)."""
    for i in prange(len(T)):
        rng = np.zeros(1, dtype=np.uint64)
        rng_init(seed, epoch, i, rng)
        picks = np.zeros(CLIP_FRAMES, dtype=np.int64)
        clip(T[i], CLIP_FRAMES, CLIP_STRIDE, -1, 1, picks, rng)
        for k in range(CLIP_FRAMES):
            f = frame_start[i] + picks[k]
            _decode(blob[offsets[f] : offsets[f + 1]], scratch[i], H[i], W[i])
