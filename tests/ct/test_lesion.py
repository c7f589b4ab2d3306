"""Resampling onto a common grid, phase stacking and the lesion crop."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from shindan.ct.dicom import Grid, load_series, scan_dicom
from shindan.ct.lesion import LesionBox, crop_lesion, lesion_input, stack_phases
from shindan.ct.phantom import PhaseScan
from shindan.ct.phases import PHASES, assign_phases
from shindan.ct.resample import resample_array
from shindan.ct.window import apply_window
from shindan.errors import InputError


def _grid(
    rot_deg=0.0,
    spacing=(1.0, 1.0),
    positions=(0.0, 1.0, 2.0),
    shape_yx=(10, 10),
    origin=(0.0, 0.0, 0.0),
):
    t = math.radians(rot_deg)
    row = np.array([math.cos(t), math.sin(t), 0.0])
    col = np.array([-math.sin(t), math.cos(t), 0.0])
    pos = np.asarray(positions, dtype=float)
    return Grid(
        origin=np.asarray(origin, float) + [0, 0, pos[0]],
        row_dir=row,
        col_dir=col,
        spacing=spacing,
        positions=pos,
        shape=(len(pos), *shape_yx),
    )


def _linear(points):
    return 3.0 * points[..., 0] - 2.0 * points[..., 1] + 5.0 * points[..., 2] + 7.0


def test_resampling_is_exact_for_linear_fields():
    # Source: rotated 10°, anisotropic pixels, unevenly spaced slices. Trilinear interpolation
    # reproduces a field linear in patient space exactly if the geometry is right.
    src = _grid(10.0, (1.3, 0.9), (-4.0, -1.0, 0.5, 3.0, 7.0), (30, 30), (-12.0, -10.0, 0))
    k, r, c = np.meshgrid(*[np.arange(n) for n in src.shape], indexing="ij")
    vol = _linear(src.index_to_world(np.stack([k, r, c], -1))).astype(np.float32)
    dst = _grid(-7.0, (0.7, 0.7), (-2.0, 0.0, 2.5, 5.0), (12, 12), (-3.0, -2.0, 0))
    out = resample_array(vol, src, dst, cval=np.nan)
    k, r, c = np.meshgrid(*[np.arange(n) for n in dst.shape], indexing="ij")
    want = _linear(dst.index_to_world(np.stack([k, r, c], -1)))
    inside = np.isfinite(out)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(out[inside], want[inside], rtol=1e-5, atol=1e-3)
    # Outside the source: the fill value.
    far = replace(dst, positions=dst.positions + 100.0, origin=dst.origin + [0, 0, 100.0])
    assert np.all(resample_array(vol, src, far, cval=-1000.0) == -1000.0)
    assert vol.flags.writeable  # source untouched (and not frozen)


def _load_phases(study):
    chosen = assign_phases(scan_dicom(study))
    return {ph: load_series(h) for ph, h in chosen.items()}


def test_stack_phases_aligns_every_phase(tmp_path):
    from shindan.ct.phantom import phantom_hu, write_study

    # Noise-free phantom; the excretory phase also rotated 30° and shifted.
    scans = {
        "excretory": PhaseScan(
            rotation_deg=30.0, offset_mm=(3.0, -2.0, 1.0), pixel_mm=1.7, rows=60, cols=60
        )
    }
    t = write_study(
        tmp_path / "s", "malignant", seed=3, scans=scans, noise_hu=0.0, variation_hu=0.0
    )
    series = _load_phases(t.folder)
    assert len({s.hu.shape for s in series.values()}) == 4  # really different grids
    stack = stack_phases(series)
    assert stack.phases == PHASES and stack.hu.shape == (4, *series["nephrographic"].hu.shape)
    g = stack.grid
    k, r, c = np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij")
    points = g.index_to_world(np.stack([k, r, c], -1))
    shifts = [(0, 0, 0), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -3), (0, 0, 3)]
    for i, ph in enumerate(PHASES):
        # Each channel matches the phantom's truth on the common grid better than the truth
        # moved by 1 mm in-plane or 3 mm along the body: the phases are aligned.
        inside = stack.hu[i] > -999
        err = [
            float(
                np.abs(
                    stack.hu[i]
                    - phantom_hu(
                        points + np.array(sh),
                        i,
                        np.array(t.centre_mm),
                        t.radius_mm,
                        t.lesion_hu[ph],
                    )
                )[inside].mean()
            )
            for sh in shifts
        ]
        assert err[0] < min(err[1:5]) - 1.0, (ph, err)
        # Along the body only the lesion (a sphere) changes; in the non-contrast phase it has
        # the kidney's HU, so there a shift along z may tie.
        assert err[0] <= min(err[5:]) + (1e-3 if ph == "non-contrast" else -0.1), (ph, err)
    # The reference phase itself is untouched by resampling onto its own grid.
    np.testing.assert_array_equal(stack.hu[2], series["nephrographic"].hu)


def test_lesion_input_shape_values_and_box_units(phantom_study):
    t = phantom_study
    box = LesionBox(*t.box_mm)
    li = lesion_input(t.folder, box, size=32, margin_mm=6.0)
    assert li.image.shape == (4, 32, 32) and li.image.dtype == np.float32
    assert 0.0 <= li.image.min() and li.image.max() <= 1.0
    assert li.size_mm == pytest.approx(2 * t.radius_mm, abs=0.01)
    assert li.pixel_mm == pytest.approx((2 * t.radius_mm + 12.0) / 32, rel=0.1)
    assert set(li.sources) == set(PHASES)
    # Centre of the crop: the lesion's windowed HU per phase.
    centre = li.image[:, 14:18, 14:18].mean(axis=(1, 2))
    want = apply_window(np.array([t.lesion_hu[p] for p in PHASES]), "kidney")
    np.testing.assert_allclose(centre, want, atol=0.04)
    # The margins are outside the lesion: in the CM phase the corner (enhancing cortex)
    # differs from the lesion.
    assert abs(li.image[1, :3, :3].mean() - centre[1]) > 0.1
    # The same box in voxels of the nephrographic series gives the same input.
    neph = load_series(assign_phases(scan_dicom(t.folder))["nephrographic"])
    lo = np.rint(neph.grid.world_to_index(np.array(t.box_mm[0]))).astype(int)
    hi = np.rint(neph.grid.world_to_index(np.array(t.box_mm[1]))).astype(int)
    vbox = LesionBox(tuple(lo[::-1]), tuple(hi[::-1]), units="voxel", phase="nephrographic")
    li_v = lesion_input(t.folder, vbox, size=32, margin_mm=6.0)
    assert li_v.slice_position == pytest.approx(li.slice_position)
    np.testing.assert_allclose(li_v.image[:, 12:20, 12:20], li.image[:, 12:20, 12:20], atol=0.08)


def test_crop_lesion_from_a_stack_matches_lesion_input(phantom_study):
    t = phantom_study
    stack = stack_phases(_load_phases(t.folder))
    crop = crop_lesion(stack, LesionBox(*t.box_mm), size=32, margin_mm=6.0)
    li = lesion_input(t.folder, LesionBox(*t.box_mm), size=32, margin_mm=6.0)
    assert crop.shape == (4, 32, 32)
    # Stacking first interpolates twice; centres agree within noise.
    np.testing.assert_allclose(
        crop[:, 12:20, 12:20].mean(axis=(1, 2)),
        li.image[:, 12:20, 12:20].mean(axis=(1, 2)),
        atol=0.03,
    )


def test_max_area_slice_follows_the_mask(phantom_study):
    t = phantom_study
    headers = scan_dicom(t.folder)
    neph = load_series(assign_phases(headers)["nephrographic"])
    mask = np.zeros(neph.hu.shape, bool)
    k_mask = 4
    mask[k_mask, 20:30, 25:35] = True
    box = LesionBox(*t.box_mm)
    li = lesion_input(headers, box, size=32, slice_mode="max-area", mask=mask)
    assert li.slice_position == pytest.approx(neph.grid.positions[k_mask])
    with pytest.raises(InputError, match="needs a lesion mask"):
        lesion_input(headers, box, size=32, slice_mode="max-area")
    with pytest.raises(InputError, match="mask is empty"):
        lesion_input(headers, box, size=32, slice_mode="max-area", mask=np.zeros_like(mask))


def test_missing_phase_error_or_blank(tmp_path):
    from shindan.ct.phantom import write_study

    t = write_study(
        tmp_path / "s",
        "benign",
        seed=5,
        phases=("non-contrast", "corticomedullary", "nephrographic"),
    )
    with pytest.raises(InputError, match=r"no series for phase\(s\) excretory"):
        lesion_input(t.folder, LesionBox(*t.box_mm), size=16)
    li = lesion_input(t.folder, LesionBox(*t.box_mm), size=16, missing="blank")
    assert li.missing == ("excretory",)
    assert np.isnan(li.image[3]).all() and np.isfinite(li.image[:3]).all()


def test_bad_boxes(phantom_study):
    with pytest.raises(InputError, match="units"):
        LesionBox((0, 0, 0), (1, 1, 1), units="cm")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="non-finite"):
        LesionBox((0, 0, float("nan")), (1, 1, 1))
    with pytest.raises(
        InputError,
        match=r"box centre \(300.0, 300.0, 0.0 mm\) lies outside "
        "the nephrographic series",
    ):
        lesion_input(phantom_study.folder, LesionBox((290, 290, -5), (310, 310, 5)))
    with pytest.raises(InputError, match="outside its series"):
        lesion_input(phantom_study.folder, LesionBox((0, 0, 0), (10, 10, 99), units="voxel"))
