"""Damaged table rows never size a buffer, and opt-in CRC checks (issue 19, item 4).

Real files written by the real writer, then damaged where a flipped bit lands in practice:
a sample's row in the metadata table (no CRC covers it), or its frame bytes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from media import make_tiny_beton

from vicmae_data import make_loader
from vicmae_data.format.beton import BetonFile
from vicmae_data.format.tables import FIELD_DESC, HEADER, METADATA
from vicmae_data.load.rows import check_rows

ROWS = HEADER.itemsize + 3 * FIELD_DESC.itemsize  # where the metadata table starts
FRAMES = METADATA.fields["f0"][1]  # the frames field's row inside a metadata row


def _poke(data: bytearray, sample: int, column: str, value: int) -> None:
    """Overwrite one column of sample ``sample``'s frames row."""
    dtype, offset = METADATA.fields["f0"][0].fields[column]
    at = ROWS + sample * METADATA.itemsize + FRAMES + offset
    data[at : at + dtype.itemsize] = value.to_bytes(dtype.itemsize, "little")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory):
    return make_tiny_beton(tmp_path_factory.mktemp("rows") / "good.beton", n=12, size=32)


def test_rows_that_disagree_with_their_blob_are_left_out_before_sizing(good, tmp_path) -> None:
    data = bytearray(good.read_bytes())
    _poke(data, 3, "height", 16000)  # plausible alone (WebP allows 16383), not for its frames
    _poke(data, 3, "width", 16000)
    _poke(data, 5, "num_frames", 2)  # its frame table holds 4
    _poke(data, 7, "height", 60000)  # beyond WebP: the file's own check
    _poke(data, 9, "width", 33)  # one bit off: 32 -> 33
    bad = tmp_path / "rows.beton"
    bad.write_bytes(bytes(data))
    damaged = check_rows(BetonFile(bad))
    assert sorted(damaged) == [3, 5, 7, 9]
    assert "16000x16000 disagrees with its frames' WebP header (32x32)" in damaged[3]
    assert "frame count disagrees" in damaged[5]
    assert "impossible" in damaged[7]
    assert "32x33 disagrees" in damaged[9]
    with pytest.warns(UserWarning, match=r"4 samples left out.*samples \[3, 5, 7, 9\]") as caught:
        loader = make_loader(str(bad), 4, num_workers=2, resolution=16)
    assert len([w for w in caught if "left out" in str(w.message)]) == 1  # one warning
    seen = [i for b in loader for i in b.indices.tolist()]
    assert sorted(seen) == sorted(set(range(12)) - {3, 5, 7, 9})
    # Every buffer was sized from the good rows (32 x 32 frames): the decoder's scratch
    # holds one such frame per sample, not a 16000 x 16000 one (768 MB) nor a 33-wide one.
    scratch = [a for a in buffers(loader) if a.dtype == np.uint8 and a.ndim == 3]
    assert [a.shape[2] for a in scratch] == [32 * 32 * 3]


def test_a_small_row_whose_frames_cannot_be_read_is_kept(good, tmp_path) -> None:
    """Damage in the frames themselves is the decoder's to count, not the row check's."""
    beton = BetonFile(good)
    row = beton.frames_meta[4]
    data = bytearray(good.read_bytes())
    start = int(row["ptr"]) + 4 * (int(row["num_frames"]) + 1)
    data[start : start + 16] = b"\0" * 16  # every frame header of sample 4 (4 frames) gone
    for f in range(1, 4):
        at = int(row["ptr"]) + int.from_bytes(data[int(row["ptr"]) + 4 * f :][:4], "little")
        data[at : at + 16] = b"\0" * 16
    bad = tmp_path / "frames.beton"
    bad.write_bytes(bytes(data))
    assert check_rows(BetonFile(bad)) == {}
    _poke(data, 4, "height", 64)  # now it claims more than any checked row: left out
    bad.write_bytes(bytes(data))
    assert list(check_rows(BetonFile(bad))) == [4]


def test_check_crc_leaves_a_damaged_sample_black_and_names_it(good, tmp_path, caplog) -> None:
    row = BetonFile(good).frames_meta[2]
    data = bytearray(good.read_bytes())
    frame1 = int(row["ptr"]) + int.from_bytes(data[int(row["ptr"]) + 4 :][:4], "little")
    data[frame1 + 40] ^= 0x10  # inside frame 1's image data, past its headers
    bad = tmp_path / "crc.beton"
    bad.write_bytes(bytes(data))
    assert not BetonFile(bad).checksum_ok(2) and BetonFile(bad).checksum_ok(1)
    kw = dict(num_workers=2, resolution=16, seed=3, drop_last=False)
    plain = views_by_index(make_loader(str(bad), 4, **kw))
    checked = make_loader(str(bad), 4, check_crc=True, **kw)
    with caplog.at_level(logging.WARNING, logger="vicmae_data.load.epochs"):
        got = views_by_index(checked)
    assert checked.crc_failures == 1 and checked.decode_failures == 0
    assert "1 sample(s) failed their CRC32 check" in caplog.text
    assert "crc.beton samples [2]" in caplog.text
    assert (got[2] == 0).all() and plain[2].any()
    for i in range(12):
        if i != 2:
            assert torch.equal(got[i], plain[i])  # the check changes nothing else
    clean = make_loader(str(good), 4, check_crc=True, **kw)
    assert sum(len(b.labels) for b in clean) == 12 and clean.crc_failures == 0


def views_by_index(loader) -> dict[int, torch.Tensor]:
    """One epoch's views, by sample index (copied out of the loader's buffers)."""
    out = {}
    for batch in loader:
        out.update(zip(batch.indices.tolist(), batch.views.clone(), strict=True))
    return out


def buffers(loader) -> list[np.ndarray]:
    """Every buffer the (iterated) loader's first file allocated."""
    out = []

    def walk(tree) -> None:
        if isinstance(tree, np.ndarray):
            out.append(tree)
        elif isinstance(tree, dict | list | tuple):
            for v in tree.values() if isinstance(tree, dict) else tree:
                walk(v)

    walk(loader.loaders[0].graph.buffers)
    return out


def test_the_first_check_in_a_fresh_process_leaves_nothing_open(good, tmp_path) -> None:
    """A process that compiles the row check for the first time (an empty numba cache, as
    after an install) and has not collected garbage yet: the file is checked, no BufferError
    from closing a map numba's compile still references."""
    code = (
        "import gc, sys; gc.disable()\n"
        "from vicmae_data.format.beton import BetonFile\n"
        "from vicmae_data.load.rows import check_rows\n"
        "print(check_rows(BetonFile(sys.argv[1])))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    done = subprocess.run([sys.executable, "-c", code, str(good)], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "{}"
