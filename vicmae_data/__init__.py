"""vicmae_data: datasets on disk -> .beton files of WebP frame lists -> batches in memory.

``read_sample`` (frames of one sample, for notebooks and tests) and ``make_loader``
(batches of sampled, decoded views) are imported lazily: they pull in ffcv, numba and
torch, which the converters and the test-media generator do not need.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["make_loader", "read_sample"]


def __getattr__(name: str) -> Any:
    if name == "read_sample":
        from vicmae_data.inspect import read_sample

        return read_sample
    if name == "make_loader":
        from vicmae_data.loader import make_loader

        return make_loader
    raise AttributeError(f"module 'vicmae_data' has no attribute {name!r}")
