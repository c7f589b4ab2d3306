"""CT display windows: map Hounsfield units to [0, 1] floats or 0–255 bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shindan.errors import InputError

__all__ = ["WINDOWS", "Window", "apply_window", "get_window"]


@dataclass(frozen=True)
class Window:
    """A display window: ``width`` and ``level`` (centre) in HU."""

    width: float
    level: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2

    def as_dict(self) -> dict[str, float]:
        return {"width": self.width, "level": self.level}


# Common radiology conventions (width, level in HU). "kidney" is a wide soft-tissue window
# that keeps avidly enhancing cortex (about 150–250 HU in the corticomedullary phase) from
# saturating, so enhancement differences between phases survive windowing.
WINDOWS: dict[str, Window] = {
    "abdomen": Window(400, 40),
    "soft-tissue": Window(400, 40),
    "kidney": Window(500, 100),
    "renal": Window(500, 100),
    "liver": Window(150, 30),
    "mediastinum": Window(350, 50),
    "brain": Window(80, 40),
    "bone": Window(2000, 500),
    "lung": Window(1500, -600),
}


def get_window(window: str | Window | tuple[float, float]) -> Window:
    """A :class:`Window` from a preset name, a ``Window`` or a ``(width, level)`` pair."""
    if isinstance(window, Window):
        return window
    if isinstance(window, str):
        key = window.strip().lower().replace("_", "-").replace(" ", "-")
        if key in WINDOWS:
            return WINDOWS[key]
        try:  # "400,40" or "400/40"
            w, lvl = (float(v) for v in key.replace("/", ",").split(","))
        except ValueError:
            raise InputError(
                f"unknown window {window!r} (presets: {', '.join(WINDOWS)}; or WIDTH,LEVEL in HU)"
            ) from None
        return get_window((w, lvl))
    w, lvl = (float(v) for v in window)
    if not w > 0:
        raise InputError(f"window width must be positive, got {w}")
    return Window(w, lvl)


def apply_window(
    hu: np.ndarray,
    window: str | Window | tuple[float, float] = "abdomen",
    dtype: type | str = np.float32,
) -> np.ndarray:
    """Clip ``hu`` to the window and scale it: [0, 1] floats, or 0–255 with ``dtype=uint8``.

    Parameters
    ----------
    hu : ndarray
        Values in Hounsfield units (not modified).
    window : str, Window or (width, level)
        A preset from :data:`WINDOWS` (``abdomen``/``soft-tissue`` W400 L40, ``kidney`` W500
        L100, ``bone``, ``lung``, ...) or explicit width and level in HU.
    dtype : numpy dtype
        ``float32``/``float64`` for [0, 1], ``uint8`` for 0–255 (rounded).
    """
    win = get_window(window)
    scaled = (np.asarray(hu, dtype=np.float64) - win.low) / win.width
    scaled = np.clip(scaled, 0.0, 1.0)
    if np.dtype(dtype) == np.uint8:
        return np.rint(scaled * 255).astype(np.uint8)
    return scaled.astype(dtype)
