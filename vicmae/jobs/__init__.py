"""The three jobs, each a model, a loss and an evaluation handed to :mod:`vicmae.engine`:
``pretrain`` (ViC-MAE), ``linprobe`` (Table 7), ``finetune`` (Table 6)."""
