"""Checkpoint files in and out (vicmae/engine/checkpoint.py): where one is saved, what a
foreign or damaged one is told in its one line, and where a wrapped or nested one keeps its
weights. Real tiny models, real torch.save files, real DDP and torch.compile wrappers."""

from __future__ import annotations

import io
import pickle
import re

import pytest
import torch
import torch.distributed as dist
from torch import nn

from vicmae.engine.checkpoint import (
    CheckpointError,
    _first_line,
    last_line,
    load_checkpoint,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrapped_name,
)

# torch's first sentence for a zip without its central directory (the advice after it goes).
ZIP_CUT = "PytorchStreamReader failed reading zip archive: failed finding central directory"


def _model(width: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.LayerNorm(width))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_is_saved_into_folders_not_made_yet(tmp_path):
    path = tmp_path / "runs" / "pretrain" / "last.pt"
    assert save_checkpoint(path, {"model": _model().state_dict(), "step": 7}) == path
    assert load_checkpoint(path)["step"] == 7


def test_a_folder_that_cannot_be_made_is_a_one_line_error(tmp_path):
    (tmp_path / "runs").write_text("a file where a folder should be")
    path = tmp_path / "runs" / "pretrain" / "last.pt"
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"step": 1})
    assert str(info.value) == f"{path}: cannot save checkpoint (a parent is not a folder)"


def test_a_plain_pickle_is_refused_naming_what_the_safe_loader_met(tmp_path):
    """pickle.dump of a state dict (no torch.save): an opcode the safe unpickler has no
    use for, named in the one line; nothing in the file is run."""
    path = tmp_path / "weights.pkl"
    with path.open("wb") as fh:
        pickle.dump({"w": [1.0, 2.0]}, fh, protocol=0)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert re.fullmatch(
        re.escape(f"{path}: not a torch checkpoint the safe loader accepts (Unsupported ")
        + r"operand \d+\); refused, nothing in it was run",
        str(info.value),
    ), info.value


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        ("zip cut in half", ZIP_CUT),
        ("old format cut short", "unexpected EOF, expected 10 more bytes"),
        # An EOFError with no message: its name says what happened.
        ("old format cut in half", "EOFError"),
    ],
)
def test_a_truncated_checkpoint_names_the_cause_in_its_one_line(tmp_path, damage, cause):
    buf = io.BytesIO()
    torch.save({"w": torch.arange(64.0)}, buf, _use_new_zipfile_serialization="zip" in damage)
    data = buf.getvalue()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[:-10] if damage.endswith("short") else data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert str(info.value) == f"{bad}: not a torch checkpoint, or truncated/damaged ({cause})"


def test_the_cause_is_the_first_sentence_of_the_first_line_and_short():
    """With TORCH_SHOW_CPP_STACKTRACES=1 (read once when torch starts, so no test can set
    it) torch's C++ errors carry the trace on the lines after the message, as here; and a
    cause never runs past 200 characters, whatever a message holds."""
    exc = RuntimeError(
        "unexpected EOF, expected 10 more bytes. The file might be corrupted.\n"
        "Exception raised from doRead at torch/csrc/serialization.cpp:188 (most recent call "
        "first):\nC++ CapturedTraceback:\n#4 c10::Error::Error(c10::SourceLocation) from "
        "Logging.cpp:0"
    )
    assert _first_line(exc) == "unexpected EOF, expected 10 more bytes"
    assert _first_line(ValueError("x" * 300)) == "x" * 200


def test_last_line_names_the_last_mismatch_of_a_real_load_state_dict():
    """What a resume into a model of another width says: load_state_dict's last line."""
    with pytest.raises(RuntimeError) as info:
        _model(3).load_state_dict(_model(5).state_dict())
    lines = str(info.value).strip().splitlines()
    assert len(lines) >= 3  # a heading and a line per mismatch: the last is not the second
    assert last_line(info.value) == lines[-1].strip()
    assert last_line(info.value).startswith("size mismatch for 1.bias: copying a param with")
    assert last_line(RuntimeError()) == "RuntimeError"


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_and_compile_prefixes_come_off_in_either_order(one_process_group):
    """DDP(compile(m)) names a weight module._orig_mod.*; compile(DDP(m)) _orig_mod.module.*."""
    model = _model()
    plain = model.state_dict()
    ddp = nn.parallel.DistributedDataParallel
    for wrapped in (ddp(torch.compile(model)), torch.compile(ddp(model)), ddp(model)):
        state = wrapped.state_dict()
        assert not _same(state, plain)  # the keys carry the wrappers' prefixes
        assert _same({unwrapped_name(k): v for k, v in state.items()}, plain)


@pytest.mark.parametrize("key", ["model", "state_dict", "model_state", None])
def test_model_state_finds_the_weights_under_each_usual_key(tmp_path, key):
    """Ours under "model"; other code bases' under "state_dict" or "model_state"; a bare
    state dict as it is. A "model" that names the architecture is no state dict."""
    weights = _model().state_dict()
    saved = weights if key is None else {key: weights, "epoch": 3}
    if key == "state_dict":
        saved["model"] = "vit_base_patch16"
    state = load_checkpoint(save_checkpoint(tmp_path / "c.pt", saved))
    fresh = _model(3)
    fresh.load_state_dict(model_state(state))
    assert _same(fresh.state_dict(), weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_states_survive_the_safe_loader(tmp_path):
    """The CUDA generators are restored too (the CPU ones: test_checkpoint_safety)."""
    torch.cuda.manual_seed_all(5)
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed_all(6)
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(4, device="cuda"), expected)
