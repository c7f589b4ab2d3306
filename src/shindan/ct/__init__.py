"""Multiphase CT of renal masses: DICOM series → phase stack → lesion crop → classifier.

Reading (:mod:`~shindan.ct.dicom`): series grouped by ``SeriesInstanceUID``, slices sorted along
the slice normal, values in HU. Phases (:mod:`~shindan.ct.phases`): non-contrast,
corticomedullary, nephrographic, excretory, from ``SeriesDescription`` keywords or a user map.
Lesion input (:mod:`~shindan.ct.lesion`): every phase resampled onto the reference phase's
planes around a lesion box and windowed, one channel per phase. Training and evaluation
(:mod:`~shindan.ct.train`, which imports torch) use the shared classifier loop, and
:mod:`shindan.stats.logistic` for the score's odds ratio adjusted for age, sex and size.

Examples
--------
>>> from shindan.ct import LesionBox, lesion_input
>>> x = lesion_input("study/", LesionBox((10, -5, -8), (30, 15, 10)))  # doctest: +SKIP
>>> x.image.shape  # doctest: +SKIP
(4, 64, 64)
"""

from shindan.ct.dicom import Grid, Series, SeriesHeader, load_series, only_ct, scan_dicom
from shindan.ct.lesion import LesionBox, LesionInput, crop_lesion, lesion_input, stack_phases
from shindan.ct.phases import PHASES, assign_phases, guess_phase, read_phase_map
from shindan.ct.resample import resample, resample_array
from shindan.ct.window import WINDOWS, Window, apply_window, get_window

__all__ = [
    "PHASES",
    "WINDOWS",
    "Grid",
    "LesionBox",
    "LesionInput",
    "Series",
    "SeriesHeader",
    "Window",
    "apply_window",
    "assign_phases",
    "crop_lesion",
    "get_window",
    "guess_phase",
    "lesion_input",
    "load_series",
    "only_ct",
    "read_phase_map",
    "resample",
    "resample_array",
    "scan_dicom",
    "stack_phases",
]
