"""Readers: slides, plain images, DICOM series and annotation formats."""

from typing import Any

# Loaded on first use: the CLI imports shindan.io.inputs at start-up, which runs this file,
# and the slide readers (Pillow, OpenSlide) are needed only when a command reads a file.
_EXPORTS = ("Slide", "open_slide")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from shindan.io import slide

        return getattr(slide, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Slide", "open_slide"]
