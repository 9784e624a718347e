"""Moved to ``tests/media.py`` (the helpers the tests share); this name stays only for the
tests of branches written before the move. New tests import ``media``."""

from media import make_tiny_beton, write_class_clips, write_mixed_folder

__all__ = ["make_tiny_beton", "write_class_clips", "write_mixed_folder"]
