"""``data.betons`` entries: a path, or ``path:fraction`` to mix a file in at that share.

Example: ``loader_paths(("k400.beton", "in1k.beton:0.3"))`` ->
``["k400.beton", ("in1k.beton", 0.3)]``, what :func:`vicmae_data.make_loader` takes.
"""

from __future__ import annotations

from vicmae.config.io import ConfigError


def parse_beton(item: str) -> tuple[str, float]:
    """``"in1k.beton:0.3"`` -> ("in1k.beton", 0.3); a plain path has weight 1."""
    path, sep, frac = item.rpartition(":")
    if sep and path:
        try:
            weight = float(frac)
        except ValueError:
            return item, 1.0
        if weight <= 0:
            raise ConfigError(f"{item}: the fraction after ':' must be positive")
        return path, weight
    return item, 1.0


def loader_paths(betons: tuple[str, ...]) -> list[str | tuple[str, float]]:
    """``data.betons`` as ``make_loader`` takes them (a weight only where one was given)."""
    out: list[str | tuple[str, float]] = []
    for item in betons:
        path, weight = parse_beton(item)
        out.append(item if path == item else (path, weight))
    return out
