"""vicmae_data: datasets on disk -> .beton files of WebP frame lists -> batches in memory.

The package follows the data's way; each folder is one stage:

- ``sources/``: the datasets as they ship (Kinetics, Moments in Time, ImageNet, folders,
  Something-Something v2, Places365) listed into items with labels; one registry entry
  per layout (reader, synth twin, help);
- ``write/``: items -> WebP frames (transcode, worker processes, the resume cache of
  parts) -> a .beton (convert, merge, the writer);
- ``format/``: the .beton itself (fields, page layout, raw access);
- ``load/``: a .beton -> batches (frame samplers, crop parameters, decoder and its C
  bindings in ``load/native/``, traversal order, memory managers, the loader) and the
  torch-side augmentation of those batches;
- ``inspect/``: info, verify, preview, one sample as pixels;
- ``synth/``: small datasets in the real layouts, for tests and demos.

``ffcv_private.py`` holds every use of ffcv internals; ``atomic.py`` the atomic file write;
``defaults.py`` the defaults a library function and its ``vicmae-data`` option share.

The public API below is imported lazily: the loader pulls in ffcv, numba and torch, which
the converters and the test-media generator do not need.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "make_loader": "vicmae_data.load.loader",
    "Batch": "vicmae_data.load.batch",
    "to_model_input": "vicmae_data.load.augment",
    "read_sample": "vicmae_data.inspect.read",
    "info": "vicmae_data.inspect.info",
    "verify": "vicmae_data.inspect.verify",
    "class_map": "vicmae_data.inspect.classes",
    "class_names": "vicmae_data.inspect.classes",
    "check_same_classes": "vicmae_data.inspect.classes",
    "ClassMapError": "vicmae_data.inspect.classes",
    "require_labels": "vicmae_data.inspect.classes",
    "UnlabelledError": "vicmae_data.inspect.classes",
    "check_labels": "vicmae_data.inspect.classes",
    "LabelError": "vicmae_data.inspect.classes",
    "BetonFile": "vicmae_data.format.beton",
    "BetonError": "vicmae_data.format.beton",
    "convert": "vicmae_data.write.convert",
    "merge": "vicmae_data.write.merge",
    "synth_dataset": "vicmae_data.synth.dataset",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'vicmae_data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
