"""The model: a ViT encoder (timm's blocks), the ViC-MAE network around it, its losses.

``vit`` (encoder, named architectures) -> ``pos_embed`` (sin-cos embeddings and their
resampling) -> ``vicmae`` (masking, decoder, projector: :class:`ViCMAE`) -> ``losses``
(reconstruction, the contrastive forms, the lambda schedule); ``video_vit`` (the encoder
inflated to a space-time ViT over clips, for video fine-tuning: :func:`inflate`).
"""

from vicmae.model.vicmae import ModelConfig, ViCMAE
from vicmae.model.video_vit import VideoViT, inflate

__all__ = ["ModelConfig", "ViCMAE", "VideoViT", "inflate"]
