"""Frozen-dataclass configs as data: dicts, YAML files, ``key=value`` overrides, differences.

Nothing here knows a job; :mod:`vicmae.config.sections` and :mod:`vicmae.config.jobs`
define the sections and the three job configs. A config is built from plain data once
(``from_dict`` checks every key and type and names the key in its error), never mutated,
and turned back into plain data (``to_dict``) to print, save beside a run and store inside
every checkpoint.

Example::

    data = merge_overrides(read_yaml("demo_cpu"), ["optim.epochs=3"])
    cfg = from_dict(TrainConfig, data)
    config_diff(to_dict(saved), to_dict(cfg))  # [("optim.epochs", 10, 3)]
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value that cannot work."""


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


BUILTIN_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # vicmae/configs/


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from ``path`` (empty file -> {}).

    A name that is not a file but names a built-in config (``demo_cpu``, from
    ``vicmae/configs/``; :func:`builtin_configs` lists them) reads that one.
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


def builtin_configs() -> dict[str, str]:
    """Built-in config names -> their description: the file's first comment lines, whole,
    up to an indented example line (``#   vicmae train ...``) or the first other line."""
    out = {}
    for path in sorted(BUILTIN_CONFIGS.glob("*.yaml")):
        about = []
        for line in path.read_text().splitlines():
            if not line.startswith("# ") or line.startswith("#  "):
                break
            about.append(line[2:].strip())
        out[path.stem] = " ".join(about)
    return out


def dump_yaml(cfg: Any) -> str:
    """The config as YAML text (what is printed at start and written beside the run)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_summary(cfg: Any) -> str:
    """The console's short account of a job's config: model, data, optimiser, and where the
    whole of it is (``RUN/config.yaml``), e.g.::

        config (all of it: runs/k400/config.yaml):
          model  vit_base_patch16 at 224, mask ratio 0.5
          data   k400.beton + in1k.beton, concatenated (one epoch: every sample once)
          optim  adamw, batch 4096, 800 epochs (40 warm-up), base lr 0.00015
    """
    m, o, d = cfg.model, cfg.optim, cfg.data
    if getattr(m, "checkpoint", None):  # an evaluation: the pretrained encoder
        model = f"the encoder of {m.checkpoint}" + (" (random init)" if m.random_init else "")
    else:
        model = str(m.arch)
    if d.resolution is not None or getattr(m, "img_size", None) is not None:
        model += f" at {d.resolution or m.img_size}"
    if getattr(m, "mask_ratio", None) is not None:
        model += f", mask ratio {m.mask_ratio:g}"
    data = ", ".join(d.betons) or "none"
    if len(d.betons) > 1 and d.mix == "concat":
        data = " + ".join(d.betons) + ", concatenated (one epoch: every sample once)"
    elif len(d.betons) > 1:
        data += f", by weight ({d.betons[0]} defines the epoch)"
    if getattr(d, "val_beton", None):
        data += f"; validation {d.val_beton}"
    optim = (
        f"{o.name}, batch {o.batch_size}, {o.epochs} epochs ({o.warmup_epochs:g} warm-up), "
        f"base lr {o.base_lr:g}"
    )
    where = Path(cfg.run.out) / "config.yaml" if cfg.run.out else "the run folder's config.yaml"
    return f"config (all of it: {where}):\n  model  {model}\n  data   {data}\n  optim  {optim}"


def config_diff(old: dict[str, Any], new: dict[str, Any], where: str = "") -> list[tuple]:
    """``[(dotted key, old value, new value), ...]`` for every leaf that differs."""
    out: list[tuple] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = _join(where, key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, name)
        elif a != b:
            out.append((name, a, b))
    return out
