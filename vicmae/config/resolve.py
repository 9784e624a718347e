"""A job's config resolved once: loaded, derived values filled in, every setting checked.

Precedence: defaults <- a ``base`` dict (a resumed run's saved config) <- a YAML file <-
``key=value`` overrides. A setting that cannot work is refused here (:class:`ConfigError`,
one line naming the key) before any work starts.

Example::

    cfg = load_config("demo_cpu", ["optim.base_lr=1e-4", "model.arch=vit_small_patch16"])
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, TypeVar

from vicmae.config.betons import parse_beton
from vicmae.config.io import (
    ConfigError,
    config_diff,
    from_dict,
    merge_overrides,
    read_yaml,
    to_dict,
)
from vicmae.config.jobs import (
    JOB_CONFIGS,
    FinetuneConfig,
    JobConfig,
    LinprobeConfig,
    TrainConfig,
)
from vicmae.config.sections import RUN_CONTROL_KEYS
from vicmae.model.vit import VIT_ARCHS

T = TypeVar("T")


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cls: type[T] = TrainConfig,  # type: ignore[assignment]
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults <- ``base`` dict <- YAML file ``path`` <- ``overrides``, checked and resolved."""
    data: dict[str, Any] = merge_overrides(base or {}, [])
    if path is not None:
        data = _merge(data, _job_file(path, cls))
    data = merge_overrides(data, list(overrides))
    return resolve(from_dict(cls, data))


def _job_file(path: str | os.PathLike, cls: type) -> dict[str, Any]:
    """A config file's mapping, without its optional top-level ``job:`` (the job it is
    written for, e.g. the fine-tuning presets'), which must be ``cls``'s."""
    data = read_yaml(path)
    job = data.pop("job", None)
    want = next((k for k, c in JOB_CONFIGS.items() if c is cls), None)
    if job is not None and want is not None and job != want:
        raise ConfigError(
            f"{path} is a {job} config: use it with `vicmae train {job} --config {path}`"
        )
    return data


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve(cfg: T) -> T:
    """Derived values filled in once, then every setting checked (ConfigError if it cannot work).

    Pretraining: the data resolution and the model's input size are one value.
    """
    if isinstance(cfg, TrainConfig):
        res = cfg.model.img_size if cfg.data.resolution is None else cfg.data.resolution
        check_resolution(res, cfg.model.arch, "data.resolution")
        try:
            model = replace(cfg.model, img_size=res)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        cfg = replace(cfg, data=replace(cfg.data, resolution=res), model=model)
    if isinstance(cfg, LinprobeConfig | FinetuneConfig):
        if cfg.model.arch is not None and cfg.model.arch not in VIT_ARCHS:
            raise ConfigError(f"model.arch: unknown {cfg.model.arch!r}; one of {sorted(VIT_ARCHS)}")
        if cfg.data.resolution is not None and cfg.model.arch is not None:
            check_resolution(cfg.data.resolution, cfg.model.arch, "data.resolution")
    if isinstance(cfg, LinprobeConfig | FinetuneConfig):
        _check_eval_data(cfg)
    if cfg.optim.layer_decay is not None and not isinstance(cfg, FinetuneConfig):
        raise ConfigError("optim.layer_decay applies to fine-tuning only; leave it null here")
    if cfg.run.out is None:
        cfg = replace(cfg, run=replace(cfg.run, out=default_out(cfg)))
    _check_common(cfg)
    return cfg


CLIP_SAMPLERS = ("clip", "segment")  # data.sampling values that feed the video model


def _check_eval_data(cfg: LinprobeConfig | FinetuneConfig) -> None:
    """Clip settings (the video model) and the test views, checked before any work."""
    d = cfg.data
    clips = d.sampling in CLIP_SAMPLERS
    if clips and not isinstance(cfg, FinetuneConfig):
        raise ConfigError(
            f"data.sampling={d.sampling} feeds the video model, which only fine-tuning builds; "
            "the probe takes one frame per sample (data.sampling=distant)"
        )
    if d.clip_frames < 1 or d.clip_stride < 1:
        raise ConfigError("data.clip_frames and data.clip_stride must be at least 1")
    if not isinstance(cfg, FinetuneConfig):
        return
    m, t = cfg.model, cfg.test
    if clips and (m.tubelet < 1 or d.clip_frames % m.tubelet):
        raise ConfigError(
            f"data.clip_frames={d.clip_frames} is not a multiple of model.tubelet={m.tubelet}"
        )
    if not 0 <= m.head_dropout < 1:
        raise ConfigError(f"model.head_dropout={m.head_dropout} must be in [0, 1)")
    if cfg.augment.threads < 0:
        raise ConfigError(f"augment.threads={cfg.augment.threads} must not be negative")
    if t.clips < 1 or t.crops not in (1, 3):
        raise ConfigError(
            f"test.clips must be >= 1 and test.crops 1 or 3, not {t.clips}, {t.crops}"
        )
    if t.clips * t.crops > 1 and not clips:
        raise ConfigError(
            f"test.clips={t.clips} x test.crops={t.crops} views need clips "
            "(data.sampling=clip or segment); images are tested on the centre crop"
        )


def default_out(cfg: JobConfig) -> str:
    """``runs/<kind>`` (the config's job: ``pretrain``...); an evaluation's folder,
    ``<kind>`` or ``<kind>_random_init``, sits beside the checkpoint it evaluates."""
    if isinstance(cfg, TrainConfig):
        return os.path.join("runs", cfg.kind)
    job = cfg.kind + ("_random_init" if cfg.model.random_init else "")
    if cfg.model.checkpoint:
        return os.path.join(os.path.dirname(cfg.model.checkpoint) or ".", job)
    return os.path.join("runs", job)


def patch_size(arch: str) -> int:
    """The patch side of an architecture name (ConfigError naming the choices otherwise)."""
    if arch not in VIT_ARCHS:
        raise ConfigError(f"model.arch: unknown {arch!r}; one of {sorted(VIT_ARCHS)}")
    return VIT_ARCHS[arch].patch_size


def check_resolution(res: int, arch: str, key: str) -> None:
    """Refuse a resolution that is not a positive multiple of the architecture's patch."""
    p = patch_size(arch)
    if res <= 0 or res % p:
        lo = max(p, res // p * p)
        hint = f"use {lo} or {lo + p}" if res > 0 else f"use a multiple of {p}, e.g. {14 * p}"
        raise ConfigError(
            f"{key}={res} is not a positive multiple of the patch size {p} of {arch}; {hint}"
        )


def _check_common(cfg: JobConfig) -> None:
    o, r, d = cfg.optim, cfg.run, cfg.data
    for key, value in (("optim.batch_size", o.batch_size), ("optim.epochs", o.epochs)):
        if value <= 0:
            raise ConfigError(f"{key}={value} must be positive")
    for key, value in (("optim.micro_batch", o.micro_batch), ("optim.accum", o.accum)):
        if value is not None and value <= 0:
            raise ConfigError(f"{key}={value} must be positive")
    if o.base_lr < 0 or o.weight_decay < 0:
        raise ConfigError("optim.base_lr and optim.weight_decay must not be negative")
    if o.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs={o.warmup_epochs} must not be negative")
    if o.layer_decay is not None and not 0 < o.layer_decay <= 1:
        raise ConfigError(f"optim.layer_decay={o.layer_decay} must be in (0, 1]")
    if r.ckpt_every_steps <= 0 or r.log_every_steps <= 0:
        raise ConfigError("run.ckpt_every_steps and run.log_every_steps must be positive")
    if r.keep < 0 or r.ckpt_every_minutes < 0:
        raise ConfigError("run.keep and run.ckpt_every_minutes must not be negative")
    if r.max_steps is not None and r.max_steps <= 0:
        raise ConfigError(f"run.max_steps={r.max_steps} must be positive (or null)")
    if d.num_workers < 1:
        raise ConfigError(f"data.num_workers={d.num_workers} must be at least 1")
    weighted = [b for b in d.betons if parse_beton(b)[0] != b]
    if d.mix == "concat" and weighted:
        raise ConfigError(
            f"data.betons: {weighted[0]} has a weight, but data.mix=concat takes every file "
            "whole, in proportion to its size; drop the ':weight' or set data.mix=weights"
        )
    if d.resolution is not None and d.resolution <= 0:
        raise ConfigError(f"data.resolution={d.resolution} must be positive")
    if r.device not in ("auto", "cpu", "cuda") and not r.device.startswith("cuda:"):
        raise ConfigError(f"run.device={r.device!r}: use auto, cpu, cuda or cuda:N")


def resume_differences(saved: dict[str, Any], cfg: JobConfig) -> list[tuple]:
    """Settings of ``cfg`` that differ from a saved run's config, run-control keys excepted.

    A key the saved config lacks (added since the run started) counts as its default, the
    behaviour the run had: a new key never makes an old run unresumable."""
    saved = _merge(to_dict(type(cfg)()), saved)
    return [d for d in config_diff(saved, to_dict(cfg)) if d[0] not in RUN_CONTROL_KEYS]
