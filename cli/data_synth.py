"""`vicmae-data synth`: write a small example dataset in a real dataset's on-disk layout."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from vicmae_cli.common import fail
from vicmae_data.defaults import SYNTH_ITEMS, SYNTH_STYLE
from vicmae_data.sources.registry import DATASETS as LAYOUTS  # synth writes every layout
from vicmae_data.sources.registry import get_layout

# The keys of vicmae_data.synth.dataset.STYLES, named here so `--help` imports no media code.
STYLES: tuple[str, ...] = ("colour", "texture")


def synth(
    layout: str = typer.Option(
        ..., "--layout", "-l", help=f"Dataset layout to imitate: {', '.join(LAYOUTS)}."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the dataset into."),
    videos: int = typer.Option(
        SYNTH_ITEMS, "--videos", "-n", min=1, help="Items (videos or images) per split."
    ),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed; same seed, same dataset."),
    split: str = typer.Option(
        "both",
        "--split",
        help="train, val, both (train and val), or another split the layout ships "
        "(ssv2: test, written without labels).",
    ),
    flat: bool | None = typer.Option(
        None,
        "--flat/--nested",
        help="Kinetics: clips flat in <split>/ or in <split>/<label>/ (default: flat for "
        "kinetics600 only). ImageNet: val flat with LOC_val_solution.csv (default) or in "
        "wnid folders.",
    ),
    missing: int = typer.Option(
        0,
        "--missing",
        min=0,
        help="Kinetics, MiT, SSv2, Places365: annotated items per split left off the disk.",
    ),
    variant: str | None = typer.Option(
        None,
        "--variant",
        help="Which release, for a layout that ships several (places365: small, the "
        "default, or large).",
    ),
    style: str = typer.Option(
        SYNTH_STYLE,
        "--style",
        help="What the media show. colour: a shape whose colour, form and motion are the "
        "class (easy). texture: a pattern whose kind is the class while colours, position, "
        "size and orientation drift (random features stay near chance; make demo).",
    ),
) -> None:
    """Write a small dataset with real encoded media in the exact layout of LAYOUT.

    Videos: h264, vp9, mpeg4, hevc; several containers, sizes and frame rates (SSv2: its
    webm VP9 clips, tiny). Images include ImageNet's PNG, CMYK and grayscale files named
    .JPEG. Every layout `vicmae-data convert` reads is written file for file.
    Each item's class is visible in its frames (--style colour: a shape's colour, form and
    motion; --style texture: the kind of pattern on a disc whose colours, place, size and
    orientation drift).

    Example: vicmae-data synth --layout kinetics400 --out k400-sample --videos 24
    """
    if layout not in LAYOUTS:
        fail(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if style not in STYLES:
        fail(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    entry = get_layout(layout)
    shipped = entry.splits or ("train", "val")
    if split not in (*shipped, "both"):
        fail(f"unknown split {split!r} for {layout}; choose {', '.join(shipped)} or both")
    if variant is not None and variant not in entry.variants:
        choices = " or ".join(entry.variants) if entry.variants else "none: leave it out"
        fail(f"unknown variant {variant!r} for {layout}; its variants: {choices}")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vicmae-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        fail(f"cannot write to {out}: {e.strerror or e}")
    splits = ("train", "val") if split == "both" else (split,)
    try:
        from vicmae_data.synth.dataset import synth_dataset  # PyAV, numpy: only when used

        summary = synth_dataset(
            layout,
            out,
            videos=videos,
            seed=seed,
            splits=splits,
            flat=flat,
            missing=missing,
            style=style,
            variant=variant,
        )
    except (OSError, ValueError) as e:
        fail(f"synth {layout} into {out} failed: {e}")

    table = Table(title=f"{layout} sample in {out}", title_justify="left")
    table.add_column("split")
    table.add_column("files", justify="right")
    table.add_column("videos", justify="right")
    table.add_column("images", justify="right")
    table.add_column("frames", justify="right")
    for s in splits:
        items = summary.written(s)
        table.add_row(
            s,
            str(len(items)),
            str(sum(i.kind == "video" for i in items)),
            str(sum(i.kind == "image" for i in items)),
            str(sum(i.num_frames for i in items)),
        )
    console = Console()
    console.print(table)
    console.print(f"{len(summary.classes)} classes: {', '.join(summary.classes)}", highlight=False)
    console.print("next, convert it (README: try it on the sample):", highlight=False)
    for line in next_commands(layout, out, splits):
        console.print(f"  {line}", highlight=False, soft_wrap=True)


def next_commands(layout: str, out: Path, splits: tuple[str, ...]) -> list[str]:
    """The `vicmae-data convert` line of every split just written, as a user types it:
    ``--root`` only where it is not the default ``data/LAYOUT``; a layout without splits
    (class folders) converts each split's class tree itself."""
    lines = []
    for split in splits:
        if not get_layout(layout).splits:  # ROOT is the class tree: out/<split>/<class>/
            where = f"--root {shlex.quote(str(out / split))}"
        elif out == Path("data") / layout:
            where = f"--split {split}"
        else:
            where = f"--root {shlex.quote(str(out))} --split {split}"
        lines.append(f"vicmae-data convert {layout} {where} --out {split}.beton")
    return lines


def register(app: typer.Typer) -> None:
    """Add `synth` to `app`."""
    app.command("synth")(synth)
