"""From a command line to a job's config: one parser for all three jobs.

``vicmae train pretrain|linprobe|finetune`` take the same things, and this module turns
them into a resolved config; the CLI (``vicmae_cli.train``) only collects them:

- ``--config FILE|NAME`` (a YAML file, or a built-in name: :func:`builtin_configs`);
- ``key=value`` overrides with dotted keys (``optim.epochs=3``), the same for every job;
- typed shortcuts (:data:`SHORTCUTS`: ``--epochs 3`` is ``optim.epochs=3``);
- ``--resume [PATH]``: the saved run's config is the base, and everything given on the
  command line is applied on top of it (the engine refuses real changes unless allowed).
  PATH is a run folder or a checkpoint; without it, ``run.out``'s folder. The saved
  ``run.max_steps`` is not carried over: a resumed run trains to its end, or to the
  ``run.max_steps`` given again.

Example::

    cfg, resume = job_config("pretrain", None, ["optim.epochs=3"], {"betons": ["k.beton"]})
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vicmae.config.io import ConfigError, read_yaml
from vicmae.config.jobs import JOB_CONFIGS, JobConfig
from vicmae.config.resolve import load_config
from vicmae.engine.checkpoint import load_checkpoint

# Typed flag -> config key, the same key in every job that has it.
SHORTCUTS: dict[str, str] = {
    "betons": "data.betons",
    "val_beton": "data.val_beton",
    "out": "run.out",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "blr": "optim.base_lr",
    "accum": "optim.accum",
    "keep": "run.keep",
    "arch": "model.arch",
    "mask_ratio": "model.mask_ratio",
    "checkpoint": "model.checkpoint",
    "random_init": "model.random_init",
}


def shortcut_overrides(flags: dict[str, Any]) -> list[str]:
    """``{"epochs": 3, "arch": None}`` -> ``["optim.epochs=3"]`` (None: not given)."""
    out = []
    for name, value in flags.items():
        if name not in SHORTCUTS:
            raise ConfigError(f"unknown shortcut {name!r}")
        if value is None or value == [] or value is False:
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, list | tuple):
            value = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
        out.append(f"{SHORTCUTS[name]}={json.dumps(value)}")  # JSON is YAML: quoted strings
    return out


def split_resume_target(args: list[str], resume: bool) -> tuple[list[str], str | None]:
    """Positional arguments -> (overrides, the PATH given after ``--resume``, if any).

    Overrides are ``key=value``; with ``--resume``, one argument that is an existing path
    (and no ``key=value``) names the run folder or checkpoint to resume.
    """
    overrides, target = [], None
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif resume and target is None and Path(arg).exists():
            target = arg
        elif resume and target is None:
            raise ConfigError(f"--resume {arg}: no such run folder or checkpoint")
        else:
            raise ConfigError(f"{arg!r} is not key=value (e.g. optim.epochs=3)")
    return overrides, target


def job_config(
    kind: str,
    config: str | os.PathLike | None,
    overrides: list[str],
    flags: dict[str, Any],
    *,
    resume: bool = False,
    resume_target: str | None = None,
) -> tuple[JobConfig, str | bool | None]:
    """The resolved config of a ``kind`` job, and what to pass as ``resume=``.

    Precedence: defaults <- the saved run's config (when resuming) <- ``config`` <-
    ``overrides`` <- ``flags``.
    """
    if kind not in JOB_CONFIGS:
        raise ConfigError(f"unknown job {kind!r}; one of {sorted(JOB_CONFIGS)}")
    cls = JOB_CONFIGS[kind]
    items = [*overrides, *shortcut_overrides(flags)]
    if not resume:
        return load_config(config, items, cls=cls), None
    if resume_target is not None:
        target = Path(resume_target)
        run_dir = target if target.is_dir() else target.parent
        if flags.get("out") is None and not any(i.startswith("run.out=") for i in items):
            items.append(f"run.out={json.dumps(str(run_dir))}")
    else:
        run_dir = Path(load_config(config, items, cls=cls).run.out)
    base = saved_config(run_dir, resume_target)
    if base is not None:  # where a sitting stopped is not part of the run (module docstring)
        base = {**base, "run": {k: v for k, v in base.get("run", {}).items() if k != "max_steps"}}
    return load_config(config, items, cls=cls, base=base), resume_target or True


def saved_config(run_dir: Path, checkpoint: str | os.PathLike | None = None) -> dict | None:
    """The config a run was started with: a checkpoint file's own, else ``config.yaml``."""
    if checkpoint is not None and Path(checkpoint).is_file():
        return dict(load_checkpoint(checkpoint).get("config") or {}) or None
    if (run_dir / "config.yaml").is_file():
        return read_yaml(run_dir / "config.yaml")
    return None  # nothing saved yet: --resume starts from scratch
