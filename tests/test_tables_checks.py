"""``read_tables`` and ``checked_allocations`` at the edge of each check: a real .beton from
the writer, cut short or with one header field or allocation entry rewritten, is accepted
up to each limit and refused one byte past it, with the one-line reason of that check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from vicmae_data.format.beton import Sample
from vicmae_data.format.frame_blob import FrameList
from vicmae_data.format.tables import ALLOC, HEADER, TableError, read_tables
from vicmae_data.write.beton_writer import write_beton

N = 3  # samples in the file


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    samples = [
        Sample(FrameList([bytes([i, t]) * (5 + i) for t in range(2)], 8, 8), i, {"i": i})
        for i in range(N)
    ]
    return write_beton(tmp_path_factory.mktemp("tables") / "good.beton", samples)


def _variant(good: Path, tmp_path: Path, cut: int | None = None, **header) -> Path:
    """A copy of ``good`` cut to ``cut`` bytes, with ``header`` fields rewritten."""
    data = good.read_bytes()
    fields = np.frombuffer(data, HEADER, count=1).copy()
    for name, value in header.items():
        fields[name] = value
    data = (fields.tobytes() + data[HEADER.itemsize :])[:cut]
    path = tmp_path / f"v{len(list(tmp_path.iterdir()))}.beton"
    path.write_bytes(data)
    return path


def _error(path: Path) -> str:
    with pytest.raises(TableError) as info:
        read_tables(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_file_cut_short_is_refused_by_the_check_that_sees_it(good, tmp_path):
    t = read_tables(good)
    fields_end = HEADER.itemsize + t.descriptors.nbytes
    tables_end, table_ptr, size = t.data_start, t.data_end, t.file_bytes
    fit = f"header announces 3 fields and {N} samples, which do not fit"
    outside = f"allocation table pointer {table_ptr} is outside the file"
    expected = {
        0: "0 bytes: too short for a .beton header",
        HEADER.itemsize - 1: f"{HEADER.itemsize - 1} bytes: too short for a .beton header",
        HEADER.itemsize: f"{fit} {HEADER.itemsize} bytes",  # a whole header, nothing more
        fields_end - 1: f"{fit} {fields_end - 1} bytes",
        fields_end + 1: f"{fit} {fields_end + 1} bytes",  # into the metadata table
        tables_end - 1: f"{fit} {tables_end - 1} bytes",
        tables_end: outside,  # every table whole, the data gone
        table_ptr - 1: outside,
        table_ptr + 1: "the allocation table is not whole: the file was cut short or damaged",
        size - 1: "the allocation table is not whole: the file was cut short or damaged",
    }
    for cut, message in expected.items():
        assert _error(_variant(good, tmp_path, cut)) == message, cut
    assert read_tables(_variant(good, tmp_path, table_ptr)).alloc_table().size == 0


def test_the_allocation_table_may_start_anywhere_from_the_tables_end_to_the_files(good, tmp_path):
    t = read_tables(good)
    tables_end, size = t.data_start, t.file_bytes
    # Nothing but the tables: no data, no allocation.
    bare = read_tables(_variant(good, tmp_path, tables_end, alloc_table_ptr=tables_end))
    assert bare.data_start == bare.data_end == bare.file_bytes == tables_end
    assert bare.checked_allocations().size == 0
    # The whole file after the tables is data; the allocation table is empty.
    assert read_tables(_variant(good, tmp_path, alloc_table_ptr=size)).alloc_table().size == 0
    for ptr in (tables_end - 1, size + 1):
        path = _variant(good, tmp_path, alloc_table_ptr=ptr)
        assert _error(path) == f"allocation table pointer {ptr} is outside the file"


def _with_entry(good: Path, tmp_path: Path, k: int, ptr: int, size: int) -> Path:
    """A copy of ``good`` whose allocation entry ``k`` is rewritten to ``(ptr, size)``."""
    t = read_tables(good)
    table = t.alloc_table()
    table[k]["ptr"], table[k]["size"] = ptr, size
    path = tmp_path / f"e{len(list(tmp_path.iterdir()))}.beton"
    path.write_bytes(good.read_bytes()[: t.data_end] + table.tobytes())
    return path


def test_an_allocation_is_accepted_inside_the_data_and_refused_a_byte_outside(good, tmp_path):
    t = read_tables(good)
    lo, hi, k = t.data_start, t.data_end, 2
    assert len(t.alloc_table()) == 2 * N and t.alloc_table().dtype == ALLOC
    inside = [(lo, 1), (hi - 5, 5), (hi, 0)]  # the data's first byte, its last, an empty one
    outside = [(lo - 1, 1), (hi - 5, 6), (hi, 1), (hi + 1, 0), (0, 0)]
    for ptr, size in inside:
        read_tables(_with_entry(good, tmp_path, k, ptr, size)).checked_allocations()
    for ptr, size in outside:
        tables = read_tables(_with_entry(good, tmp_path, k, ptr, size))
        with pytest.raises(TableError, match=rf"^allocation table entry {k} \(of 1 such\)"):
            tables.checked_allocations()


def test_the_page_size_is_any_power_of_two(good, tmp_path):
    for page in (1, 2, 4096, 1 << 31):
        assert read_tables(_variant(good, tmp_path, page_size=page)).page_size == page
    for page in (0, 3, 6, 3 << 20):
        message = _error(_variant(good, tmp_path, page_size=page))
        assert message == f"page size {page} is not a power of two"


def test_the_tables_read_are_frozen_and_read_only(good):
    t = read_tables(good)
    assert t.field_names == ["frames", "label", "meta"] and t.num_samples == N
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.file_bytes = 0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        t.metadata["f1"][0] = 7
    assert list(t.column("label")) == list(range(N))
