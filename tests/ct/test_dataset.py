"""cases.csv parsing and the lesion dataset fed to the shared trainer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from shindan.ct.dataset import LesionDataset, input_spec, read_cases
from shindan.errors import InputError

HEADER = "case,study,x_min,y_min,z_min,x_max,y_max,z_max,label,age,sex,size_mm,group\n"


def _csv(tmp_path, study, rows):
    p = tmp_path / "cases.csv"
    p.write_text(HEADER + "".join(rows))
    if study is not None and not (tmp_path / "s").exists():
        shutil.copytree(study.folder, tmp_path / "s")
    return p


def test_dataset_items(phantom_study, tmp_path):
    (x0, y0, z0), (x1, y1, z1) = phantom_study.box_mm
    box = f"{x0},{y0},{z0},{x1},{y1},{z1}"
    p = _csv(
        tmp_path,
        phantom_study,
        [
            f"a,s,{box},malignant,61,M,,p1\n",
            f"b,s,{box},benign,55,female,21.5,p1\n",
        ],
    )
    cases = read_cases(p)
    assert [c.label for c in cases] == [1, 0] and [c.sex for c in cases] == ["M", "F"]
    assert cases[0].study == tmp_path / "s" and cases[0].group == "p1"
    ds = LesionDataset(cases, input_spec(size=24), progress=False)
    assert ds.images.shape == (2, 4, 24, 24) and ds.labels.tolist() == [1, 0]
    # Size from the box when the CSV has none.
    assert ds.sizes_mm.tolist() == pytest.approx([2 * phantom_study.radius_mm, 21.5])
    mean, std = ds.channel_stats()
    ds.set_normalisation(mean, std)
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (4, 24, 24)
    assert y == 1
    both = torch.stack([ds[0][0], ds[1][0]])
    np.testing.assert_allclose(both.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    # Augmented items: same values, moved about (flips / quarter turns) and scaled a little.
    aug = ds.subset([0], augment=True)
    torch.manual_seed(0)
    xs = [aug[0][0] for _ in range(8)]
    assert any(not torch.allclose(a, x, atol=0.2) for a in xs)
    assert ds.images.shape[0] == 2 and aug.images.shape[0] == 1


@pytest.mark.parametrize(
    "row, message",
    [
        ("a,s,1,2,3,4,5,6,maybe,60,M,,\n", "label must be benign or malignant"),
        ("a,s,1,2,,4,5,6,benign,60,M,,\n", "needs all of"),
        ("a,s,1,2,x,4,5,6,benign,60,M,,\n", "z_min must be a number"),
        ("a,nowhere,1,2,3,4,5,6,benign,60,M,,\n", "study folder .* not found"),
        ("a,s,1,2,3,4,5,6,benign,60,X,,\n", "sex must be M or F"),
        ("a,s,1,2,3,4,5,6,,60,M,,\n", "no label"),
    ],
)
def test_bad_case_rows(tmp_path, row, message):
    (tmp_path / "s").mkdir()
    p = _csv(tmp_path, None, [row])
    with pytest.raises(InputError, match=message):
        read_cases(p)


def test_bad_case_files(tmp_path):
    with pytest.raises(InputError, match="cases file not found"):
        read_cases(tmp_path / "none.csv")
    p = tmp_path / "c.csv"
    p.write_text("study,label\nx,benign\n")
    with pytest.raises(InputError, match="missing column"):
        read_cases(p)


def test_unreadable_case_names_the_case(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "junk.txt").write_text("no dicom here")
    p = _csv(tmp_path, None, ["lesion7,s,1,2,3,4,5,6,benign,60,M,,\n"])
    with pytest.raises(InputError, match="case lesion7: .*no DICOM images found"):
        LesionDataset(read_cases(p), input_spec(size=16), progress=False)


def test_input_spec_checks():
    spec = input_spec(size=32, phases=["arterial", "portal venous"], reference="nephrographic")
    assert spec["phases"] == ["corticomedullary", "nephrographic"] and spec["channels"] == 2
    with pytest.raises(InputError, match="reference phase nephrographic is not among"):
        input_spec(phases=["non-contrast", "excretory"])
    with pytest.raises(InputError, match="distinct"):
        input_spec(phases=["arterial", "corticomedullary"])
    with pytest.raises(InputError, match="unknown slice mode"):
        input_spec(slice_mode="middle")
