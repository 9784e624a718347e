"""The .beton writer: page packing, no padding, ffcv's own Reader and Loader, clear errors."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from ffcv.fields.basics import IntDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.reader import Reader
from ffcv.transforms import ToTensor
from media import tmpfs

from vicmae_data.format.beton import BetonFile, Sample, custom_fields
from vicmae_data.format.frame_blob import FrameList
from vicmae_data.format.frames import WebPFramesField
from vicmae_data.format.manifest import Manifest
from vicmae_data.format.pages import (
    MIN_PAGE_SIZE,
    choose_page_size,
    plan_pages,
    smallest_page_for,
)
from vicmae_data.load.decoder import WebPFramesDecoder
from vicmae_data.synth.footage import render_footage
from vicmae_data.synth.media import write_video
from vicmae_data.write.beton_writer import write_beton
from vicmae_data.write.convert import ConvertError, convert

# The long clip is sized so that, at this quality, it needs more than ffcv's smallest page.
Q = 90

# --------------------------------------------------------------------------- the plan


def _check_plan(plan, sizes, start):
    addr = plan.addresses.astype(np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    assert (addr >= start).all()
    # No blob crosses a page boundary (ffcv's process cache slices it out of one page).
    assert (addr // plan.page_size == (addr + sizes - 1) // plan.page_size).all()
    # No two blobs overlap.
    order = np.argsort(addr)
    assert (addr[order][1:] >= (addr + sizes)[order][:-1]).all()
    assert plan.end == int((addr + sizes).max())
    assert plan.waste == plan.end - start - int(sizes.sum())


def test_plan_packs_without_crossing_or_overlap():
    rng = np.random.default_rng(0)
    sizes = rng.integers(10_000, 900_000, 500)
    sizes[37] = 3_500_000  # one long clip forces 4 MiB pages
    plan = plan_pages(sizes, start=12_345, page_size=smallest_page_for(int(sizes.max())))
    assert plan.page_size == 4 << 20
    _check_plan(plan, sizes, 12_345)
    assert plan.waste < 0.01 * sizes.sum()


def test_plan_doubles_the_page_when_samples_do_not_pack():
    # Every sample just over half a page: one per page, 40% gaps at the smallest page.
    sizes = np.full(40, int(0.6 * MIN_PAGE_SIZE))
    tight = plan_pages(sizes, 0, MIN_PAGE_SIZE)
    assert tight.waste > 0.3 * sizes.sum()
    plan = choose_page_size(sizes, 0)
    _check_plan(plan, sizes, 0)
    assert plan.page_size > MIN_PAGE_SIZE and plan.waste <= 0.05 * sizes.sum()


def test_plan_keeps_index_order_local():
    sizes = np.full(1000, 300_000)
    plan = plan_pages(sizes, 0, MIN_PAGE_SIZE)
    pages = plan.addresses // MIN_PAGE_SIZE
    assert (np.diff(pages.astype(np.int64)) >= 0).all()  # equal sizes: strictly in order


# --------------------------------------------------------------------------- a real file


@pytest.fixture(scope="module")
def one_long_clip(tmp_path_factory) -> Path:
    """A folder dataset: five 12-frame clips and one 300-frame clip of textured footage."""
    root = tmp_path_factory.mktemp("long") / "clips"
    frames = render_footage(60, 128, 160, seed=1)
    for i in range(5):
        (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        write_video(root / f"class{i % 2}" / f"short{i}.mp4", frames[i * 12 : i * 12 + 12])
    write_video(root / "class0" / "long.mp4", np.concatenate([frames] * 5))
    return root


def test_small_set_with_one_long_clip_has_no_padding(one_long_clip, tmp_path):
    out = tmp_path / "long.beton"
    convert("folder", one_long_clip, out, workers=1, short_side=128, quality=Q)
    beton = BetonFile(out)
    sizes = np.asarray(beton.frames_meta["size"], dtype=np.int64)
    assert len(beton) == 6 and int(beton.frames_meta["num_frames"].max()) == 300
    assert sizes.max() > MIN_PAGE_SIZE  # the long clip alone needs more than ffcv's smallest page
    file_bytes = out.stat().st_size
    assert file_bytes <= 1.05 * sizes.sum(), (file_bytes, int(sizes.sum()))

    # ffcv's own Reader opens it, and every allocation sits inside one page.
    reader = Reader(str(out), custom_fields())
    assert reader.num_samples == 6 and reader.page_size == beton.page_size
    table = reader.alloc_table
    assert len(table) == 12  # frames + meta per sample
    page = int(reader.page_size)
    ptr, size = table["ptr"].astype(np.int64), table["size"].astype(np.int64)
    assert (ptr // page == (ptr + size - 1) // page).all()
    assert int((ptr + size).max()) <= file_bytes

    # ffcv's own Loader with its page reader (the one that needs the page rules) decodes
    # every frame: no view is black, labels as stored.
    decoder = WebPFramesDecoder(num_views=2, resolution=32, train=False)
    loader = Loader(
        str(out),
        batch_size=3,
        num_workers=1,
        os_cache=False,
        order=OrderOption.SEQUENTIAL,
        pipelines={
            "frames": [decoder, ToTensor()],
            "label": [IntDecoder(), ToTensor()],
            "meta": None,
        },
        custom_fields=custom_fields(),
        drop_last=False,
    )
    labels = []
    for views, label in loader:
        assert views.shape[1:] == (2, 32, 32, 3)
        assert (views.reshape(len(views), -1).float().mean(1) > 10).all()
        labels += label[:, 0].tolist()
    assert decoder.failures == 0
    assert labels == [int(x) for x in beton.labels]


# --------------------------------------------------------------------------- a full disk


def test_disk_full_while_writing_is_one_error_and_keeps_the_parts(one_long_clip, tmp_path):
    """The parts fit, the .beton does not: a clear error within seconds, nothing lost."""
    with tmpfs(tmp_path / "small", "size=5m") as disk:
        out = disk / "k.beton"
        start = time.perf_counter()
        with pytest.raises(ConvertError, match="disk full") as info:
            convert("folder", one_long_clip, out, workers=1, short_side=128, quality=Q)
        assert time.perf_counter() - start < 60
        message = str(info.value)
        assert "\n" not in message and "rerun" in message
        assert not out.exists()
        assert not [p for p in disk.iterdir() if p.name.startswith(".")]  # no temporary left
        parts = disk / "k.beton.parts"
        assert len(list(parts.glob("*/*.part"))) == 6  # every encoded item kept
        subprocess.run(["mount", "-o", "remount,size=40m", str(disk)], check=True)
        report = convert("folder", one_long_clip, out, workers=1, short_side=128, quality=Q)
        assert report.totals["resumed"] == 6 and report.written == 6  # nothing re-encoded
        assert len(BetonFile(out)) == 6 and not parts.exists()


# --------------------------------------------------------------------------- the bytes


def _fixed_samples() -> list[Sample]:
    """Nine samples whose every byte is set here (no encoder, no random stream in the loop):
    1 to 4 frames each, a label -1 (a split without labels), metas with non-ASCII text,
    nested values and floats."""
    samples = []
    for i in range(9):
        frames = [
            bytes((31 * i + 7 * t + k) % 251 for k in range(40 + 23 * i + t))
            for t in range(1 + i % 4)
        ]
        meta = {
            "source": f"clips/{i:03d}.mp4",
            "class_name": "café" if i % 2 else "bowling",
            "fps": 29.97 if i % 3 else 0.0,
            "num_frames": len(frames),
            "partial": i == 4,
            "extra": {"k": [1, 2.5, None], "ü": "ß"},
        }
        label = -1 if i == 8 else i % 3
        samples.append(Sample(FrameList(frames, 16 + i, 24 + 2 * i), label, meta))
    return samples


# sha256 of the file _fixed_samples() make with the writer built on ffcv's own definitions
# (ffcv.types' dtypes, IntField/JSONField.encode), recorded before the writer stopped
# importing ffcv: the file must stay byte for byte what it was.
FIXED_SHA256 = "7ea28dea8569af7fa582d86ad88652d154f04dd2261873975c3389830124bf54"


def test_the_file_is_byte_for_byte_what_ffcvs_definitions_wrote(tmp_path):
    out = tmp_path / "fixed.beton"
    manifest = Manifest(("bowling", "café", "x"), images=((1, 2),), sources=({"start": 0},))
    write_beton(out, _fixed_samples(), num_workers=1, manifest=manifest)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == FIXED_SHA256, "the writer no longer writes the bytes ffcv's fields wrote"
    beton = BetonFile(out)  # and it reads back as written
    assert [beton.sample(i) for i in range(len(beton))] == _fixed_samples()
    # The frames field, an ffcv Field ffcv's own DatasetWriter could use, encodes the rows
    # and bytes the writer stored.
    for i, sample in enumerate(_fixed_samples()):
        row, ptr = np.zeros(1, beton.frames_meta.dtype), int(beton.frames_meta[i]["ptr"])
        buffer = np.empty(int(beton.frames_meta[i]["size"]), np.uint8)
        WebPFramesField().encode(row, sample.frames, lambda size, p=ptr, b=buffer: (p, b[:size]))
        assert row[0] == beton.frames_meta[i] and np.array_equal(buffer, beton.blob(i))
