"""Errors in the words a user acts on: ``os_cause`` finds the OSError behind what a library
raised (torch raises its own RuntimeError while a write fails), ``last_line`` keeps the line
of ``load_state_dict``'s error that names the mismatch."""

from __future__ import annotations

import pytest
from torch import nn

from vicmae.engine.checkpoint import last_line
from vicmae_data.oserror import os_cause


def _disk_full() -> OSError:
    """A real ENOSPC from the kernel: a write to /dev/full."""
    try:
        with open("/dev/full", "wb", buffering=0) as f:
            f.write(b"x")
    except OSError as exc:
        return exc
    pytest.skip("no /dev/full on this system")


def test_an_oserror_in_words():
    assert os_cause(_disk_full()) == "disk full"


def test_the_oserror_behind_an_explicit_cause():
    try:
        raise RuntimeError("PytorchStreamWriter failed writing file data/0") from _disk_full()
    except RuntimeError as exc:
        assert os_cause(exc) == "disk full"


def test_the_oserror_behind_the_one_raised_while_handling_it():
    try:
        try:
            raise _disk_full()
        except OSError:
            raise RuntimeError("[enforce fail] . unexpected pos 704 vs 598") from None
    except RuntimeError as exc:
        assert exc.__suppress_context__ and exc.__context__ is not None
        assert os_cause(exc) == "disk full"


def test_no_oserror_behind_keeps_the_message_on_one_line():
    assert os_cause(RuntimeError("writer\n  failed ")) == "writer failed"
    assert os_cause(RuntimeError()) == "RuntimeError"


def test_last_line_names_the_mismatch():
    with pytest.raises(RuntimeError) as info:
        nn.Linear(2, 3).load_state_dict(nn.Linear(2, 4).state_dict())
    line = last_line(info.value)
    assert line.startswith("size mismatch for bias") and "torch.Size([4])" in line
    assert last_line(RuntimeError("")) == "RuntimeError"
