"""A contact sheet of one sample's frames: people would rather look than read.

Layout (every size in pixels)::

    +------------------------------------------------+
    | title (class, label, frames, fps, h x w, source) |  title_h
    +------------------------------------------------+
    | pad | thumb | pad | thumb | pad | ... | pad     |
    |     | caption     | caption                      |  caption_h under each thumb
    | pad ...                                          |
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vicmae_data.atomic import atomic_path
from vicmae_data.defaults import PREVIEW_MAX_FRAMES, PREVIEW_THUMB_WIDTH
from vicmae_data.format.beton import BetonError, BetonFile
from vicmae_data.inspect.read import decode_frames
from vicmae_data.sources.items import UNLABELLED

PAD = 6
CAPTION_H = 18
TITLE_H = 26
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


@dataclass(frozen=True)
class SheetLayout:
    """Where the thumbnails go; ``width``/``height`` are the sheet's size."""

    cols: int
    rows: int
    thumb_w: int
    thumb_h: int
    pad: int = PAD
    caption_h: int = CAPTION_H
    title_h: int = TITLE_H

    @property
    def width(self) -> int:
        return self.cols * (self.thumb_w + self.pad) + self.pad

    @property
    def height(self) -> int:
        return self.title_h + self.rows * (self.thumb_h + self.caption_h + self.pad) + self.pad

    def origin(self, k: int) -> tuple[int, int]:
        """Top-left corner of thumbnail ``k`` (row-major)."""
        r, c = divmod(k, self.cols)
        return (
            self.pad + c * (self.thumb_w + self.pad),
            self.title_h + r * (self.thumb_h + self.caption_h + self.pad),
        )


def sheet_layout(
    num: int,
    frame_h: int,
    frame_w: int,
    *,
    cols: int | None = None,
    thumb_width: int = PREVIEW_THUMB_WIDTH,
) -> SheetLayout:
    """Grid for ``num`` frames of ``frame_h x frame_w``, scaled to ``thumb_width`` wide."""
    if num < 1:
        raise ValueError("a contact sheet needs at least one frame")
    cols = max(1, min(num, cols if cols else math.ceil(math.sqrt(num))))
    rows = math.ceil(num / cols)
    thumb_h = max(1, round(frame_h * thumb_width / frame_w))
    return SheetLayout(cols=cols, rows=rows, thumb_w=thumb_width, thumb_h=thumb_h)


def pick_frames(num_frames: int, max_frames: int) -> list[int]:
    """Up to ``max_frames`` indices spread evenly from the first frame to the last."""
    if num_frames <= max_frames:
        return list(range(num_frames))
    return sorted({round(float(x)) for x in np.linspace(0, num_frames - 1, max_frames)})


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(
    frames: np.ndarray,
    indices: Sequence[int],
    *,
    fps: float = 0.0,
    title: str = "",
    cols: int | None = None,
    thumb_width: int = PREVIEW_THUMB_WIDTH,
) -> Image.Image:
    """Frames ``[K, H, W, 3]`` (frame numbers ``indices``) -> one RGB image.

    Each thumbnail is captioned with its frame number and, when ``fps > 0``, its time.
    """
    k, h, w, _ = frames.shape
    layout = sheet_layout(k, h, w, cols=cols, thumb_width=thumb_width)
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    small, big = _font(12), _font(14)
    draw.text((layout.pad, 5), _fit(draw, title, big, layout.width - 2 * layout.pad), TEXT, big)
    for j, (frame, t) in enumerate(zip(frames, indices, strict=True)):
        x, y = layout.origin(j)
        thumb = Image.fromarray(frame).resize((layout.thumb_w, layout.thumb_h), Image.BILINEAR)
        sheet.paste(thumb, (x, y))
        caption = f"#{t}" + (f"  {t / fps:.2f} s" if fps > 0 else "")
        caption = _fit(draw, caption, small, layout.thumb_w)
        draw.text((x, y + layout.thumb_h + 2), caption, TEXT, small)
    return sheet


def write_preview(
    path: str | os.PathLike,
    index: int,
    out: str | os.PathLike,
    *,
    max_frames: int = PREVIEW_MAX_FRAMES,
    cols: int | None = None,
    thumb_width: int = PREVIEW_THUMB_WIDTH,
) -> Path:
    """Write a contact sheet of sample ``index`` of ``path`` to ``out`` (PNG, atomically).

    Example::

        write_preview("k400.beton", 12, "grid.png", max_frames=16)
    """
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    beton = BetonFile(path)
    n = len(beton)
    if not 0 <= index < n:
        raise IndexError(f"{beton.path}: sample {index} out of range (the file has {n} samples)")
    all_frames = beton.frame_bytes(index)
    meta = beton.meta(index)
    picked = pick_frames(len(all_frames), max_frames)
    try:
        frames = decode_frames([all_frames[t] for t in picked])  # [K, H, W, 3]
    except ValueError as exc:
        raise BetonError(f"{beton.path}: sample {index}: {exc}") from None
    fps = float(meta.get("fps", 0.0) or 0.0)
    label = int(beton.labels[index])
    h, w = frames.shape[1:3]
    name = str(meta.get("class_name", "?"))
    manifest = beton.manifest
    if manifest is not None and 0 <= label < manifest.num_classes and manifest.titles:
        name = f"{manifest.title(label)} [{name}]"
    elif label == UNLABELLED and manifest is not None and manifest.unlabelled:
        name = "unlabelled"
    title = (
        f"#{index}  {name} (label {label})  {len(all_frames)} frames"
        + (f" @ {fps:g} fps" if fps > 0 else "")
        + f"  {h} x {w} (h x w)  {meta.get('source', '')}"
    )
    sheet = contact_sheet(frames, picked, fps=fps, title=title, cols=cols, thumb_width=thumb_width)
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
