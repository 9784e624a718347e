"""The training loop's parts, each against what it must compute (fast; no loader, no files).

``fit`` is tested end to end elsewhere (tests/test_trainer.py, tests/test_resume_accum.py);
these pin the pieces it is built from: one optimiser step over accumulated micro-batches
(and which of them DDP synchronises), the best-checkpoint rule, the logging window's
means and first non-finite step, and the skipping of batches a resumed run already used.
"""

from __future__ import annotations

import contextlib
import math
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 (torch's convention)
from torch import nn

from vicmae.distributed import DistInfo
from vicmae.engine.loop import _Batches, _better, _Window, train_step


def _model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 1)


def _mse(model: nn.Module, batch, micro: int):
    x, y = batch
    loss = F.mse_loss(model(x), y)
    return loss, torch.stack([loss, 2 * loss]).detach()


def _step(model: nn.Module, batches: list, accum: int, clip: float | None = None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return train_step(model, opt, scaler, iter(batches), _mse, accum=accum,
                      autocast=contextlib.nullcontext, clip_grad=clip)  # fmt: skip


def test_accumulated_micro_batches_make_the_step_of_their_whole_batch():
    torch.manual_seed(1)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    whole, split = _model(), _model()
    start = whole.weight.detach().clone()
    parts = _step(whole, [(x, y)], accum=1)
    parts_split = _step(split, [(x[:4], y[:4]), (x[4:], y[4:])], accum=2)
    # Equal halves: the mean of their losses is the whole batch's, and so is the gradient.
    assert parts.shape == (2,) and torch.allclose(parts_split, parts, atol=1e-6)
    assert torch.allclose(parts[1], 2 * parts[0])
    assert not torch.equal(whole.weight, start)
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
        assert a.grad is None and b.grad is None  # freed for the next step


def test_clipping_bounds_the_update():
    torch.manual_seed(1)
    x, y = torch.randn(8, 4), 100 * torch.randn(8, 1)  # a large gradient
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    _step(model, [(x, y)], accum=1, clip=1e-3)
    moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters(),
                                                                   strict=True)])  # fmt: skip
    assert moved.norm() == pytest.approx(0.1 * 1e-3, rel=1e-3)  # lr x the clipped norm


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("accum", [1, 3])
def test_ddp_synchronises_only_the_last_micro_batch(one_process_group, accum):
    model = nn.parallel.DistributedDataParallel(_model())
    synced = []

    def loss_fn(m, batch, micro):
        synced.append(m.require_backward_grad_sync)  # False inside DDP's no_sync()
        return _mse(m, batch, micro)

    batch = (torch.randn(2, 4), torch.randn(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_step(model, opt, torch.amp.GradScaler("cpu", enabled=False), iter([batch] * accum),
               loss_fn, accum=accum, autocast=contextlib.nullcontext)  # fmt: skip
    assert synced == [False] * (accum - 1) + [True]


def test_best_checkpoint_rule():
    assert _better(None, {"val_top1": 50.0}, None, 1) is None
    assert _better(None, {"val_loss": 1.0}, ("val_top1", "max"), 1) is None
    first = _better(None, {"val_top1": 50.0}, ("val_top1", "max"), 1)
    assert first == {"key": "val_top1", "value": 50.0, "epoch": 1}
    assert _better(first, {"val_top1": 50.0}, ("val_top1", "max"), 2) is None  # a tie keeps
    assert _better(first, {"val_top1": 40.0}, ("val_top1", "max"), 2) is None
    assert _better(first, {"val_top1": 60.0}, ("val_top1", "max"), 2)["epoch"] == 2
    low = _better(None, {"val_loss": 1.0}, ("val_loss", "min"), 1)
    assert _better(low, {"val_loss": 1.0}, ("val_loss", "min"), 2) is None
    assert _better(low, {"val_loss": 2.0}, ("val_loss", "min"), 2) is None
    assert _better(low, {"val_loss": 0.5}, ("val_loss", "min"), 2) == {
        "key": "val_loss", "value": 0.5, "epoch": 2}  # fmt: skip


class _ListLoader:
    """The loader contract the engine uses: set_epoch, len, iteration (slow: 50 ms a batch)."""

    def __init__(self, n: int, delay: float = 0.0) -> None:
        self.n, self.delay, self.epochs = n, delay, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i in range(self.n):
            time.sleep(self.delay)
            yield i


def _window_batches() -> _Batches:
    loader = _ListLoader(2)
    loader.compiled_by_engine = True
    return _Batches(loader, 0, skip=0)


def test_window_means_and_flags():
    w = _Window(2, torch.device("cpu"))
    w.add(torch.tensor([1.0, 10.0]), 0)
    w.add(torch.tensor([3.0, 30.0]), 1)
    means, bad, stopped, late = w.sync(False, False, DistInfo())
    assert (means, bad, stopped, late) == ([2.0, 20.0], None, False, False)
    assert w.sync(True, False, DistInfo())[2:] == (True, False)
    assert w.sync(False, True, DistInfo())[2:] == (False, True)
    w.restart(_window_batches())
    assert w.steps == 0 and w.sync(False, False, DistInfo())[0] == [0.0, 0.0]
    w.add(torch.tensor([5.0, 7.0]), 2)
    assert w.sync(False, False, DistInfo())[0] == [5.0, 7.0]


def test_window_reports_the_first_non_finite_step():
    w = _Window(1, torch.device("cpu"))
    w.add(torch.tensor([math.inf]), 0)  # step 0: the first bad one
    w.add(torch.tensor([1.0]), 1)
    w.add(torch.tensor([math.nan]), 2)
    assert w.sync(False, False, DistInfo())[1] == (0, math.inf)
    w = _Window(1, torch.device("cpu"))
    w.add(torch.tensor([1.0]), 3)
    w.add(torch.tensor([-math.inf]), 4)
    w.add(torch.tensor([math.inf]), 5)
    assert w.sync(False, False, DistInfo())[1] == (4, -math.inf)
    w = _Window(3, torch.device("cpu"))  # the loss (part 0) decides, not the other parts
    w.add(torch.tensor([math.nan, 1.0, 2.0]), 7)
    w.add(torch.tensor([1.0, 1.0, math.inf]), 8)
    bad = w.sync(False, False, DistInfo())[1]
    assert bad[0] == 7 and math.isnan(bad[1])
    w = _Window(1, torch.device("cpu"))  # late in a long run (the paper's: ~10**5 steps)
    w.add(torch.tensor([math.nan]), 123_456_789)
    assert w.sync(False, False, DistInfo())[1][0] == 123_456_789


def test_batches_skip_what_a_resumed_run_used():
    loader = _ListLoader(6)
    fresh = _Batches(loader, 3, skip=0)  # first use: the compiling batch is kept
    assert loader.epochs == [3] and loader.compiled_by_engine
    assert [next(fresh) for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(StopIteration):
        next(fresh)
    loader.compiled_by_engine = False
    assert next(_Batches(loader, 4, skip=2)) == 2  # the compiling batch is one of the skipped
    assert next(_Batches(loader, 5, skip=4)) == 4  # already compiled
    assert next(_Batches(loader, 5, skip=0)) == 0
    assert loader.epochs == [3, 4, 5, 5]
    stopped = _Batches(loader, 6, skip=0)
    stopped.close()  # the loader's iterator is closed now, not at interpreter exit
    with pytest.raises(StopIteration):
        next(stopped)


def test_batches_time_the_wait_for_data():
    loader = _ListLoader(4, delay=0.05)
    loader.compiled_by_engine = True
    batches = _Batches(loader, 0, skip=0)
    batches.restart_clock()
    for _ in range(3):
        next(batches)
    t = batches.throughput(1)
    assert 50 < t["data_wait_pct"] <= 100  # all of the time went to waiting for batches
    assert 0.5 < t["samples_per_s"] <= 1 / 0.15 + 1e-9  # 1 sample in >= 3 x 50 ms
