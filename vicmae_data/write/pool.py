"""The conversion's worker processes, each one watched by the parent.

``concurrent.futures.ProcessPoolExecutor`` cannot stop one task: a worker stuck in a
decoder (an ffconcat ``.mp4`` that points at a FIFO blocks in ``open`` forever) would hold
the conversion for ever, and a dead worker breaks the whole pool without saying which item
it held. So each worker here has its own pipe and holds at most one item, and the parent
waits on all pipes and process sentinels at once (``multiprocessing.connection.wait``,
waking at least every second), which gives, within a second or so:

- an item over ``item_timeout`` seconds: its worker is killed, the item is skipped with
  that reason (its skip goes to the resume cache like any other), a fresh worker starts;
- a worker that dies holding an item (a decoder crash on a hostile file): the item is
  tried once more in a fresh worker, and skipped and named when it kills that one too;
- a worker that cannot write the resume cache (disk full, read-only folder): the whole
  job stops with :class:`PoolError` naming the cause; what is encoded stays for the rerun.

Workers are forked from a fork server (see :func:`worker_context`), never from this
process, which may hold torch or numba threads. A worker dies with its fork server, and
the fork server with this process, so killing the conversion leaves no process behind
(:func:`vicmae_data.write.worker.serve`).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from vicmae_data.write.parts import write_part
from vicmae_data.write.settings import DEFAULT_ITEM_TIMEOUT
from vicmae_data.write.worker import Job, serve

log = logging.getLogger(__name__)

# A worker process is replaced after this many items, so that whatever a decoder leaks
# on odd files cannot add up over a 300k-item dataset.
TASKS_PER_WORKER = 500
TICK = 1.0  # the longest the parent sleeps without looking at its workers
MAX_STARTUP_DEATHS = 3  # workers dying before taking any item: the machine is the problem


class PoolError(RuntimeError):
    """The workers cannot go on (e.g. the resume cache cannot be written); one line."""


@dataclass
class _Worker:
    process: Any
    conn: Connection
    job: Job | None = None
    started: float = 0.0
    served: int = 0


def worker_context() -> multiprocessing.context.BaseContext:
    """forkserver (spawn where there is none), not fork: the parent may hold torch or
    numba threads. The fork server imports the worker module once and forks workers
    from it, so a worker (also one replacing a retired or killed worker) starts in
    milliseconds.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["vicmae_data.write.worker"])
    return context


def skip_header(job: Job, reason: str) -> dict[str, Any]:
    """Record ``job`` as skipped in the resume cache; the header the report reads."""
    header = {"source": job.source, "reason": reason}
    write_part(job.part_path, "skip", header)
    return dict(header, status="skip")


class WorkerPool:
    """``workers`` processes converting :class:`Job` s; see the module docstring."""

    def __init__(
        self,
        workers: int,
        *,
        item_timeout: float = DEFAULT_ITEM_TIMEOUT,
        tasks_per_worker: int = TASKS_PER_WORKER,
    ) -> None:
        self.size = max(1, int(workers))
        self.item_timeout = float(item_timeout)
        self.tasks_per_worker = tasks_per_worker
        self.context = worker_context()
        self.workers: list[_Worker] = []
        self.startup_deaths = 0

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, dict[str, Any] | None]]:
        """Yield ``(job, header)`` as items finish, and ``(None, None)`` at least every
        second while none does (so that progress can be shown during a long item)."""
        queue = deque(jobs)
        deaths: Counter[int] = Counter()
        try:
            while queue or any(w.job is not None for w in self.workers):
                self._fill(queue)
                finished = yield from self._collect(queue, deaths)
                if not finished:
                    yield None, None  # type: ignore[misc]
        finally:
            self.close()

    def _fill(self, queue: deque[Job]) -> None:
        while len(self.workers) < min(self.size, len(self.workers) + len(queue)):
            self.workers.append(self._start())
        for worker in self.workers:
            # A worker that served its share exits on its own: it gets nothing more.
            if worker.job is None and queue and worker.served < self.tasks_per_worker:
                worker.job, worker.started = queue.popleft(), time.monotonic()
                try:
                    worker.conn.send(worker.job)
                except OSError:
                    pass  # it just died: its sentinel says so and the item is retried

    def _start(self) -> _Worker:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=serve, args=(child_end, self.tasks_per_worker), daemon=True
        )
        try:
            process.start()
        except OSError as exc:
            raise PoolError(f"cannot start a worker process ({exc})") from None
        child_end.close()
        return _Worker(process, parent_end)

    def _collect(self, queue: deque[Job], deaths: Counter[int]) -> Iterator:
        """Wait up to a tick; yield what finished; handle deaths and time limits."""
        busy = [w for w in self.workers if w.job is not None]
        timeout = TICK
        if busy:
            due = min(w.started for w in busy) + self.item_timeout - time.monotonic()
            timeout = max(0.0, min(TICK, due))
        handles = [w.conn for w in busy] + [w.process.sentinel for w in self.workers]
        wait(handles, timeout)
        finished = 0
        for worker in list(self.workers):
            message = self._receive(worker)
            if message is not None:
                finished += 1
                yield from self._handle(worker, message)
            elif not worker.process.is_alive():
                finished += yield from self._died(worker, queue, deaths)
            elif worker.job is not None and self._overdue(worker):
                finished += 1
                yield worker.job, self._kill_overdue(worker)
        return finished

    def _receive(self, worker: _Worker) -> tuple | None:
        try:
            if worker.job is not None and worker.conn.poll():
                return worker.conn.recv()
        except (EOFError, OSError):
            pass  # it died: the sentinel says so
        return None

    def _handle(self, worker: _Worker, message: tuple) -> Iterator:
        job = worker.job
        assert job is not None
        worker.job = None
        worker.served += 1
        if message[0] == "oserror":
            _, cause, filename = message
            raise PoolError(
                f"cannot write the resume cache ({cause}{f': {filename}' if filename else ''})"
            )
        yield job, message[1]

    def _overdue(self, worker: _Worker) -> bool:
        return time.monotonic() - worker.started > self.item_timeout

    def _kill_overdue(self, worker: _Worker) -> dict[str, Any]:
        job = worker.job
        assert job is not None
        reason = (
            f"took longer than the per-item time limit ({self.item_timeout:g} s, "
            "--item-timeout): stopped and left out"
        )
        log.warning("%s: %s", job.path, reason)
        self._retire(worker, kill=True)
        return skip_header(job, reason)

    def _died(self, worker: _Worker, queue: deque[Job], deaths: Counter[int]) -> Iterator:
        """A worker ended: replace it; its item is retried once, then skipped."""
        job = worker.job
        code = worker.process.exitcode
        self._retire(worker, kill=False)
        if job is None:
            if worker.served == 0 and code != 0:
                self.startup_deaths += 1
                if self.startup_deaths >= MAX_STARTUP_DEATHS:
                    raise PoolError(f"worker processes die on start ({_exit_text(code)})")
            return 0
        deaths[job.index] += 1
        if deaths[job.index] < 2:
            log.warning(
                "a worker process died (%s) converting %s; retrying", _exit_text(code), job.path
            )
            queue.appendleft(job)
            return 0
        reason = f"the worker process died converting it, twice ({_exit_text(code)})"
        log.warning("%s: %s", job.path, reason)
        yield job, skip_header(job, reason)
        return 1

    def _retire(self, worker: _Worker, *, kill: bool) -> None:
        if kill and worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()
        self.workers.remove(worker)

    def close(self) -> None:
        """Stop every worker: idle ones are told to quit, busy ones are killed."""
        for worker in self.workers:
            try:
                if worker.job is None:
                    worker.conn.send(None)
                else:
                    worker.process.kill()
            except OSError:
                worker.process.kill()
        deadline = time.monotonic() + 2.0
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)
            worker.conn.close()
        self.workers = []


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
