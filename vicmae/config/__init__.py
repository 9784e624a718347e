"""The three jobs' configurations: frozen dataclasses with sourced defaults.

Every job has the same sections and keys where they mean the same thing (``optim.epochs``,
``optim.batch_size``, ``data.betons``, ``run.out``...), so one dotted ``key=value`` syntax
and one set of typed flags serve pretraining, linear probing and fine-tuning.

- ``sections``: what every job shares (``optim``, ``data``, ``run``);
- ``jobs``: :class:`TrainConfig` (``vicmae train pretrain``, paper Table 5),
  :class:`LinprobeConfig` (Table 7), :class:`FinetuneConfig` (Table 6), ``JobConfig``;
- ``io``: dicts, YAML files, ``key=value`` overrides, differences (nothing job-specific);
- ``resolve``: :func:`load_config`, derived values and the checks that refuse settings that
  cannot work; ``betons``: ``data.betons`` entries (``path:fraction``);
- ``cli``: a command line (``--config``, overrides, typed flags, ``--resume``) -> a resolved
  config. Imported as ``vicmae.config.cli``: it reads saved checkpoints with the engine's
  safe loader, which this package otherwise does not need.

A config is resolved once at start (YAML, then overrides, then derived values), checked
(settings that cannot work are refused before any work), and never mutated; its dict form
is printed at start and saved inside every checkpoint.

Example::

    cfg = load_config("demo_cpu", ["optim.base_lr=1e-4", "model.arch=vit_small_patch16"])
"""

from __future__ import annotations

from vicmae.config.betons import loader_paths, parse_beton
from vicmae.config.io import (
    BUILTIN_CONFIGS,
    ConfigError,
    builtin_configs,
    config_diff,
    config_summary,
    dump_yaml,
    from_dict,
    merge_overrides,
    parse_override,
    read_yaml,
    to_dict,
)
from vicmae.config.jobs import (
    JOB_CONFIGS,
    AugmentConfig,
    EvalModelConfig,
    FinetuneConfig,
    FinetuneModelConfig,
    FinetuneOptimConfig,
    JobConfig,
    LinprobeConfig,
    LinprobeOptimConfig,
    LossConfig,
    MultiViewConfig,
    ProbeConfig,
    TrainConfig,
)
from vicmae.config.resolve import (
    check_resolution,
    default_out,
    load_config,
    patch_size,
    resolve,
    resume_differences,
)
from vicmae.config.sections import (
    RUN_CONTROL_KEYS,
    DataConfig,
    EvalDataConfig,
    LoaderConfig,
    OptimConfig,
    PretrainRunConfig,
    RunConfig,
)
from vicmae.model.vicmae import ModelConfig

__all__ = [
    "BUILTIN_CONFIGS",
    "JOB_CONFIGS",
    "RUN_CONTROL_KEYS",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "EvalDataConfig",
    "EvalModelConfig",
    "FinetuneConfig",
    "FinetuneModelConfig",
    "FinetuneOptimConfig",
    "JobConfig",
    "LinprobeConfig",
    "LinprobeOptimConfig",
    "LoaderConfig",
    "LossConfig",
    "ModelConfig",
    "MultiViewConfig",
    "OptimConfig",
    "PretrainRunConfig",
    "ProbeConfig",
    "RunConfig",
    "TrainConfig",
    "builtin_configs",
    "check_resolution",
    "config_diff",
    "config_summary",
    "default_out",
    "dump_yaml",
    "from_dict",
    "load_config",
    "loader_paths",
    "merge_overrides",
    "parse_beton",
    "parse_override",
    "patch_size",
    "read_yaml",
    "resolve",
    "resume_differences",
    "to_dict",
]
