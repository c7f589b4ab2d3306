"""The per-glomerulus table: each glomerulus found, measured and classified (sclerosed or not)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage import measure

from shindan.engine.backends import Predictor
from shindan.io.slide import Slide
from shindan.kidney.scores import GLOMERULUS
from shindan.tiling import read_at_mpp, require_mpp

# Smaller glomerulus regions are fragments or false positives: not counted, not kept in maps.
MIN_GLOMERULUS_UM2 = 2000.0
# Human glomeruli measure about 100-300 µm across; a region much wider is several glomeruli
# run together or tissue that is not a glomerulus, so the table asks for a review.
MAX_GLOMERULUS_DIAMETER_UM = 400.0


@dataclass
class Glomerulus:
    """One glomerulus; coordinates in level-0 pixels of the input, sizes in µm."""

    id: int
    area_um2: float
    centroid_x: float
    centroid_y: float
    diameter_um: float
    bbox: tuple[int, int, int, int]  # x, y, w, h in level-0 pixels
    sclerosed: bool | None = None
    p_sclerosed: float | None = None
    review: str | None = None  # why a person should look at this one

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def find_glomeruli(
    labels: np.ndarray,
    mpp: float,
    slide_mpp: float,
    *,
    min_area_um2: float = MIN_GLOMERULUS_UM2,
) -> list[Glomerulus]:
    """Connected glomerulus regions of a label map at ``mpp`` µm/px.

    Regions smaller than ``min_area_um2`` (fragments, false positives) are dropped; regions
    wider than :data:`MAX_GLOMERULUS_DIAMETER_UM` are kept and marked for review.
    """
    lab = measure.label(labels == GLOMERULUS, connectivity=2)
    f = mpp / slide_mpp  # level-0 px per map px
    out = []
    for region in measure.regionprops(lab):
        area = region.area * mpp * mpp
        if area < min_area_um2:
            continue
        r0, c0, r1, c1 = region.bbox
        cy, cx = region.centroid
        diameter = region.equivalent_diameter_area * mpp
        review = (
            f"wider than a glomerulus ({diameter:.0f} µm > {MAX_GLOMERULUS_DIAMETER_UM:.0f}): "
            "glomeruli run together, or not a glomerulus"
            if diameter > MAX_GLOMERULUS_DIAMETER_UM
            else None
        )
        out.append(
            Glomerulus(
                id=len(out) + 1,
                area_um2=round(area, 1),
                centroid_x=round((cx + 0.5) * f, 1),
                centroid_y=round((cy + 0.5) * f, 1),
                diameter_um=round(diameter, 1),
                bbox=(
                    int(c0 * f),
                    int(r0 * f),
                    int(np.ceil((c1 - c0) * f)),
                    int(np.ceil((r1 - r0) * f)),
                ),
                review=review,
            )
        )
    return out


def classify_glomeruli(
    slide: Slide,
    glomeruli: list[Glomerulus],
    predictor: Predictor,
    *,
    margin: float = 0.15,
    batch_size: int = 16,
) -> list[Glomerulus]:
    """Classify each glomerulus crop (square around its box) with a GS/nonGS model.

    Returns new records with ``sclerosed`` (by the model card's cut-off on p(GS), 0.5 without
    one) and ``p_sclerosed`` (calibrated by the card's temperature) set; inputs are not
    modified.
    """
    size = predictor.card.size
    gs = predictor.classes.index("GS")
    s_mpp = require_mpp(slide)
    crops = []
    for g in glomeruli:
        x, y, w, h = g.bbox
        side = max(w, h) * (1 + 2 * margin)  # level-0 px
        mpp = side * s_mpp / size  # the crop fills the network input, as in training
        cx, cy = (x + w / 2) * s_mpp / mpp, (y + h / 2) * s_mpp / mpp
        crops.append(
            read_at_mpp(slide, (int(cx - size / 2), int(cy - size / 2)), (size, size), mpp)
        )
    out = []
    for i in range(0, len(crops), batch_size):
        probs = predictor.predict(np.stack(crops[i : i + batch_size]))
        labels = predictor.labels(probs)  # the card's GS cut-off, else the arg-max
        for g, p, k in zip(glomeruli[i : i + batch_size], probs, labels, strict=True):
            out.append(
                Glomerulus(
                    **{
                        **g.as_dict(),
                        "sclerosed": bool(k == gs),
                        "p_sclerosed": round(float(p[gs]), 4),
                    }
                )
            )
    return out
