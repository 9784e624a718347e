"""Small datasets in the exact on-disk layout of every dataset vicmae reads.

Each layout's twin sits beside its reader (``vicmae_data/sources/<family>.py``) and is
called through the registry, so a new layout needs nothing here. The media are real
files (PyAV-encoded video in several codecs and containers, Pillow images including
ImageNet's odd ones) drawn by `render_clip` (or, with `style="texture"`, by
`render_texture_clip`), so the class of every item is visible in its pixels. Tests, the
demo and users without data all use this.

    summary = synth_dataset("kinetics400", Path("k400-sample"), videos=24, seed=0)

The drawn class of an item always equals the label a correct reader must give it (sorted
class names for Kinetics, ImageNet and folders; the index file for Moments in Time and
Places365; the labels file's ids for Something-Something v2, whose test split is written
without labels: label -1).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from vicmae_data.defaults import SYNTH_ITEMS, SYNTH_STYLE
from vicmae_data.sources.folder import FOLDER_CLASSES, FOLDER_FILES
from vicmae_data.sources.imagenet import IMAGENET_SYNSETS
from vicmae_data.sources.kinetics import KINETICS_CLASSES
from vicmae_data.sources.layouts import SPLITS
from vicmae_data.sources.mit import MIT_CATEGORIES
from vicmae_data.sources.registry import DATASETS, REGISTRY
from vicmae_data.synth.media import (
    ClipSpec,
    render_clip,
    write_audio_only,
    write_image,
    write_video,
)
from vicmae_data.synth.twin import (
    IMAGE_SIZES,
    STYLES,
    VIDEO_PROFILES,
    SynthItem,
    SynthSummary,
    TwinRequest,
)

__all__ = [
    "FOLDER_CLASSES",
    "FOLDER_FILES",
    "IMAGENET_SYNSETS",
    "IMAGE_SIZES",
    "KINETICS_CLASSES",
    "LAYOUTS",
    "MIT_CATEGORIES",
    "STYLES",
    "VIDEO_PROFILES",
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


def synth_dataset(
    layout: str,
    out: Path,
    *,
    videos: int = SYNTH_ITEMS,
    seed: int = 0,
    splits: tuple[str, ...] = SPLITS,
    flat: bool | None = None,
    missing: int = 0,
    style: str = SYNTH_STYLE,
    variant: str | None = None,
) -> SynthSummary:
    """Write a small dataset in the on-disk layout of `layout` under `out`.

    videos: items per split (videos, or images for ImageNet and Places365). Items go
        round-robin over the classes, so with fewer items than classes only some classes
        appear and the labels a reader gives still equal the classes drawn.
    splits: among the splits the layout ships (SSv2: also `test`, written without labels).
    flat: Kinetics: clips flat in `<split>/` instead of `<split>/<label>/` (default: flat
        for kinetics600 only, so both variants exist); ImageNet: val flat with
        `LOC_val_solution.csv` (default) or in wnid folders.
    missing: Kinetics, MiT, SSv2 and Places365: extra annotated items per split left off
        the disk, as in the real releases.
    style: what the media show, a key of `STYLES` (the same files and layout either way).
    variant: for a layout with several releases (Places365: `small`, the default, or
        `large`), which one to write.
    Deterministic in its arguments.
    """
    entry = REGISTRY.get(layout)
    if entry is None:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(REGISTRY)}")
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    shipped = entry.splits or SPLITS
    bad = [s for s in splits if s not in shipped]
    if bad or not splits:
        raise ValueError(f"splits of {layout} must be among {shipped}, got {splits}")
    if variant is not None and variant not in entry.variants:
        raise ValueError(
            f"{layout} has no variant {variant!r} (it has: {entry.variants or 'none'})"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, zlib.crc32(layout.encode())])
    request = TwinRequest(
        layout, out, rng, videos, tuple(splits), flat, missing, STYLES[style], variant
    )
    return entry.twin(request)
