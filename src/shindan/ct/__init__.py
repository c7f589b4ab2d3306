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

import importlib
import sys
import types
from typing import Any

# Exported names load their module on first use: importing a submodule (the CLI's
# ``shindan.ct.cli``) runs this file, and pydicom + scikit-image would add ~1 s to every start.
_SOURCES = {
    "dicom": ("Grid", "Series", "SeriesHeader", "load_series", "only_ct", "scan_dicom"),
    "lesion": ("LesionBox", "LesionInput", "crop_lesion", "lesion_input", "stack_phases"),
    "phases": ("PHASES", "assign_phases", "guess_phase", "read_phase_map"),
    "resample": ("resample", "resample_array"),
    "window": ("WINDOWS", "Window", "apply_window", "get_window"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"shindan.ct.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing the submodule ``resample`` binds it here; the name stays the function,
        # as when this file imported every name eagerly.
        if name in _MODULE_OF and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
