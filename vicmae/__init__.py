"""ViC-MAE: contrastive masked autoencoders for video and images (model, losses, trainer)."""

__version__ = "0.1.0"
