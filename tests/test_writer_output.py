"""What the .beton writer puts on disk beyond the samples' bytes: JSON metas packed without
crossing a page, its own account of the file's bytes, and the file's mode."""

from __future__ import annotations

import dataclasses
import os
import stat

import numpy as np
import pytest
from ffcv.reader import Reader

from vicmae_data.format.beton import BetonFile, Sample, custom_fields, encode_meta
from vicmae_data.format.frame_blob import FrameList, packed_size
from vicmae_data.format.manifest import Manifest
from vicmae_data.format.pages import choose_page_size
from vicmae_data.format.tables import FIELD_DESC, FIELDS, HEADER, METADATA
from vicmae_data.write.beton_writer import write_beton, write_beton_stats


def _sample(i: int, meta: dict) -> Sample:
    frames = [bytes([i, t]) * (4 + i) for t in range(1 + i % 2)]  # the writer never decodes
    return Sample(FrameList(frames, 8, 8), i, meta)


def _meta_of_size(size: int) -> dict:
    """A meta whose stored bytes (JSON and ffcv's NUL) number exactly ``size``."""
    meta = {"pad": "x" * (size - len(encode_meta({"pad": ""})))}
    assert len(encode_meta(meta)) == size
    return meta


def test_metas_fill_a_page_exactly_and_move_only_when_they_would_cross(tmp_path):
    """Three metas after the frame blobs: the first ends exactly at the first page boundary
    (stays), the second starts a page (stays), the third would cross the next boundary by
    one byte (moves to it). ffcv's Reader sees no allocation across a page; every sample
    reads back, ffcv's Reader reads the metadata table as written; the only gap is the
    third meta's move."""
    n, m = 3, 40
    frames = [_sample(i, {}) for i in range(n)]
    sizes = [packed_size(s.frames.frames) for s in frames]
    start = HEADER.itemsize + len(FIELDS) * FIELD_DESC.itemsize + n * METADATA.itemsize
    plan = choose_page_size(sizes, start)
    page, first = plan.page_size, plan.end  # metas go right after the last frame blob
    assert first < page
    metas = [
        _meta_of_size(page - first),  # ends at the boundary: fits
        _meta_of_size(page - (m - 1)),  # starts a page, leaves m - 1 bytes of it
        _meta_of_size(m),  # would take those and the next page's first byte
    ]
    samples = [dataclasses.replace(s, meta=meta) for s, meta in zip(frames, metas, strict=True)]
    out = tmp_path / "metas.beton"
    stats = write_beton_stats(out, samples, num_workers=1)

    beton = BetonFile(out)
    assert [int(p) for p in beton.tables.column("meta")["ptr"]] == [first, page, 2 * page]
    assert [beton.sample(i) for i in range(n)] == samples
    reader = Reader(str(out), custom_fields())  # ffcv reads the tables as written
    assert reader.metadata.dtype == beton.tables.metadata.dtype
    assert reader.metadata.tobytes() == beton.tables.metadata.tobytes()
    table = reader.alloc_table
    ptr, size = table["ptr"].astype(np.int64), table["size"].astype(np.int64)
    assert (ptr // page == (ptr + size - 1) // page).all()
    assert stats.padding == m - 1 and stats.page_size == page


@pytest.mark.parametrize("manifest", [None, Manifest(("a", "b", "c"), sources=({"x": 1},))])
def test_the_writers_account_of_the_bytes_is_what_info_reads(tmp_path, manifest):
    """Small samples pack with no gap: every byte is a table (the manifest and its
    alignment included) or stored data, as the file read back says too."""
    samples = [_sample(i, {"i": i, "text": "é" * i}) for i in range(5)]
    out = tmp_path / "s.beton"
    stats = write_beton_stats(out, samples, num_workers=1, manifest=manifest)
    beton = BetonFile(out)
    assert (beton.manifest is None) == (manifest is None)
    assert stats.path == out and stats.samples == 5 and stats.page_size == beton.page_size
    assert stats.file_bytes == out.stat().st_size == beton.file_bytes
    assert stats.stored_bytes == beton.stored_bytes
    assert stats.table_bytes == beton.table_bytes
    assert stats.padding == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.samples = 6  # type: ignore[misc]


def test_the_file_is_readable_by_all_under_the_usual_umask(tmp_path):
    """Like any file a tool writes (0o666 less the umask, less execute bits): rw-r--r--
    under a umask of 022, not the 0o600 of a temporary file."""
    old = os.umask(0o022)
    try:
        out = write_beton(tmp_path / "m.beton", [_sample(0, {})])
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
