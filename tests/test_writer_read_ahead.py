"""How the .beton writer reads its input: every sample once, in order, on the threads asked
for, a bounded number ahead of the writer, and nothing more once a write has failed.

The input is a real ``Sequence`` of samples that records each read (index, thread, how many
samples the writer had written by then); the output is a real file read back.
"""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Callable, Sequence

import pytest

from vicmae_data.atomic import temporaries
from vicmae_data.format.beton import BetonFile, Sample
from vicmae_data.format.frame_blob import FrameList, packed_size
from vicmae_data.write.beton_writer import BetonWriteError, write_beton


def tiny_samples(n: int) -> list[Sample]:
    """``n`` samples of 1-3 made-up frame byte strings (the writer never decodes them)."""
    return [
        Sample(
            FrameList([bytes([i, t]) * (3 + i) for t in range(1 + i % 3)], 8, 8),
            i % 3,
            {"i": i},
        )
        for i in range(n)
    ]


class Recorded(Sequence):
    """``samples`` as the writer's input, recording every read: ``reads`` holds
    ``(index, thread ident, samples written so far)``; ``hook(i)`` runs inside read ``i``."""

    def __init__(self, samples: list[Sample], hook: Callable[[int], None] | None = None):
        self.samples, self.hook = samples, hook
        self.reads: list[tuple[int, int, int]] = []
        self.written = 0  # set by progress()
        self.progress_calls: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):  # type: ignore[override]
        with self.lock:
            self.reads.append((i, threading.get_ident(), self.written))
        if not 0 <= i < len(self.samples):
            raise IndexError(i)
        if self.hook is not None:
            self.hook(i)
        return self.samples[i]

    def progress(self, done: int, total: int) -> None:
        self.progress_calls.append((done, total))
        with self.lock:
            self.written = done

    def indices(self) -> list[int]:
        return [i for i, _, _ in self.reads]


def _sizes(samples: list[Sample]) -> list[int]:
    return [packed_size(s.frames.frames) for s in samples]


def test_every_worker_count_reads_each_sample_once_and_writes_the_same_bytes(tmp_path):
    """0 or 1 workers: the writer reads each sample itself; 2 or 4: worker threads do. The
    bytes are the same, every sample is read exactly once (none past the end), and progress
    counts 1..n."""
    samples, n = tiny_samples(11), 11  # more than 2 x 4 samples: the queue refills
    caller = threading.get_ident()
    digests = set()
    for workers in (0, 1, 2, 4):
        source = Recorded(samples)
        out = tmp_path / f"w{workers}.beton"
        write_beton(
            out, source, frame_sizes=_sizes(samples), num_workers=workers, progress=source.progress
        )
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
        assert sorted(source.indices()) == list(range(n)), workers
        assert source.progress_calls == [(i, n) for i in range(1, n + 1)], workers
        threads = {ident for _, ident, _ in source.reads}
        if workers <= 1:
            assert threads == {caller}, workers
        else:
            assert caller not in threads and len(threads) <= workers, workers
    assert len(digests) == 1
    beton = BetonFile(tmp_path / "w0.beton")
    assert [beton.sample(i) for i in range(n)] == samples


def test_a_slow_sample_keeps_exactly_two_reads_per_worker_in_flight(tmp_path):
    """While sample 0 is slow to read, the other of 2 workers reads ahead samples 1, 2 and
    3 (2 x 2 in flight with sample 0) and no further: no sample is read before the writer
    has written all but 2 x 2 - 1 of those before it."""
    workers, depth = 2, 4
    samples = tiny_samples(9)
    ahead, beyond = threading.Event(), threading.Event()
    waited: list[bool] = []

    def hook(i: int) -> None:
        if i == 0:
            waited.append(ahead.wait(10))  # set by the read of sample depth - 1
            beyond.wait(0.3)  # a deeper read-ahead would read sample `depth` meanwhile
        elif i == depth - 1:
            ahead.set()
        elif i == depth:
            beyond.set()

    source = Recorded(samples, hook)
    write_beton(
        tmp_path / "a.beton",
        source,
        frame_sizes=_sizes(samples),
        num_workers=workers,
        progress=source.progress,
    )
    assert waited == [True], "samples 1..3 were not read while sample 0 was"
    for i, _, written in source.reads:
        assert i < written + depth, (i, written)
    assert sorted(source.indices()) == list(range(len(samples)))


def test_reads_still_queued_when_the_write_fails_are_cancelled(tmp_path):
    """Sample 0 turns out larger than announced: the write stops there, the two reads
    already running finish, and the queued one (sample 3) is never read."""
    samples = tiny_samples(8)
    release = threading.Event()  # never set: the running reads end at their timeout

    def hook(i: int) -> None:
        if i > 0:
            release.wait(1.0)

    source = Recorded(samples, hook)
    sizes = _sizes(samples)
    sizes[0] -= 1
    out = tmp_path / "f.beton"
    with pytest.raises(BetonWriteError, match=r"^sample 0: its frames take \d+ bytes, \d+ were"):
        write_beton(out, source, frame_sizes=sizes, num_workers=2)
    assert set(source.indices()) <= {0, 1, 2}, source.indices()
    assert not out.exists() and not temporaries(tmp_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_input_that_cannot_be_read_is_named_as_the_cause(tmp_path, workers):
    """An OSError from the input is the input's fault: the message names the sample, not
    the output file, and nothing is left behind."""
    samples = tiny_samples(6)

    def hook(i: int) -> None:
        if i == 3:
            raise OSError(errno.EIO, "Input/output error", "part-3")

    out = tmp_path / "r.beton"
    with pytest.raises(BetonWriteError) as info:
        write_beton(out, Recorded(samples, hook), frame_sizes=_sizes(samples), num_workers=workers)
    cause = "input/output error (failing disk or network file system?)"
    assert str(info.value) == f"sample 3: cannot read its input ({cause})"
    assert not out.exists() and not temporaries(tmp_path)


def test_an_output_that_cannot_be_written_is_one_line_naming_the_path(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    out = blocker / "x.beton"
    with pytest.raises(BetonWriteError) as info:
        write_beton(out, tiny_samples(2), num_workers=1)
    assert str(info.value) == f"{out}: cannot write (a parent is not a folder)"


def test_nothing_to_write_is_refused_and_nothing_is_created(tmp_path):
    out = tmp_path / "empty.beton"
    with pytest.raises(ValueError, match=r"^nothing to write: no samples$"):
        write_beton(out, [])
    assert list(tmp_path.iterdir()) == []
    write_beton(out, tiny_samples(1))  # one sample is something to write
    assert len(BetonFile(out)) == 1
