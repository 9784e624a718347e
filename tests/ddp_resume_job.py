"""Run by tests under torchrun: one job uninterrupted, then stopped and resumed (same process).

    torchrun --nproc_per_node 2 tests/ddp_resume_job.py KIND BETON PRETRAINED OUT STOP [PHASE]

KIND is pretrain, linprobe or finetune; the job runs all its steps into OUT/full, then
STOP steps into OUT/part (a stop, as a preempted job's), then ``--resume`` of OUT/part to
the end. The test compares the two folders. The process group is joined once here, so
the three runs share it. PHASE ``first`` runs only the first two, ``resume`` only the
third (each in its own launch: a job stopped, then started again by new processes).
"""

from __future__ import annotations

import sys

import torch.distributed as dist
from media import TINY_MODEL

from vicmae.config import JOB_CONFIGS, load_config
from vicmae.jobs.finetune import finetune
from vicmae.jobs.linprobe import linprobe
from vicmae.jobs.pretrain import pretrain

COMMON = [
    "optim.batch_size=8", "optim.epochs=2", "optim.warmup_epochs=1", "data.num_workers=1",
    "run.progress=false", "run.log_every_steps=1", "data.resolution=32",
]  # fmt: skip


def overrides(kind: str, beton: str, pretrained: str) -> list[str]:
    if kind == "pretrain":
        return [*COMMON, *TINY_MODEL, f"data.betons=[{beton}]", "optim.base_lr=1e-2",
                "loss.contrastive_start_epoch=0"]  # fmt: skip
    extra = [f"data.betons=[{beton}]", f"data.val_beton={beton}", f"model.checkpoint={pretrained}"]
    if kind == "finetune":
        extra += ["model.drop_path=0.1", "optim.base_lr=1e-3"]
    return [*COMMON, *extra]


def main() -> None:
    kind, beton, pretrained, out, stop = sys.argv[1:6]
    phase = sys.argv[6] if len(sys.argv) > 6 else "all"
    dist.init_process_group("gloo")
    run = {"pretrain": pretrain, "linprobe": linprobe, "finetune": finetune}[kind]
    base = overrides(kind, beton, pretrained)
    cls = JOB_CONFIGS[kind]
    if phase in ("all", "first"):
        run(load_config(None, [*base, f"run.out={out}/full"], cls=cls))
        run(load_config(None, [*base, f"run.out={out}/part", f"run.max_steps={stop}"], cls=cls))
    if phase in ("all", "resume"):
        run(load_config(None, [*base, f"run.out={out}/part"], cls=cls), resume=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
