"""Small datasets in the exact on-disk layout of Kinetics, Moments in Time, ImageNet and folders.

The media are real files (PyAV-encoded video in several codecs and containers, Pillow
images including ImageNet's odd ones) drawn by `render_clip` (or, with `style="texture"`,
by `render_texture_clip`), so the class of every item is visible in its pixels. Tests, the
demo and users without data all use this.

    summary = synth_dataset("kinetics400", Path("k400-sample"), videos=24, seed=0)

The drawn class of an item always equals the label a correct reader must give it (sorted
class names for Kinetics, ImageNet and folders; the index file for Moments in Time).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from vicmae_data.sources.layouts import DATASETS, SPLITS
from vicmae_data.synth.media import (
    ClipSpec,
    render_clip,
    write_audio_only,
    write_image,
    write_video,
)
from vicmae_data.synth.textures import render_texture_clip

__all__ = [
    "LAYOUTS",
    "STYLES",
    "ClipSpec",
    "SynthItem",
    "SynthSummary",
    "render_clip",
    "synth_dataset",
    "write_audio_only",
    "write_image",
    "write_video",
]

# synth writes exactly the layouts the converters read.
LAYOUTS: tuple[str, ...] = DATASETS
# What the pixels show. "colour": a shape whose colour, form and direction are the class
# (easy: any encoder's features separate it). "texture": a pattern whose kind is the class
# while colours, position, size, orientation and scale drift (`make demo`: a randomly
# initialised encoder stays near chance, a pretrained one does not).
STYLES: dict[str, Callable[..., np.ndarray]] = {
    "colour": render_clip,
    "texture": render_texture_clip,
}

# A few real class names of each release; the releases differ in class count and names only.
KINETICS_CLASSES: dict[str, tuple[str, ...]] = {
    "kinetics400": (
        "abseiling",
        "air drumming",
        "juggling balls",
        "playing guitar",
        "riding a bike",
    ),
    "kinetics600": (
        "abseiling",
        "air drumming",
        "passing American football (in game)",
        "playing guitar",
        "riding a bike",
        "tying necktie",
    ),
    "kinetics700": (
        "abseiling",
        "air drumming",
        "juggling balls",
        "petting animal (not cat)",
        "playing guitar",
        "riding a bike",
        "tying necktie",
    ),
}
# Moments in Time: (name, index). The indices are deliberately not alphabetical, so a
# reader that sorts names instead of reading `moments_categories.txt` gives wrong labels.
MIT_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("applauding", 2),
    ("barking", 0),
    ("bicycling", 4),
    ("clapping", 1),
    ("running", 3),
)
IMAGENET_SYNSETS: tuple[tuple[str, str], ...] = (
    ("n01440764", "tench, Tinca tinca"),
    ("n01443537", "goldfish, Carassius auratus"),
    ("n01484850", "great white shark, white shark, man-eater, man-eating shark"),
    ("n01491361", "tiger shark, Galeocerdo cuvieri"),
)
FOLDER_CLASSES: tuple[str, ...] = ("cats", "dogs", "horses", "zebras")

# Video profiles (codec, pix_fmt, width, height, fps), cycled so every layout gets every one:
# landscape, portrait, odd sizes (codecs that allow them), NTSC and low frame rates.
VIDEO_PROFILES: tuple[tuple[str, str, int, int, float | Fraction], ...] = (
    ("h264", "yuv420p", 128, 96, 25),
    ("vp9", "yuv420p", 131, 97, 24),
    ("h264", "yuv420p", 96, 128, 30),
    ("mpeg4", "yuv420p", 160, 120, Fraction(30000, 1001)),
    ("hevc", "yuv420p", 200, 112, 15),
    ("h264", "yuv444p", 99, 75, 20),
)
# Folder layout: (extension, video codec or Pillow image format), cycled.
FOLDER_FILES: tuple[tuple[str, str], ...] = (
    (".mp4", "h264"),
    (".webm", "vp9"),
    (".avi", "mpeg4"),
    (".jpg", "JPEG"),
    (".mkv", "h264"),
    (".mov", "h264"),
    (".png", "PNG"),
    (".JPG", "JPEG"),
    (".webp", "WEBP"),
    (".MP4", "h264"),
)
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((120, 90), (90, 140), (97, 61), (160, 120), (64, 64))


@dataclass(frozen=True)
class SynthItem:
    """One media file written (or, when `on_disk` is False, annotated but not written)."""

    split: str
    path: str  # posix, relative to SynthSummary.root (the output folder)
    label: int  # the class drawn, = the label a correct reader gives
    class_name: str
    kind: str  # "video" or "image"
    codec: str  # video codec, or image format
    num_frames: int
    height: int
    width: int
    fps: float
    on_disk: bool = True


@dataclass(frozen=True)
class SynthSummary:
    """What `synth_dataset` wrote: the layout, its class names (index -> name) and its items."""

    layout: str
    root: Path
    classes: tuple[str, ...]
    items: tuple[SynthItem, ...]

    def counts(self) -> dict[str, int]:
        """Files written per split."""
        return dict(Counter(i.split for i in self.items if i.on_disk))

    def written(self, split: str) -> list[SynthItem]:
        """Items of `split` that are on disk, in writing order."""
        return [i for i in self.items if i.split == split and i.on_disk]


def synth_dataset(
    layout: str,
    out: Path,
    *,
    videos: int = 24,
    seed: int = 0,
    splits: tuple[str, ...] = SPLITS,
    flat: bool | None = None,
    missing: int = 0,
    style: str = "colour",
) -> SynthSummary:
    """Write a small dataset in the on-disk layout of `layout` under `out`.

    videos: items per split (videos, or images for ImageNet). Items go round-robin over
        the classes (Kinetics: in sorted order), so with fewer items than classes only the
        first classes appear and the labels a reader gives still equal the classes drawn.
    flat: Kinetics: clips flat in `<split>/` instead of `<split>/<label>/` (default: flat
        for kinetics600 only, so both variants exist); ImageNet: val flat with
        `LOC_val_solution.csv` (default) or in wnid folders.
    missing: Kinetics and MiT: extra annotated clips per split left off the disk, as in
        the real releases.
    style: what the media show, a key of `STYLES` (the same files and layout either way).
    Deterministic in its arguments.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    render = STYLES[style]
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"splits must be among {SPLITS}, got {splits}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, zlib.crc32(layout.encode())])
    if layout.startswith("kinetics"):
        is_flat = layout == "kinetics600" if flat is None else flat
        return _kinetics(layout, out, rng, videos, splits, is_flat, missing, render)
    if layout == "mit":
        return _mit(out, rng, videos, splits, missing, render)
    if layout == "imagenet":
        return _imagenet(out, rng, videos, splits, True if flat is None else flat, render)
    return _folder(out, rng, videos, splits, render)


def _video(
    path: Path,
    split: str,
    rel: str,
    label: int,
    name: str,
    profile_index: int,
    rng: np.random.Generator,
    seconds: tuple[float, float] = (0.5, 3.0),
    codec: str | None = None,
    render: Callable[..., np.ndarray] = render_clip,
) -> SynthItem:
    profile_codec, pix_fmt, width, height, fps = VIDEO_PROFILES[profile_index % len(VIDEO_PROFILES)]
    if codec is not None and codec != profile_codec:
        # The container decides the codec here (webm: vp9); x264/x265 need 4:4:4 at odd sizes.
        if codec in ("h264", "hevc") and (width % 2 or height % 2):
            pix_fmt = "yuv444p"
    codec = codec or profile_codec
    num_frames = max(2, round(float(rng.uniform(*seconds)) * float(fps)))
    frames = render(label, num_frames, height, width, seed=int(rng.integers(2**31)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, codec=codec, fps=fps, pix_fmt=pix_fmt)
    return SynthItem(split, rel, label, name, "video", codec, num_frames, height, width, float(fps))


def _image(
    path: Path,
    split: str,
    rel: str,
    label: int,
    name: str,
    size_index: int,
    rng: np.random.Generator,
    fmt: str = "JPEG",
    mode: str = "RGB",
    render: Callable[..., np.ndarray] = render_clip,
) -> SynthItem:
    width, height = IMAGE_SIZES[size_index % len(IMAGE_SIZES)]
    frame = render(label, 1, height, width, seed=int(rng.integers(2**31)))[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, frame, format=fmt, mode=mode)
    return SynthItem(
        split,
        rel,
        label,
        name,
        "image",
        fmt if mode == "RGB" else f"{fmt}-{mode}",
        1,
        height,
        width,
        0.0,
    )


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))


def _csv_field(value: str) -> str:
    # Kinetics CSVs quote labels with spaces; csv.writer's minimal quoting would not.
    if any(c in value for c in ' ,"'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _kinetics(
    layout: str,
    out: Path,
    rng: np.random.Generator,
    videos: int,
    splits: tuple[str, ...],
    flat: bool,
    missing: int,
    render: Callable[..., np.ndarray],
) -> SynthSummary:
    classes = KINETICS_CLASSES[layout]
    with_cc = layout == "kinetics700"  # later releases add an `is_cc` column
    (out / "annotations").mkdir(exist_ok=True)
    items: list[SynthItem] = []
    for split in splits:
        header = "label,youtube_id,time_start,time_end,split" + (",is_cc" if with_cc else "")
        rows = [header]
        for i in range(videos + missing):
            label = i % len(classes)
            name = classes[label]
            start = int(rng.integers(0, 300))
            file = f"{_youtube_id(rng)}_{start:06d}_{start + 10:06d}.mp4"
            rel = f"{split}/{file}" if flat else f"{split}/{name}/{file}"
            row = f"{_csv_field(name)},{file[:11]},{start},{start + 10},{split}"
            rows.append(row + (f",{int(rng.integers(0, 2))}" if with_cc else ""))
            if i < videos:
                items.append(_video(out / rel, split, rel, label, name, i, rng, render=render))
            else:
                items.append(
                    SynthItem(split, rel, label, name, "video", "", 0, 0, 0, 0.0, on_disk=False)
                )
        (out / "annotations" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return SynthSummary(layout, out, classes, tuple(items))


def _mit(
    out: Path,
    rng: np.random.Generator,
    videos: int,
    splits: tuple[str, ...],
    missing: int,
    render: Callable[..., np.ndarray],
) -> SynthSummary:
    by_index = sorted(MIT_CATEGORIES, key=lambda c: c[1])
    classes = tuple(name for name, _ in by_index)
    (out / "moments_categories.txt").write_text("".join(f"{n},{i}\n" for n, i in MIT_CATEGORIES))
    folders = {"train": ("training", "trainingSet.csv"), "val": ("validation", "validationSet.csv")}
    items: list[SynthItem] = []
    for split in splits:
        media, csv_name = folders[split]
        rows = []
        for i in range(videos + missing):
            label = (i * 2 + 1) % len(classes)  # visit classes out of index order
            name = classes[label]
            source = "yt" if i % 3 else "getty"
            rel_in_media = f"{name}/{source}-{_youtube_id(rng)}_{int(rng.integers(0, 200))}.mp4"
            # Real rows carry agreement counts after the label; readers use the first two.
            rows.append(f"{rel_in_media},{name},{int(rng.integers(2, 4))},4")
            rel = f"{media}/{rel_in_media}"
            if i < videos:
                items.append(_video(out / rel, split, rel, label, name, i + 1, rng, render=render))
            else:
                items.append(
                    SynthItem(split, rel, label, name, "video", "", 0, 0, 0, 0.0, on_disk=False)
                )
        (out / csv_name).write_text("".join(r + "\n" for r in rows))
    return SynthSummary("mit", out, classes, tuple(items))


# ImageNet's real quirks, put on the first train items: a PNG, a CMYK and a grey JPEG, all
# named `.JPEG`.
_IMAGENET_QUIRKS: tuple[tuple[str, str], ...] = (("PNG", "RGB"), ("JPEG", "CMYK"), ("JPEG", "L"))


def _imagenet(
    out: Path,
    rng: np.random.Generator,
    images: int,
    splits: tuple[str, ...],
    flat_val: bool,
    render: Callable[..., np.ndarray],
) -> SynthSummary:
    wnids = tuple(w for w, _ in sorted(IMAGENET_SYNSETS))
    (out / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {names}\n" for w, names in sorted(IMAGENET_SYNSETS))
    )
    items: list[SynthItem] = []
    for split in splits:
        counters = Counter()
        solution = ["ImageId,PredictionString"]
        for i in range(images):
            label = i % len(wnids)
            wnid = wnids[label]
            fmt, mode = _IMAGENET_QUIRKS[i] if split == "train" and i < 3 else ("JPEG", "RGB")
            if split == "train":
                counters[wnid] += 1
                rel = f"train/{wnid}/{wnid}_{1000 + counters[wnid] * 7}.JPEG"
            else:
                image_id = f"ILSVRC2012_val_{i + 1:08d}"
                rel = f"val/{image_id}.JPEG" if flat_val else f"val/{wnid}/{image_id}.JPEG"
                w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
                solution.append(
                    f"{image_id},{wnid} 1 1 {w - 2} {h - 2} {wnid} 3 2 {w - 4} {h - 3} "
                )
            items.append(_image(out / rel, split, rel, label, wnid, i, rng, fmt, mode, render))
        if split == "val" and flat_val:
            (out / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    return SynthSummary("imagenet", out, wnids, tuple(items))


def _folder(
    out: Path,
    rng: np.random.Generator,
    count: int,
    splits: tuple[str, ...],
    render: Callable[..., np.ndarray],
) -> SynthSummary:
    # One class tree per split: `<out>/<split>/<class>/<file>`; the folder reader's root is
    # the class tree (`<out>/train`), as for torchvision's ImageFolder.
    classes = FOLDER_CLASSES
    items: list[SynthItem] = []
    for split in splits:
        for i in range(count):
            label = i % len(classes)
            name = classes[label]
            ext, codec = FOLDER_FILES[i % len(FOLDER_FILES)]
            rel = f"{split}/{name}/{split}_{i:04d}{ext}"
            if ext.lower() in (".jpg", ".png", ".webp"):
                item = _image(out / rel, split, rel, label, name, i, rng, codec, render=render)
                items.append(item)
            else:
                items.append(
                    _video(out / rel, split, rel, label, name, i, rng, (0.5, 2.0), codec, render)
                )
        # Clutter every real folder has; readers must skip it.
        (out / split / classes[0] / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (out / split / "README.txt").write_text("synthetic class folders made by vicmae-data\n")
    return SynthSummary("folder", out, classes, tuple(items))
