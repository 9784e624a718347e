"""The model: a ViT encoder (timm's blocks), the ViC-MAE network around it, its losses.

``vit`` (encoder, named architectures) -> ``pos_embed`` (sin-cos embeddings and their
resampling) -> ``vicmae`` (masking, decoder, projector: :class:`ViCMAE`) -> ``losses``
(reconstruction, the contrastive forms, the lambda schedule).
"""

from vicmae.model.vicmae import ModelConfig, ViCMAE

__all__ = ["ModelConfig", "ViCMAE"]
