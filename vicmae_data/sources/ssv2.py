"""Something-Something v2 as it ships: one folder of webm clips named by id, JSON annotations.

    ROOT/20bn-something-something-v2/<id>.webm         (VP9, 240 px high, 12 fps)
    ROOT/labels/something-something-v2-labels.json     {"<template without brackets>": "<id>"}
    ROOT/labels/something-something-v2-train.json      [{"id", "label", "template", "placeholders"}]
    ROOT/labels/something-something-v2-validation.json (the same; our split name: val)
    ROOT/labels/something-something-v2-test.json       [{"id"}]: no labels

The clips are the archive ``20bn-something-something-v2-??`` unpacked
(``cat 20bn-something-something-v2-?? | tar zx``, mmaction2's tools/data/sthv2/README.md);
the JSON files are the labels download, unpacked as ``labels/``. An entry's class is
``labels[template with "[" and "]" removed]``, the class id being a string (SlowFast's
``slowfast/datasets/ssv2.py`` and mmaction2's ``parse_sthv2_splits`` read it so:
``int(label_dict[template.replace("[", "").replace("]", "")])``). The class list stored in
the .beton is the templates ordered by their id (174 in the release). Ids are strings in
the files read so; an integer id is accepted too. The test split ships without labels:
its items get label -1 and the .beton marks them unlabelled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vicmae_data.sources.items import (
    MISSING,
    UNLABELLED,
    Found,
    Item,
    Layout,
    LayoutError,
)
from vicmae_data.sources.scan import Paths, Scanner, indexed_names, json_file

if TYPE_CHECKING:
    from vicmae_data.synth.twin import SynthSummary, TwinRequest

VIDEOS = "20bn-something-something-v2"
LABELS = "labels/something-something-v2-labels.json"
SPLIT_FILES = {
    "train": "labels/something-something-v2-train.json",
    "val": "labels/something-something-v2-validation.json",
    "test": "labels/something-something-v2-test.json",
}

# Real templates of the release (with their brackets, as the train/validation entries carry
# them) and the placeholders a twin fills in. Two templates hold more than "[something]",
# one an apostrophe and one commas: the bracket removal must keep all of that. The ids are
# deliberately not the alphabetical order of the templates (the release's happen to be), so
# a reader that sorts templates instead of reading the ids gives wrong labels.
SSV2_TEMPLATES: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("Holding [something] next to [something]", 3, ("potato", "vicks vaporub bottle")),
    ("Putting [number of] [something] onto [something]", 0, ("3", "coins", "a book")),
    ("Poking [something] so lightly that it doesn't or almost doesn't move", 5, ("a mug",)),
    (
        "Putting [something], [something] and [something] on the table",
        1,
        ("a pen", "a cup", "a key"),
    ),
    ("Approaching [something] with your camera", 4, ("a plant",)),
    ("Turning the camera left while filming [something]", 2, ("a chair",)),
)
# The release's clips are 240 px high at 12 fps; the twin's are a tenth as high, 1 s long.
# Widths vary as the release's do (some odd, as 427 is).
TWIN_SIZES: tuple[tuple[int, int], ...] = ((32, 24), (43, 24), (24, 24))
TWIN_FPS, TWIN_FRAMES = 12, 12
# Ids 1..220847 in the release, shuffled over the splits; a twin gives each split its own
# range (sized as the release's splits: 168,913 / 24,777 / 27,157), so twins of different
# splits written into one folder by separate runs never share a clip.
TWIN_IDS = {"train": (1, 168914), "val": (168914, 193691), "test": (193691, 220848)}


def template_key(template: str) -> str:
    """The labels file's key for a template: its brackets removed, nothing else changed."""
    return template.replace("[", "").replace("]", "")


def _classes(path: Path) -> list[str]:
    doc = json_file(path)
    if not isinstance(doc, dict) or not doc:
        raise LayoutError(f"{path} is not a JSON object mapping each template to its class id")

    def pairs():
        for template, cid in doc.items():
            if isinstance(cid, bool) or not isinstance(cid, (str, int)):
                raise LayoutError(f"{path}: the class id of {template!r} is {cid!r}")
            try:
                yield f"entry {template!r}", template, int(cid)
            except ValueError:
                raise LayoutError(
                    f"{path}: the class id of {template!r} is {cid!r}, not an integer"
                ) from None

    return indexed_names(pairs(), path)


def _entries(path: Path, labelled: bool, index: dict[str, int]):
    """(id, label, class name) of each entry of a split's JSON file."""
    doc = json_file(path)
    if not isinstance(doc, list):
        raise LayoutError(f"annotation file {path} is not a JSON list of videos")
    for k, entry in enumerate(doc):
        vid = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(vid, bool) or not isinstance(vid, (str, int)) or not str(vid).strip():
            raise LayoutError(f"annotation file {path} entry {k} has no usable id: {_short(entry)}")
        vid = str(vid).strip()
        if not labelled:
            yield vid, UNLABELLED, ""
            continue
        template = entry.get("template")
        if not isinstance(template, str):
            raise LayoutError(f"annotation file {path} entry {k} (id {vid}) has no template")
        key = template_key(template)
        if key not in index:
            raise LayoutError(
                f"annotation file {path} entry {k} (id {vid}): template {template!r} is not "
                f"in {Path(LABELS).name}"
            )
        yield vid, index[key], key


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_ssv2(root: Path, split: str, scan: Scanner, variant: str | None = None) -> Found:
    """List ``split`` (train, val or test) of Something-Something v2 under ``root``."""
    classes = _classes(root / LABELS)
    index = {c: i for i, c in enumerate(classes)}
    videos = root / VIDEOS
    if not videos.is_dir():
        raise LayoutError(f"Something-Something v2 video folder {videos} does not exist")
    by_stem: dict[str, str] = {}
    for name in sorted(scan(videos)[0]):
        stem, ext = os.path.splitext(name)
        if stem not in by_stem or ext == ".webm":  # as shipped: webm wins over a transcode
            by_stem[stem] = name
    items, missing = [], []
    paths = Paths(root)
    seen: set[str] = set()
    for vid, label, name in _entries(root / SPLIT_FILES[split], split != "test", index):
        if vid in seen or not scan.inside(vid):
            continue
        seen.add(vid)
        file = by_stem.get(vid)
        if file is None:
            missing.append({"path": str(videos / f"{vid}.webm"), "reason": MISSING})
        else:
            rel = f"{VIDEOS}/{file}"
            items.append(Item(paths(rel), label, name, rel))
    return Found(items, classes, missing)


def ssv2_twin(req: TwinRequest) -> SynthSummary:
    """The labels file, the JSON files of the requested splits (``test`` too, without
    labels) and their webm clips, all in one folder as shipped."""
    import json

    import numpy as np

    from vicmae_data.synth.twin import SynthSummary, absent, clip_item

    out, rng = req.out, req.rng
    by_id = sorted(SSV2_TEMPLATES, key=lambda t: t[1])
    classes = tuple(template_key(t) for t, _, _ in by_id)
    (out / "labels").mkdir(exist_ok=True)
    labels = {template_key(t): str(cid) for t, cid, _ in SSV2_TEMPLATES}
    (out / LABELS).write_text(json.dumps(labels, indent=4) + "\n")
    per_split = req.count + req.missing
    items = []
    for split in req.splits:
        ids = rng.choice(np.arange(*TWIN_IDS[split]), size=per_split, replace=False)
        entries = []
        for i in range(per_split):
            vid = str(int(ids[i]))
            drawn = i % len(classes)
            template, _, fill = by_id[drawn]
            entry: dict[str, Any] = {"id": vid}
            label, name = (UNLABELLED, "") if split == "test" else (drawn, classes[drawn])
            if split != "test":
                sentence = template
                for word in fill:
                    start, end = sentence.index("["), sentence.index("]")
                    sentence = sentence[:start] + word + sentence[end + 1 :]
                entry.update(label=sentence[0].lower() + sentence[1:], template=template)
                entry["placeholders"] = list(fill)
            entries.append(entry)
            rel = f"{VIDEOS}/{vid}.webm"
            if i >= req.count:
                items.append(absent(split, rel, label, name))
                continue
            width, height = TWIN_SIZES[i % len(TWIN_SIZES)]
            clip = ("vp9", "yuv420p", width, height, TWIN_FPS, TWIN_FRAMES)
            items.append(
                clip_item(out / rel, split, rel, label, name, clip, rng, req.render, drawn)
            )
        (out / SPLIT_FILES[split]).write_text(json.dumps(entries, indent=1) + "\n")
    return SynthSummary("ssv2", out, classes, tuple(items))


LAYOUT = Layout(
    name="ssv2",
    title="Something-Something v2",
    media="video",
    splits=("train", "val", "test"),
    unlabelled=("test",),
    split_files={"val": Path(SPLIT_FILES["val"]).name},
    classes_from="the ids of labels/something-something-v2-labels.json (template -> id)",
    files=(
        f"{VIDEOS}/<id>.webm",
        "labels/something-something-v2-{labels,train,validation,test}.json",
    ),
    read=read_ssv2,
    twin=ssv2_twin,
)
