"""The atomic write helper: whole file under the final name, or the old one, never half."""

from __future__ import annotations

import pytest

from vicmae_data.atomic import atomic_open, atomic_path, write_bytes_atomic, write_text_atomic


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "out.json"
    write_text_atomic(target, "one")
    assert target.read_text() == "one"
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as fh:
        fh.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_hands_out_a_hidden_sibling(tmp_path):
    target = tmp_path / "clip.mp4"
    with atomic_path(target, durable=False) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".clip.mp4.")
        assert not target.exists()
        tmp.write_bytes(b"frames")
    assert target.read_bytes() == b"frames" and not tmp.exists()


def test_two_writers_get_different_temporaries(tmp_path):
    target = tmp_path / "x"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert target.read_bytes() == b"a"  # the outer one renamed last


def test_refuses_read_modes(tmp_path):
    with pytest.raises(ValueError, match="not a write mode"), atomic_open(tmp_path / "x", "rb"):
        pass
