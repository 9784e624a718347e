"""Export to timm: timm loads the file offline and computes the same features as our encoder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import timm
import torch
from typer.testing import CliRunner

from vicmae.engine.checkpoint import rng_state
from vicmae.engine.evaluation import encoder_features
from vicmae.export import export_timm, timm_create_args, timm_create_call
from vicmae.model.vicmae import ModelConfig, ViCMAE
from vicmae.model.vit import ViTEncoder
from vicmae_cli.train import app

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "export.md"
runner = CliRunner()

CFG = ModelConfig(
    arch="vit_pico_patch8", img_size=32, decoder_dim=32, decoder_depth=1, decoder_heads=2
)
# vit_pico_patch8 expressed as timm kwargs (timm has no model of this size by name).
TIMM_KW = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def trained_model() -> ViCMAE:
    """A tiny ViCMAE after a few optimizer steps, so that weights are not just their init."""
    torch.manual_seed(0)
    model = ViCMAE(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    views = torch.randn(4, 2, 3, 32, 32)
    for _ in range(3):
        out = model(views)
        (out.loss_recon + out.loss_contrastive).backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _checkpoint(model: ViCMAE, path: Path) -> Path:
    """A checkpoint as the trainer writes it (RNG states as tensors and numbers)."""
    torch.save(
        {
            "model": model.state_dict(),
            "config": {"model": dataclasses.asdict(model.cfg)},
            "rng": rng_state(),
            "step": 3,
        },
        path,
    )
    return path


def _timm(file: Path, **kw) -> torch.nn.Module:
    return timm.create_model(
        "vit_base_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(file)),
        **TIMM_KW,
        **kw,
    ).eval()


def test_export_round_trip_equals_timm_features(trained_model: ViCMAE, tmp_path: Path) -> None:
    ckpt = _checkpoint(trained_model, tmp_path / "ckpt.pt")
    out = tmp_path / "vit.pth"
    info = export_timm(ckpt, out, head_classes=1000)  # --with-head: a strict load at 1000
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "vit.pth"]
    assert info["arch"] == "vit_pico_patch8" and info["head_classes"] == 1000
    assert info["img_size"] == 32
    assert (info["embed_dim"], info["depth"], info["patch_size"]) == (64, 2, 8)
    json.dumps(info)  # the CLI prints it
    sd = torch.load(out, weights_only=True)
    assert info["num_params"] == sum(
        v.numel() for k, v in sd.items() if not k.startswith("head.") and k != "pos_embed"
    )
    assert "pos_embed" in sd and torch.all(sd["pos_embed"][0, 0] == 0)  # cls position zeros
    assert not any(k.startswith(("decoder", "projector", "mask_token")) for k in sd)

    # The call, default num_classes=1000: timm loads strictly, so nothing is missing.
    vit = _timm(out)
    theirs = vit.state_dict()
    for key, value in sd.items():
        torch.testing.assert_close(theirs[key], value, rtol=0, atol=0)
    encoder_keys = {k for k in theirs if not k.startswith("head.")}
    assert encoder_keys == {k for k in sd if not k.startswith("head.")}

    imgs = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours = trained_model.encoder.forward_features(imgs)
        torch.testing.assert_close(vit.forward_features(imgs), ours)
        torch.testing.assert_close(vit.forward_head(vit.forward_features(imgs), True), ours[:, 0])
        # features only: num_classes=0 drops the head, loads the encoder
        cls = encoder_features(trained_model.encoder, imgs, "cls")
        torch.testing.assert_close(_timm(out, num_classes=0)(imgs), cls)


def test_export_from_state_dict_module_and_ddp_keys(trained_model: ViCMAE, tmp_path: Path) -> None:
    export_timm(trained_model, tmp_path / "a.pth", head_classes=None)
    ref = torch.load(tmp_path / "a.pth", weights_only=True)
    assert "head.weight" not in ref
    raw = {"module." + k: v for k, v in trained_model.state_dict().items()}
    info = export_timm(raw, tmp_path / "b.pth", head_classes=None)
    assert info["arch"] == "vit_pico_patch8"  # named by its shapes
    assert info["head_classes"] == 0 and info["img_size"] == 32  # no head; 4 x 4 patches of 8
    other = torch.load(tmp_path / "b.pth", weights_only=True)
    assert ref.keys() == other.keys()
    assert all(torch.equal(ref[k], other[k]) for k in ref)
    with torch.no_grad():
        torch.testing.assert_close(
            _timm(tmp_path / "b.pth", num_classes=0)(torch.zeros(1, 3, 32, 32)),
            encoder_features(trained_model.encoder, torch.zeros(1, 3, 32, 32), "cls"),
        )


def test_export_rejects_wrong_arch_and_non_checkpoints(
    trained_model: ViCMAE, tmp_path: Path
) -> None:
    out = tmp_path / "vit.pth"
    with pytest.raises(ValueError, match="is not vit_base_patch16"):
        export_timm(trained_model.state_dict(), out, arch="vit_base_patch16")
    with pytest.raises(ValueError, match="no ViC-MAE encoder"):
        export_timm({"weight": torch.zeros(2)}, out)
    with pytest.raises(FileNotFoundError):
        export_timm(tmp_path / "missing.pt", out)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        export_timm(garbage, out)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="expected a state dict"):
        export_timm(tmp_path / "tensor.pt", out)
    assert not out.exists()


def test_the_checkpoints_config_names_the_arch_and_its_weights_must_fit_it(
    trained_model: ViCMAE, tmp_path: Path
) -> None:
    """The arch comes from the checkpoint's config and the shapes are checked against it;
    weights with no config (or none for the model) are named by their shapes."""
    state = torch.load(_checkpoint(trained_model, tmp_path / "ckpt.pt"), weights_only=True)
    state["config"]["model"]["arch"] = "vit_tiny_patch16"  # another model's config
    torch.save(state, tmp_path / "mixed.pt")
    out = tmp_path / "vit.pth"
    with pytest.raises(ValueError, match=r"encoder \(dim 64, depth 2, patch 8\) is not vit_tiny"):
        export_timm(tmp_path / "mixed.pt", out)
    assert not out.exists()
    for config in ({}, {"config": {}}, {"config": {"optim": {"lr": 1.0}}}):
        info = export_timm({"model": trained_model.state_dict(), **config}, out)
        assert info["arch"] == "vit_pico_patch8"


def _ours(model: ViCMAE, img_size: int, pool: str, imgs: torch.Tensor) -> torch.Tensor:
    """This project's encoder features at ``img_size`` (the checkpoint loaded at that size)."""
    at_size = ViCMAE(dataclasses.replace(model.cfg, img_size=img_size)).eval()
    at_size.load_state_dict(model.state_dict())
    with torch.no_grad():
        return encoder_features(at_size.encoder, imgs, pool)


def _export_cli(ckpt: Path, out: Path, *extra: str) -> list[str]:
    args = ["export", "timm", "--checkpoint", str(ckpt), "--out", str(out), *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output.splitlines()


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("img_size", [32, 24, 48])
def test_printed_timm_call_gives_the_encoders_features(
    trained_model: ViCMAE, tmp_path: Path, pool: str, img_size: int
) -> None:
    """The line `vicmae export timm` prints, pasted into Python, computes our features:
    either pooling, at the pretraining size, a smaller one and a larger one."""
    ckpt = _checkpoint(trained_model, tmp_path / "ckpt.pt")
    out = tmp_path / "vit.pth"
    lines = _export_cli(ckpt, out, "--pool", pool, "--img-size", str(img_size))
    assert len(lines) == 2 and lines[0].startswith(f"wrote {out}: vit_pico_patch8 encoder")
    call = lines[1]
    assert call.startswith('timm.create_model("vit_base_patch16_224", pretrained=True, ')
    for kw in ("embed_dim=64", "depth=2", "num_heads=2", "patch_size=8", f"img_size={img_size}"):
        assert kw in call  # a size timm has no name for: spelled out
    assert ('global_pool="avg", fc_norm=False' in call) == (pool == "mean")
    vit = eval(call, {"timm": timm}).eval()  # exactly what a user pastes
    imgs = torch.randn(3, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = vit(imgs)
    torch.testing.assert_close(theirs, _ours(trained_model, img_size, pool, imgs))


def test_avg_pool_without_fc_norm_false_is_not_the_encoders_feature(
    trained_model: ViCMAE, tmp_path: Path
) -> None:
    """Why the call carries fc_norm=False: timm's "avg" alone swaps the trained norm out."""
    out = tmp_path / "vit.pth"
    export_timm(trained_model, out)
    args = timm_create_args("vit_pico_patch8", out, 32, "mean")
    del args["fc_norm"]
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs = timm.create_model(**args).eval()(imgs)
    assert not torch.allclose(theirs, _ours(trained_model, 32, "mean", imgs), atol=1e-3)


def test_export_json_is_one_line_and_its_args_build_the_model(
    trained_model: ViCMAE, tmp_path: Path
) -> None:
    ckpt = _checkpoint(trained_model, tmp_path / "ckpt.pt")
    out = tmp_path / "a-rather-long-folder-name-so-that-the-line-passes-80-columns" / "vit.pth"
    out.parent.mkdir()
    (line,) = _export_cli(ckpt, out, "--json", "--pool", "mean")
    assert len(line) > 200  # one line, not wrapped at the terminal's width
    info = json.loads(line)
    assert info["arch"] == "vit_pico_patch8" and info["img_size"] == 32
    args = info["timm_create_model"]
    assert args == timm_create_args("vit_pico_patch8", out, 32, "mean")
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs = timm.create_model(**args).eval()(imgs)
    torch.testing.assert_close(theirs, _ours(trained_model, 32, "mean", imgs))


def test_export_refuses_to_overwrite_and_bad_pool(trained_model: ViCMAE, tmp_path: Path) -> None:
    ckpt = _checkpoint(trained_model, tmp_path / "ckpt.pt")
    out = tmp_path / "vit.pth"
    out.write_bytes(b"precious")
    base = ["export", "timm", "--checkpoint", str(ckpt), "--out", str(out)]
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "exists; pass --force" in res.output
    assert out.read_bytes() == b"precious"
    res = runner.invoke(app, [*base, "--force", "--pool", "max"])
    assert res.exit_code == 2 and "--pool must be one of cls, mean" in res.output
    assert out.read_bytes() == b"precious"
    assert runner.invoke(app, [*base, "--force"]).exit_code == 0
    assert out.read_bytes() != b"precious"


def test_standard_arch_call_and_the_readme_shows_it() -> None:
    """A timm-named size needs no dimensions; docs/export.md prints exactly these lines."""
    # The defaults: at 224, the class token, no classes (features).
    cls = timm_create_call(timm_create_args("vit_base_patch16", "vit.pth"))
    mean = timm_create_call(timm_create_args("vit_base_patch16", "vit.pth", 224, "mean"))
    assert cls == (
        'timm.create_model("vit_base_patch16_224", pretrained=True, '
        'pretrained_cfg_overlay=dict(file="vit.pth"), num_classes=0, global_pool="token")'
    )
    assert mean.endswith('num_classes=0, global_pool="avg", fc_norm=False)')
    large = timm_create_call(timm_create_args("vit_large_patch16", "vit.pth", 384, "cls"))
    assert large.startswith('timm.create_model("vit_large_patch16_224"')
    assert large.endswith('global_pool="token", img_size=384)') and "embed_dim" not in large
    readme = GUIDE.read_text()
    assert cls in readme and mean in readme


def test_export_errors_are_one_line(trained_model: ViCMAE, tmp_path: Path) -> None:
    ckpt = _checkpoint(trained_model, tmp_path / "ckpt.pt")
    res = runner.invoke(
        app, ["export", "timm", "--checkpoint", str(ckpt), "--out", str(tmp_path / "a.pth"),
              "--img-size", "30"],
    )  # fmt: skip
    assert res.exit_code == 2 and "img_size 30 is not a multiple of patch 8" in res.output
    assert len(res.output.strip().splitlines()) == 1
    # a raw state dict of a size that has no name: the file is written, the call needs --arch
    odd = ViTEncoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    raw = tmp_path / "raw.pt"
    torch.save({"encoder." + k: v for k, v in odd.state_dict().items()}, raw)
    res = runner.invoke(
        app, ["export", "timm", "--checkpoint", str(raw), "--out", str(tmp_path / "b.pth")]
    )
    assert res.exit_code == 2 and "pass --arch" in res.output
    assert len(res.output.strip().splitlines()) == 1
