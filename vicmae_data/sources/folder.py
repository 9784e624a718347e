"""Class folders, like torchvision's ``ImageFolder``: ``ROOT/<class>/<file>``, videos or images.

The root is the class tree itself (point ``--root`` at ``data/mydata/train``) and ``split``
is only recorded. Labels index the sorted class folder names; media in subfolders of a
class belong to it; hidden files and non-media files are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vicmae_data.sources.items import Found, Item, Layout
from vicmae_data.sources.scan import Scanner

if TYPE_CHECKING:
    from vicmae_data.synth.twin import SynthSummary, TwinRequest

FOLDER_CLASSES: tuple[str, ...] = ("cats", "dogs", "horses", "zebras")
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


def read_folder(root: Path, split: str, scan: Scanner, variant: str | None = None) -> Found:
    """List the class tree ``root`` (``split`` is only a name here)."""
    # A class folder that is a link to one already listed (`zloop -> .`) is no class.
    classes = [d for d in sorted(scan(root)[1]) if scan.claim(root / d)]
    items = []
    for label, name in enumerate(classes):
        stack = [name]  # relative folders to list, depth first in sorted order
        while stack:
            rel_dir = stack.pop()
            files, dirs = scan(root / rel_dir, claimed=rel_dir == name)
            folder = root / rel_dir
            items += [Item(folder / f, label, name, f"{rel_dir}/{f}") for f in files]
            stack += [f"{rel_dir}/{d}" for d in sorted(dirs, reverse=True)]
    return Found(items, classes)


def folder_twin(req: TwinRequest) -> SynthSummary:
    """One class tree per split, ``<out>/<split>/<class>/<file>``, mixing containers and
    image formats, with the clutter every real folder has (readers must skip it)."""
    from vicmae_data.synth.twin import SynthSummary, image_item, video_item

    out, rng, render = req.out, req.rng, req.render
    classes = FOLDER_CLASSES
    items = []
    for split in req.splits:
        for i in range(req.count):
            label = i % len(classes)
            name = classes[label]
            ext, codec = FOLDER_FILES[i % len(FOLDER_FILES)]
            rel = f"{split}/{name}/{split}_{i:04d}{ext}"
            if ext.lower() in (".jpg", ".png", ".webp"):
                items.append(
                    image_item(out / rel, split, rel, label, name, i, rng, codec, render=render)
                )
            else:
                items.append(
                    video_item(
                        out / rel, split, rel, label, name, i, rng, (0.5, 2.0), codec, render
                    )
                )
        (out / split / classes[0] / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (out / split / "README.txt").write_text("synthetic class folders made by vicmae-data\n")
    return SynthSummary("folder", out, classes, tuple(items))


LAYOUT = Layout(
    name="folder",
    title="class folders, like torchvision's ImageFolder",
    media="mixed",
    splits=(),
    classes_from="the sorted class folder names",
    files=("<class>/[<subfolder>/]<file>: videos and images; ROOT is the class tree itself",),
    read=read_folder,
    twin=folder_twin,
)
