"""Log lines: plain on a terminal too ("INFO INFO:vicmae:" no more), never cut to its width."""

from __future__ import annotations

import io
import logging

from rich.console import Console
from rich.logging import RichHandler

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
