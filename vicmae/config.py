"""Training configuration: frozen dataclasses, a YAML file, and ``key=value`` overrides.

Defaults are the paper's (Table 5 for pretraining); where the authors' released code used
another value, the comment beside the field says so. A config is resolved once at start
(YAML, then overrides, then derived values) and never mutated afterwards; its dict form is
printed at start and saved inside every checkpoint.

Example::

    cfg = load_config("cfg.yaml", ["optim.base_lr=1e-4", "model.arch=vit_small_patch16"])
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from vicmae.model import ModelConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule (paper Table 5)."""

    base_lr: float = 1.5e-4  # lr = base_lr x batch_size / 256 (linear scaling rule)
    weight_decay: float = 0.05  # not applied to norms, biases, tokens, position embeddings
    betas: tuple[float, float] = (0.9, 0.95)
    # The effective batch: micro_batch x accumulation steps x world size.
    batch_size: int = 4096
    # Samples per device per forward pass; None: batch_size / world_size (no accumulation).
    micro_batch: int | None = None
    epochs: int = 800
    warmup_epochs: float = 40.0
    min_lr: float = 0.0  # the cosine's floor
    clip_grad: float | None = None  # the paper clips nothing
    fused: bool = True  # fused AdamW kernel where available (CUDA)


@dataclass(frozen=True)
class LossConfig:
    """How the two losses are mixed: loss = recon_weight x recon + lambda(epoch) x contrastive."""

    # The authors' code used 0.97 x reconstruction + 0.03 x contrastive from the start.
    recon_weight: float = 1.0
    contrastive_weight: float = 0.025  # lambda once switched on (paper)
    contrastive_start_epoch: float = 200.0  # lambda is 0 before this epoch (paper)


@dataclass(frozen=True)
class DataConfig:
    """What the loader reads and how it samples (see ``vicmae_data.load.loader.make_loader``)."""

    # ".beton" paths; "in1k.beton:0.3" mixes a file in at that fraction of samples.
    betons: tuple[str, ...] = ()
    # The model's input size too; None: model.img_size.
    resolution: int | None = None
    sampling: Literal["distant", "continuous"] = "distant"
    delta: int = 8  # continuous sampling: second frame within (i, i + delta]
    num_workers: int = 2
    # How the loader reads the file (vicmae_data/memory.py): "mmap-bounded" reads only the
    # touched bytes and keeps resident memory at about a batch, for files of any size;
    # "os_cache" keeps every touched page mapped; "process_cache" is ffcv's page reader.
    memory: Literal["mmap-bounded", "os_cache", "process_cache"] = "mmap-bounded"
    # Random resized crop: area fraction of the frame, for videos and for images (aspect
    # (3/4, 4/3) both). Paper Table 5: crop [0.5, 1] (section 4 states it for video frames
    # and no other range for images). Authors' code: ffcv's default (0.08, 1) for every row.
    video_scale: tuple[float, float] = (0.5, 1.0)
    image_scale: tuple[float, float] = (0.5, 1.0)
    image_augment: bool = True  # strong colour set (vicmae_data/load/augment.py); False: none
    # Paper: the same aug() on both views (Algorithm 1). Authors' pretrain.py: blur always
    # on view 1, solarisation 0.2 on view 2 only ("asymmetric").
    augment_views: Literal["symmetric", "asymmetric"] = "symmetric"
    # Paper section 4: video frames get crops and flips only. Authors' code: one pipeline
    # for every row, video frames included ("all").
    augment_rows: Literal["images", "all"] = "images"


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes."""

    out: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    # SyncBatchNorm in the projector on several GPUs. Paper: silent; authors' code: plain
    # BatchNorm1d (per-GPU statistics), so off.
    sync_bn: bool = False
    ckpt_every_steps: int = 1000  # also at every epoch end and at the end of the run
    log_every_steps: int = 10
    progress: bool = True  # rich progress bar (off when not a terminal)
    max_steps: int | None = None  # stop early (smoke runs, benchmarks); schedules unchanged


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``vicmae train pretrain`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ----------------------------------------------------------------------------- dict <-> dataclass


def to_dict(cfg: Any) -> dict[str, Any]:
    """A frozen config as plain YAML/JSON-friendly data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from nested ``data``, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {_join(where, unknown[0])!r}; known keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], _join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a dataclass's own checks (e.g. an unknown arch)
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` or a ConfigError that names the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported config type {tp!r}")


# ----------------------------------------------------------------------------- files + overrides


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.base_lr=1e-4"`` -> (["optim", "base_lr"], 1e-4); values are read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (e.g. optim.base_lr=1e-4)")
    key, raw = item.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return keys, value


def merge_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to nested ``data`` (a copy is returned)."""
    out = _deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
            node = child
        node[keys[-1]] = value
    return out


def _deepcopy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


BUILTIN_CONFIGS = Path(__file__).resolve().parent / "configs"


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from ``path`` (empty file -> {}).

    A name that is not a file but names a built-in config (``demo_cpu``, from
    ``vicmae/configs/``) reads that one.
    """
    p = Path(path)
    if not p.is_file() and (BUILTIN_CONFIGS / f"{p.name}.yaml").is_file() and p.name == str(p):
        p = BUILTIN_CONFIGS / f"{p.name}.yaml"
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    cls: type[T] = TrainConfig,  # type: ignore[assignment]
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults <- ``base`` dict <- YAML file ``path`` <- ``overrides``, checked and resolved."""
    data: dict[str, Any] = _deepcopy(base or {})
    if path is not None:
        data = _merge(data, read_yaml(path))
    data = merge_overrides(data, list(overrides))
    cfg = from_dict(cls, data)
    return resolve(cfg)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = _deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve(cfg: T) -> T:
    """Derived values filled in once: the data resolution is the model's input size."""
    if isinstance(cfg, TrainConfig):
        res = cfg.data.resolution or cfg.model.img_size
        cfg = replace(
            cfg,
            data=replace(cfg.data, resolution=res),
            model=replace(cfg.model, img_size=res),
        )
        _check_train(cfg)
    return cfg


def _check_train(cfg: TrainConfig) -> None:
    o = cfg.optim
    if o.batch_size <= 0 or (o.micro_batch is not None and o.micro_batch <= 0):
        raise ConfigError("optim.batch_size and optim.micro_batch must be positive")
    if o.epochs <= 0:
        raise ConfigError("optim.epochs must be positive")
    if o.warmup_epochs < 0 or o.warmup_epochs > o.epochs:
        raise ConfigError("optim.warmup_epochs must be between 0 and optim.epochs")
    if cfg.run.ckpt_every_steps <= 0 or cfg.run.log_every_steps <= 0:
        raise ConfigError("run.ckpt_every_steps and run.log_every_steps must be positive")


def accumulation(optim: OptimConfig, world_size: int) -> tuple[int, int]:
    """(micro batch per device, accumulation steps) that make ``optim.batch_size``."""
    per_device, rest = divmod(optim.batch_size, world_size)
    if rest:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} is not divisible by world size {world_size}"
        )
    micro = optim.micro_batch or per_device
    steps, rest = divmod(per_device, micro)
    if rest or steps == 0:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} over {world_size} device(s) is {per_device} "
            f"per device, not a multiple of optim.micro_batch={micro}"
        )
    return micro, steps


def dump_yaml(cfg: Any) -> str:
    """The config as YAML text (what is printed at start and written beside the run)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = [
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "accumulation",
    "dump_yaml",
    "from_dict",
    "load_config",
    "merge_overrides",
    "parse_override",
    "read_yaml",
    "resolve",
    "to_dict",
]
