"""Reading labelled image collections and splitting them by group."""

import numpy as np
import pytest

from shindan.classify.data import list_images, load_table, read_rgb, read_table_csv, scan_folder
from shindan.classify.splits import kfold, train_val_test
from shindan.errors import InputError


def test_scan_folder_classes_and_groups(image_tree):
    t = scan_folder(image_tree, group_pattern=r"^[^-]+")
    assert t.classes == ("disc", "ring", "square")
    assert t.counts() == {"disc": 16, "ring": 16, "square": 16}
    assert set(t.groups) == {"p0", "p1", "p2", "p3"}
    picked = scan_folder(image_tree, classes=["square", "disc"])
    assert picked.classes == ("square", "disc")
    assert picked.counts() == {"square": 16, "disc": 16}
    assert picked.paths[0].parent.name == "square" and picked.labels[0] == 0


def test_csv_table_with_groups(image_tree, tmp_path):
    rows = ["image,label,group"]
    for p in sorted(image_tree.rglob("*.png"))[:20]:
        rows.append(f"{p.relative_to(image_tree.parent)},{p.parent.name},{p.stem[:2]}")
    csv = image_tree.parent / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    t = load_table(csv)
    assert len(t) == 20 and t.classes == ("disc", "ring")
    assert set(t.groups) <= {"p0", "p1", "p2", "p3"}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,cls\na.png,x\n")
    with pytest.raises(InputError, match="image,label"):
        read_table_csv(bad)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError):
        load_table(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("not an image")
    with pytest.raises(InputError):
        read_rgb(tmp_path / "x.txt")
    with pytest.raises(InputError):
        list_images([tmp_path / "nope.png"])
    with pytest.raises(InputError, match="two class"):
        scan_folder(tmp_path)


def test_grouped_stratified_split(image_tree):
    t = scan_folder(image_tree, group_pattern=r"^[^-]+")
    tr, va, te = train_val_test(t, folds=4, test_fold=1, val_fraction=0.25, seed=3)
    assert len(set(tr) | set(va) | set(te)) == len(t)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    g = t.groups.astype(str)
    assert not (set(g[tr]) & set(g[te])) and not (set(g[tr]) & set(g[va]))
    for part in (tr, va, te):  # stratified: every class on every side
        assert set(t.labels[part]) == {0, 1, 2}
    folds = kfold(t, 4, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(t)))
    with pytest.raises(InputError, match="groups"):
        kfold(t, 5)
