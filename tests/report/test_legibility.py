"""Report legibility: colours told apart (also with colour-blindness), nucleus dots visible
at report size, the µm/px and its source next to every area."""

import itertools
import json

import numpy as np
import pytest

from shindan.report.overlay import NUCLEUS_DOT, PALETTE, overlay_image

# Machado et al. 2009 simulation matrices (severity 1.0) on linear RGB.
CVD = {
    "normal": np.eye(3),
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                   [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                   [0.004733, 0.691367, 0.303900]],
}  # fmt: skip


def _simulate(rgb, matrix):
    c = np.asarray(rgb) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = np.clip(np.asarray(matrix) @ lin, 0, 1)
    return np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


@pytest.mark.parametrize("vision", list(CVD))
def test_legend_colours_are_told_apart(vision):
    from skimage.color import deltaE_ciede2000, rgb2lab

    colours = {name: rgb for name, rgb in PALETTE.values()} | {NUCLEUS_DOT[0]: NUCLEUS_DOT[1]}
    lab = {n: rgb2lab(_simulate(c, CVD[vision])[None, None])[0, 0] for n, c in colours.items()}
    for a, b in itertools.combinations(colours, 2):
        # vessel #dc3232 and nucleus #c80000 were 7-9 apart
        assert deltaE_ciede2000(lab[a], lab[b]) >= 10, (vision, a, b)


def test_nucleus_dots_visible_at_report_size(tmp_path):
    thumb = np.full((1200, 2048, 3), (215, 150, 190), np.uint8)  # an H&E-pink thumbnail
    labels = np.ones((1200, 2048), np.uint8)  # all interstitium
    ring = [[100, 100], [110, 100], [110, 110], [100, 110], [100, 100]]
    feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"classification": {"name": "interstitial"}}}  # fmt: skip
    path = tmp_path / "n.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    plain = overlay_image(thumb, labels)
    dotted = overlay_image(thumb, labels, path)
    changed = np.abs(dotted.astype(int) - plain.astype(int)).sum(axis=2) > 60
    # the report shows the overlay about 1,000 px wide: a dot must cover a 3 px disc there
    assert changed.sum() * (1000 / 2048) ** 2 >= 7
    assert dotted[105, 105].max() < 60  # black centre, on pink


def test_every_area_states_its_scale(tmp_path):
    from shindan.report.kidney import write_kidney_report

    scores = {
        "interstitial_fibrosis": 0.2, "inflammation": 0.01,
        "areas_um2": {"non_tissue": 1e5, "interstitium": 2e5, "glomerulus": 3e4,
                      "tubule": 6e5, "vessel": 1e4},
        "interstitial_nuclei_um2": 2e3, "nuclei": {"count": 10, "interstitial_count": 4},
        "glomeruli": {"count": 1, "sclerosed": 0, "sclerosed_fraction": 0.0, "review": 0,
                      "sclerosed_outside_domain": [],
                      "items": [{"id": 1, "area_um2": 3e4, "diameter_um": 195.0,
                                 "centroid_x": 5.0, "centroid_y": 5.0, "sclerosed": False,
                                 "p_sclerosed": 0.1, "review": None,
                                 "sclerosed_outside_domain": False}]},
        "mpp": 0.5, "input_mpp": 0.25, "input_mpp_source": "given",
        "analysis_mpp": {"compartments": 1.0, "nuclei": 0.25},
        "model": {}, "input": {"path": "x.png", "format": "png", "width": 8, "height": 8},
        "shindan_version": "0", "seconds": 1.0,
        "stain": {"stain": "H&E", "probabilities": {"H&E": 0.9, "PAS": 0.1, "other": 0.0}},
        "domain": {}, "outside_domain": {},
        "adequacy": {"glomeruli": 1, "arteries": 0, "verdict": "unsatisfactory",
                     "rule": "Banff 97", "artery_min_diameter_um": 60.0,
                     "sclerosed_fraction": 0.0},
        "warnings": [],
    }  # fmt: skip
    img = np.zeros((8, 8, 3), np.uint8)
    write_kidney_report(tmp_path / "r.html", "x", scores, img, img)
    html = (tmp_path / "r.html").read_text()
    heads = html.split("area (")[1:]
    assert len(heads) >= 3  # areas table (mm², µm²) and glomerulus table
    for h in heads:
        assert "at 0.5 µm/px (label map; input 0.25 µm/px, given with --mpp)" in h[:120], h[:120]
    assert "interstitial nuclei (segmented at 0.25 µm/px)" in html
