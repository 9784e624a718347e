"""vicmae_data: datasets on disk -> .beton files of WebP frame lists -> batches in memory."""

__version__ = "0.1.0"

from vicmae_data.inspect import read_sample as read_sample  # (frames, label, meta) for notebooks
from vicmae_data.loader import make_loader as make_loader  # batches of sampled, decoded views
