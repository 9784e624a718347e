"""Log lines: plain on a terminal too ("INFO INFO:vicmae:" no more), never cut to its width."""

from __future__ import annotations

import io
import logging
import time
from types import SimpleNamespace

from rich.console import Console
from rich.logging import RichHandler

from vicmae.engine import metrics
from vicmae.engine.metrics import MetricsLogger
from vicmae_cli import train as cli


def test_terminal_log_lines_carry_the_message_once(monkeypatch, capsys):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    cli._setup_logging()
    logging.getLogger("vicmae").info("hello from the engine")
    err = capsys.readouterr().err
    assert err.count("hello from the engine") == 1
    assert "INFO:vicmae" not in err and err.count("INFO") == 1  # the level column only


def test_step_lines_are_whole_on_a_narrow_terminal(tmp_path):
    buf = io.StringIO()
    handler = RichHandler(console=Console(file=buf, width=40), show_path=False, show_level=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("vicmae")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with MetricsLogger(tmp_path, 100, progress=False, tensorboard=False) as ml:
            ml.log(7, {"loss": 0.123456, "loss_recon": 0.5, "lr": 1e-4, "samples_per_s": 812.3,
                       "data_wait_pct": 3.0})  # fmt: skip
    finally:
        log.removeHandler(handler)
    text = " ".join(buf.getvalue().split())
    for part in ("step 7/100", "loss 0.1235", "recon 0.5000", "lr 1.00e-04", "812.3 samples/s",
                 "data 3%"):  # fmt: skip
        assert part in text, text


def test_step_lines_in_a_log_file_carry_elapsed_time_and_eta(tmp_path, monkeypatch, caplog):
    """Without a progress bar (a job's log) each step line ends with the time since the
    process started and the time left, at the pace since its first row."""
    now = [1000.0]
    clock = SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    monkeypatch.setattr(metrics, "time", clock)  # MetricsLogger's clock, nothing else's
    with caplog.at_level(logging.INFO, logger="vicmae"):
        with MetricsLogger(tmp_path, 100, progress=False, tensorboard=False, start_step=20) as ml:
            now[0] += 30  # the first 10 steps, the loader's compilation with them
            ml.log(30, {"loss": 1.0})
            now[0] += 10  # the next 10 steps
            ml.log(40, {"loss": 1.0})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert lines[0].endswith("elapsed 0:00:30  ETA 0:03:30")  # 70 steps at 3 s (all so far)
    assert lines[1].endswith("elapsed 0:00:40  ETA 0:01:00")  # 60 steps at 1 s (since row 1)
