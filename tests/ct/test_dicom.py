"""DICOM loading: grouping by series, slice order, HU rescale, geometry, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from shindan.ct.dicom import header_grid, load_series, only_ct, scan_dicom
from shindan.errors import InputError

from .conftest import write_slice


def _hu_plane(z: float, shape=(6, 5)) -> np.ndarray:
    """HU values that say where they are: 10 * z + column - row (exact in int16)."""
    r, c = np.mgrid[: shape[0], : shape[1]]
    return (10 * z + c - r).astype(np.float64)


def _write_volume(folder, zs, *, uid=None, shuffle_seed=0, numbers=None, **kw):
    uid = uid or generate_uid()
    rng = np.random.default_rng(shuffle_seed)
    names = rng.permutation(len(zs))
    for i, z in enumerate(zs):
        write_slice(
            folder / f"f{names[i]:03d}.dcm",
            _hu_plane(z),
            series_uid=uid,
            position=(-20.0, 30.0, z),
            number=None if numbers is None else numbers[i],
            **kw,
        )
    return uid


def test_slices_sorted_by_position_and_rescaled_to_hu(tmp_path):
    zs = [12.5, -5.0, 0.0, 7.5, -2.5, 2.5]
    # Instance numbers contradict the positions: position must win.
    uid = _write_volume(tmp_path, zs, numbers=[1, 2, 3, 4, 5, 6], slope=0.5, intercept=-1000.0)
    (header,) = scan_dicom(tmp_path)
    assert header.uid == uid and header.n_slices == 6
    series = load_series(header)
    expected_z = sorted(zs)
    np.testing.assert_allclose(series.grid.positions, expected_z)
    for k, z in enumerate(expected_z):
        np.testing.assert_array_equal(series.hu[k], _hu_plane(z))
    assert series.hu.dtype == np.float32
    # Non-uniform spacing: the median distance is reported.
    assert series.spacing == pytest.approx((2.5, 0.8, 0.8))
    # Voxel (k, r, c) → patient mm and back.
    w = series.grid.index_to_world(np.array([2, 3, 4]))
    np.testing.assert_allclose(w, [-20 + 4 * 0.8, 30 + 3 * 0.8, expected_z[2]])
    np.testing.assert_allclose(series.grid.world_to_index(w), [2, 3, 4], atol=1e-9)


def test_reversed_normal_sorts_along_the_normal(tmp_path):
    # Column cosine flipped: the normal points to -z, so ascending order is descending z.
    zs = [0.0, 2.0, 4.0, 6.0]
    _write_volume(tmp_path, zs, orientation=(1, 0, 0, 0, -1, 0))
    s = load_series(scan_dicom(tmp_path)[0])
    assert [float(p) for p in s.hu[:, 0, 0] / 10] == [6.0, 4.0, 2.0, 0.0]
    np.testing.assert_allclose(np.diff(s.grid.positions), 2.0)


def test_instance_number_fallback_without_positions(tmp_path):
    uid = generate_uid()
    for i, n in enumerate([3, 1, 2]):
        write_slice(
            tmp_path / f"x{i}.dcm",
            np.full((4, 4), 100.0 * n),
            series_uid=uid,
            position=None,
            orientation=None,
            number=n,
        )
    s = load_series(scan_dicom(tmp_path)[0])
    assert not s.has_position
    assert s.hu[:, 0, 0].tolist() == [100.0, 200.0, 300.0]


def test_series_grouped_by_uid_skipping_other_files(tmp_path):
    a = _write_volume(tmp_path / "a", [0, 1, 2], description="first")
    b = _write_volume(tmp_path / "deep" / "er", [0, 3], description="second", shuffle_seed=1)
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "a" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")
    shutil.copy(get_testdata_file("rtplan.dcm"), tmp_path / "plan.dcm")  # no image
    headers = scan_dicom(tmp_path)
    assert {h.uid: h.n_slices for h in headers} == {a: 3, b: 2}
    assert {h.description for h in headers} == {"first", "second"}


def test_roi_reads_only_the_slices_needed(tmp_path):
    zs = [float(z) for z in range(0, 40, 2)]
    _write_volume(tmp_path, zs)
    header = scan_dicom(tmp_path)[0]
    full = load_series(header)
    part = load_series(header, roi=np.array([[0.0, 0.0, 15.0], [0.0, 0.0, 19.0]]))
    assert part.hu.shape[0] < full.hu.shape[0]
    assert part.grid.positions[0] <= 15 and part.grid.positions[-1] >= 19
    k0 = part.first_slice
    np.testing.assert_array_equal(part.hu, full.hu[k0 : k0 + part.hu.shape[0]])
    p = np.array([-18.4, 32.4, 17.0])
    np.testing.assert_allclose(
        part.grid.world_to_index(p) + [k0, 0, 0], full.grid.world_to_index(p)
    )


def test_pydicom_ct_small():
    path = get_testdata_file("CT_small.dcm")
    (header,) = scan_dicom(path)
    s = load_series(header)
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(s.hu[0], ds.pixel_array.astype(np.float32) - 1024)
    assert s.modality == "CT" and s.hu.shape == (1, 128, 128)
    assert s.spacing == pytest.approx((5.0, 0.661468, 0.661468))


def test_mr_is_refused_where_ct_is_required():
    header = scan_dicom(get_testdata_file("MR_small.dcm"))[0]
    with pytest.raises(InputError, match="modality is MR, CT required"):
        load_series(header)
    assert load_series(header, require_ct=False).hu.shape == (1, 64, 64)
    with pytest.raises(InputError, match=r"no CT series \(found MR: 1 series\)"):
        only_ct([header], "MR_small.dcm")


def test_real_mr_study_with_dicomdir(shared_data):
    study = shared_data / "dicom" / "gsps-liver-mr"
    headers = scan_dicom(study)
    # The DICOMDIR, presentation states and private objects are skipped: one MR series.
    assert [(h.modality, h.n_slices) for h in headers] == [("MR", 6)]
    assert np.all(np.diff(header_grid(headers[0])[0].positions) > 0)
    # Given the DICOMDIR itself, its folder is read (the images it lists but lacks are absent).
    assert [h.uid for h in scan_dicom(study / "DICOMDIR")] == [headers[0].uid]
    with pytest.raises(InputError, match="no CT series"):
        only_ct(headers, study)


@pytest.mark.parametrize(
    "make, message",
    [
        ("empty", "no DICOM images found"),
        ("only-dicomdir", r"no DICOM images found \(1 dicomdir"),
        ("missing", "no such file or folder"),
    ],
)
def test_no_dicom(tmp_path, make, message):
    folder = tmp_path / "study"
    if make != "missing":
        folder.mkdir()
        (folder / "readme.txt").write_text("hello")
    if make == "only-dicomdir":
        shutil.copy(get_testdata_file("DICOMDIR"), folder / "DICOMDIR")
    with pytest.raises(InputError, match=message):
        scan_dicom(folder)


def test_mixed_sizes_in_a_series(tmp_path):
    uid = generate_uid()
    write_slice(tmp_path / "a.dcm", np.zeros((4, 4)), series_uid=uid, position=(0, 0, 0))
    write_slice(tmp_path / "b.dcm", np.zeros((4, 6)), series_uid=uid, position=(0, 0, 1))
    with pytest.raises(InputError, match="mixed image sizes 4x4 and 6x4"):
        scan_dicom(tmp_path)


def test_missing_pixel_data(tmp_path):
    uid = generate_uid()
    write_slice(tmp_path / "a.dcm", np.zeros((4, 4)), series_uid=uid, position=(0, 0, 0))
    write_slice(
        tmp_path / "b.dcm", np.zeros((4, 4)), series_uid=uid, position=(0, 0, 1), pixels=False
    )
    with pytest.raises(InputError, match=r"b\.dcm: no pixel data"):
        load_series(scan_dicom(tmp_path)[0])


def test_duplicate_positions_and_missing_spacing(tmp_path):
    uid = generate_uid()
    for name in ("a", "b"):
        write_slice(
            tmp_path / "dup" / f"{name}.dcm", np.zeros((4, 4)), series_uid=uid, position=(0, 0, 5)
        )
    with pytest.raises(InputError, match="two slices at the same position"):
        load_series(scan_dicom(tmp_path / "dup")[0])
    write_slice(
        tmp_path / "nosp" / "a.dcm",
        np.zeros((4, 4)),
        series_uid=generate_uid(),
        position=(0, 0, 0),
        spacing=None,
    )
    with pytest.raises(InputError, match="no valid PixelSpacing"):
        load_series(scan_dicom(tmp_path / "nosp")[0])


def test_gantry_tilt_is_refused(tmp_path):
    uid = generate_uid()
    for k in range(3):  # each slice shifted 1 mm in y per 2 mm in z: a sheared stack
        write_slice(
            tmp_path / f"{k}.dcm", np.zeros((4, 4)), series_uid=uid, position=(0, 1.0 * k, 2.0 * k)
        )
    with pytest.raises(InputError, match="sheared"):
        load_series(scan_dicom(tmp_path)[0])


def test_pydicom_dicomdir_tree():
    # pydicom's DICOMDIR test tree: CR, MR and CT series in nested folders behind a DICOMDIR.
    root = Path(get_testdata_file("DICOMDIR")).parent
    headers = scan_dicom(root)
    ct = {h.description: h for h in only_ct(headers)}
    assert {"Routine Brain", "SmartScore - Gated 0.5 sec", "Scout"} <= set(ct)
    brain = load_series(ct["Routine Brain"])
    files = [pydicom.dcmread(i.path) for i in ct["Routine Brain"].instances]
    files.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    want = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in files]
    )
    np.testing.assert_array_equal(brain.hu, want)
    assert np.all(np.diff(brain.grid.positions) > 0)
    # A scout whose images lie in different planes, and a radiograph without pixel spacing:
    # refused with the reason.
    with pytest.raises(InputError, match="different orientations"):
        load_series(ct["Scout"])
    cr = next(h for h in headers if h.modality == "CR")
    with pytest.raises(InputError, match="no valid PixelSpacing"):
        load_series(cr, require_ct=False)
