"""Readers: slides, plain images, DICOM series and annotation formats."""

from shindan.io.slide import Slide, open_slide

__all__ = ["Slide", "open_slide"]
