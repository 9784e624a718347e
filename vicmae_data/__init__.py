"""vicmae_data: datasets on disk -> .beton files of WebP frame lists -> batches in memory."""

__version__ = "0.1.0"
