"""The two built-in recipes: `paper` (the default) and `authors`, for ViT-B/16 and ViT-L/16."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vicmae.config import load_config, to_dict
from vicmae.model.vicmae import ViCMAE

CONFIGS = Path(__file__).resolve().parents[1] / "vicmae" / "configs"
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "training.md"
RECIPES = ("paper", "paper_large", "authors", "authors_large")


def _flat(d: dict, where: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{where}.{k}" if where else k
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


def shown(v: object) -> str:
    """A config value as docs/training.md's table writes it: [0.5, 1], 200, true, fp16."""
    if isinstance(v, list | tuple):
        return "[" + ", ".join(shown(x) for x in v) + "]"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).lower()


def _recipe(name: str) -> dict[str, object]:
    return _flat(to_dict(load_config(name)))


# The paper's values the defaults leave open: 512 per forward needs a batch of 512 per device
# and a GPU that holds it; "concat" is for mixed pretraining files (one file: the same).
NOT_DEFAULTS = {"optim.micro_batch": (512, None), "data.mix": ("concat", "weights")}


def test_the_default_config_is_the_paper_recipe() -> None:
    """What runs without --config is the paper recipe, value for value, but NOT_DEFAULTS."""
    paper, default = _recipe("paper"), _flat(to_dict(load_config(None)))
    differ = {k: (paper[k], default[k]) for k in paper if paper[k] != default[k]}
    assert differ == NOT_DEFAULTS


@pytest.mark.parametrize("name", RECIPES)
def test_usage_line_trains_as_the_authors_did(name: str) -> None:
    """Line 2: both files read as one concatenated dataset (the authors' one-file run), no
    weight the paper never states."""
    usage = (CONFIGS / f"{name}.yaml").read_text().splitlines()[1]
    assert usage == (
        f"#   vicmae train pretrain --config {name} --beton k400.beton --beton in1k.beton"
    )
    cfg = load_config(name, ["data.betons=[k400.beton, in1k.beton]"])
    assert cfg.data.mix == "concat" and cfg.data.betons == ("k400.beton", "in1k.beton")


def test_large_recipes_differ_only_in_the_architecture() -> None:
    for base in ("paper", "authors"):
        a, b = _recipe(base), _recipe(f"{base}_large")
        assert {k for k in a if a[k] != b[k]} == {"model.arch"}
        assert (a["model.arch"], b["model.arch"]) == ("vit_base_patch16", "vit_large_patch16")


def test_authors_recipe_is_their_code() -> None:
    c = load_config("authors")
    m, o, loss, d = c.model, c.optim, c.loss, c.data
    assert (m.mask_ratio, m.norm_pix_loss, m.reconstruct_both) == (0.5, True, True)
    assert m.projector_dims == (4096, 4096, 128) and m.contrastive == "ntxent_local_ids"
    assert (m.temperature, m.decoder_dim, m.decoder_depth, m.decoder_heads) == (0.1, 512, 8, 16)
    assert (o.base_lr, o.batch_size, o.micro_batch, o.epochs, o.warmup_epochs) == (
        1.5e-4, 4096, 128, 801, 40,
    )  # fmt: skip
    assert (loss.recon_weight, loss.contrastive_weight, loss.contrastive_start_epoch) == (
        0.97, 0.03, 0,
    )  # fmt: skip
    assert d.video_scale == d.image_scale == (0.08, 1.0)
    assert (d.augment_views, d.augment_rows, d.mix) == ("asymmetric", "all", "concat")
    assert (c.run.sync_bn, c.run.precision) == (False, "fp16")


def test_paper_recipe_is_table_5_and_algorithm_1() -> None:
    c = load_config("paper")
    m, o, loss, d = c.model, c.optim, c.loss, c.data
    assert (m.norm_pix_loss, m.reconstruct_both, m.projector_dims) == (False, False, ())
    assert m.contrastive == "ntxent" and m.pooling == "mean" and m.drop_path == 0.0
    assert (o.base_lr, o.weight_decay, o.betas, o.batch_size) == (1.5e-4, 0.05, (0.9, 0.95), 4096)
    assert (o.epochs, o.warmup_epochs, o.clip_grad, o.micro_batch) == (800, 40, None, 512)
    assert (loss.recon_weight, loss.contrastive_weight, loss.contrastive_start_epoch) == (
        1.0, 0.025, 200,
    )  # fmt: skip
    assert d.video_scale == d.image_scale == (0.5, 1.0)
    assert (d.augment_views, d.augment_rows, d.sampling) == ("symmetric", "images", "distant")
    assert d.mix == "concat"


@pytest.mark.parametrize("name", RECIPES)
def test_every_value_names_its_source_and_the_model_builds(name: str) -> None:
    lines = (CONFIGS / f"{name}.yaml").read_text().splitlines()
    assert lines[0].startswith("# ViC-MAE ViT-")  # the one-line description listings show
    values = [ln for ln in lines if re.match(r"^  [a-z_]+:", ln)]
    assert len(values) >= 30
    for line in values:
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 5, line
    cfg = load_config(name)
    with torch.device("meta"):
        model = ViCMAE(cfg.model)
    widths = [m.out_features for m in model.projector if isinstance(m, torch.nn.Linear)]
    dim = model.encoder.embed_dim
    assert widths == ([4096, 4096, 128] if name.startswith("authors") else [2 * dim] * 3)


def test_readme_table_lists_every_difference_with_both_values() -> None:
    paper, authors = _recipe("paper"), _recipe("authors")
    differ = {k for k in paper if paper[k] != authors[k]}
    text = GUIDE.read_text()
    table = text[text.index("| setting | `paper`") :]
    table = table[: table.index("\n\n")]
    rows = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    assert set(rows) == differ
    for key in differ:
        cells = rows[key]
        assert shown(paper[key]) in cells[1].lower() or cells[1].startswith("null"), key
        assert shown(authors[key]) in cells[3].lower(), key
        assert cells[2] and cells[4], key  # each value has a source
