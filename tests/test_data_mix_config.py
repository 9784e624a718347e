"""``data.mix`` and ``data.check_crc``: config keys that reach the loader a job builds.

Real tiny .beton files (the real writer), a real config resolved from overrides, and the
loader built by :meth:`vicmae.engine.setup.Run.loader`, the one the three jobs train on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from media import TINY_MODEL, make_tiny_beton

from vicmae.config import ConfigError, LinprobeConfig, load_config, resume_differences, to_dict
from vicmae.distributed import DistInfo
from vicmae.engine.setup import Run
from vicmae_data import make_loader
from vicmae_data.format.beton import BetonFile

SIZES = (20, 12)  # samples of the two files
BATCH = 4


@pytest.fixture(scope="module")
def betons(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("mixcfg")
    return [str(make_tiny_beton(d / f"f{i}.beton", n=n, size=32)) for i, n in enumerate(SIZES)]


def _run(tmp_path: Path, betons: list[str], *overrides: str, cls: type | None = None) -> Run:
    items = [*TINY_MODEL, "data.resolution=32", f"optim.batch_size={BATCH}",
             f"data.betons=[{', '.join(betons)}]", *overrides]  # fmt: skip
    if cls is not None:  # an evaluation's config: no model keys
        items = [i for i in items if not i.startswith("model.")]
        cfg = load_config(None, items, cls=cls)
    else:
        cfg = load_config(None, items)
    return Run("pretrain", cfg, DistInfo(), tmp_path / "run", None, None, "fp32")


def _loader(run: Run):
    return run.loader(list(run.cfg.data.betons), BATCH, num_views=2, train=True, resolution=32)


def test_data_mix_concat_is_one_pass_over_both_files(tmp_path, betons) -> None:
    # The default, by weight (1 each): half of every batch from each file, the first
    # file's 20 samples defining the epoch.
    weights = _loader(_run(tmp_path, betons))
    assert weights.schedule is None and len(weights) == SIZES[0] // (BATCH // 2)
    run = _run(tmp_path, betons, "data.mix=concat")
    assert run.cfg.data.mix == "concat"
    concat = _loader(run)
    assert concat.schedule is not None and len(concat) == sum(SIZES) // BATCH
    seen = [pair for b in concat for pair in zip(b.files.tolist(), b.indices.tolist(), strict=True)]
    assert len(seen) == len(set(seen)) == sum(SIZES)  # every sample of both, once
    # The evaluations read data.mix too (their training files).
    probe = _run(tmp_path, betons, "data.mix=concat", cls=LinprobeConfig)
    assert len(_loader(probe)) == sum(SIZES) // BATCH


def test_one_file_reads_the_same_either_way(tmp_path, betons) -> None:
    """What the recipes' ``mix: concat`` relies on: with one file it changes nothing."""
    kw = dict(num_workers=2, resolution=16, seed=5)
    a = make_loader(betons[0], BATCH, mix="weights", **kw)
    b = make_loader(betons[0], BATCH, mix="concat", **kw)
    assert len(a) == len(b)
    for _ in range(2):  # two epochs
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x.indices, y.indices) and torch.equal(x.views, y.views)


def test_data_check_crc_reaches_the_loader(tmp_path, betons) -> None:
    good = betons[1]
    row = BetonFile(good).frames_meta[2]
    data = bytearray(Path(good).read_bytes())
    ptr = int(row["ptr"])
    frame1 = ptr + int.from_bytes(data[ptr + 4 :][:4], "little")
    data[frame1 + 40] ^= 0x10  # inside frame 1's image data: libwebp alone does not notice
    bad = tmp_path / "crc.beton"
    bad.write_bytes(bytes(data))
    for check, failures in (("false", 0), ("true", 1)):
        run = _run(tmp_path, [str(bad)], f"data.check_crc={check}")
        loader = run.loader(
            str(bad), BATCH, num_views=2, train=False, resolution=32, drop_last=False
        )  # fmt: skip  (a validation loader)
        assert sum(len(b.labels) for b in loader) == SIZES[1]
        assert loader.crc_failures == failures


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.mix=concatenate", "data.mix: 'concatenate' is not one of weights, concat"),
        ("data.check_crc=maybe", "data.check_crc: expected true/false"),
    ],
)
def test_bad_values_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_a_weight_under_concat_is_refused_before_any_work() -> None:
    with pytest.raises(ConfigError, match=r"in1k.beton:0.3 has a weight, but data.mix=concat"):
        load_config(None, ["data.betons=[k400.beton, in1k.beton:0.3]", "data.mix=concat"])
    cfg = load_config(None, ["data.betons=[k400.beton, in1k.beton:0.3]"])  # weights: kept
    assert cfg.data.betons == ("k400.beton", "in1k.beton:0.3") and cfg.data.mix == "weights"


def test_a_run_saved_before_the_keys_existed_resumes_unchanged() -> None:
    cfg = load_config(None, ["data.betons=[k400.beton]"])
    saved = to_dict(cfg)
    del saved["data"]["mix"], saved["data"]["check_crc"]  # a config.yaml from before
    assert resume_differences(saved, cfg) == []
    concat = load_config(None, ["data.betons=[k400.beton]", "data.mix=concat"])
    assert resume_differences(saved, concat) == [("data.mix", "weights", "concat")]
    crc = load_config(None, ["data.betons=[k400.beton]", "data.check_crc=true"])
    assert resume_differences(saved, crc) == []  # how it reads, not what it computes
