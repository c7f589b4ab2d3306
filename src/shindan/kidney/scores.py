"""Score arithmetic: interstitial fibrosis and inflammation from label maps, in µm².

Interstitial fibrosis = interstitium area ÷ (tubule + interstitium) area.
Inflammation = interstitial nuclei area ÷ (tubule + interstitium) area, where a nucleus pixel
is interstitial when the compartment label under it is interstitium.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Label codes of the contract's compartments.png.
COMPARTMENTS = {0: "non_tissue", 1: "interstitium", 2: "glomerulus", 3: "tubule", 4: "vessel"}
INTERSTITIUM, GLOMERULUS, TUBULE, VESSEL = 1, 2, 3, 4


@dataclass
class ScoreAccumulator:
    """Adds label-map blocks (any order, any grid) and nuclei areas; gives the scores.

    Examples
    --------
    >>> import numpy as np
    >>> acc = ScoreAccumulator()
    >>> acc.add_labels(np.array([[1, 1, 3, 3]]), mpp=0.5)
    >>> acc.add_interstitial_nuclei(pixels=1, mpp=0.5)
    >>> acc.scores()["interstitial_fibrosis"], acc.scores()["inflammation"]
    (0.5, 0.25)
    """

    areas_um2: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(COMPARTMENTS.values(), 0.0)
    )
    interstitial_nuclei_um2: float = 0.0

    def add_labels(self, labels: np.ndarray, mpp: float) -> None:
        """Add a block of compartment labels (codes 0–4; others ignored) at ``mpp`` µm/px."""
        counts = np.bincount(np.asarray(labels, np.uint8).ravel(), minlength=256)
        self.add_counts(counts[: len(COMPARTMENTS)], mpp)

    def add_counts(self, counts: np.ndarray, mpp: float) -> None:
        """Add pixel counts per label code at ``mpp`` µm/px."""
        for code, name in COMPARTMENTS.items():
            if code < len(counts):
                self.areas_um2[name] += float(counts[code]) * mpp * mpp

    def add_interstitial_nuclei(self, pixels: int, mpp: float) -> None:
        """Add nucleus pixels that lie in interstitium, at ``mpp`` µm/px."""
        self.interstitial_nuclei_um2 += float(pixels) * mpp * mpp

    def scores(self) -> dict[str, float | None]:
        """Fibrosis and inflammation (None when there is no tubule or interstitium)."""
        denom = self.areas_um2["interstitium"] + self.areas_um2["tubule"]
        if denom <= 0:
            return {"interstitial_fibrosis": None, "inflammation": None}
        return {
            "interstitial_fibrosis": self.areas_um2["interstitium"] / denom,
            "inflammation": self.interstitial_nuclei_um2 / denom,
        }


def kidney_scores(
    labels: np.ndarray, mpp: float, nuclei: np.ndarray | None = None
) -> dict[str, object]:
    """Scores of a whole label map (and optional nucleus mask or instance map, same grid).

    Parameters
    ----------
    labels : ndarray (H, W) of compartment codes
    mpp : float
        µm/px of both maps.
    nuclei : ndarray (H, W), optional
        Non-zero where a nucleus is.

    Returns
    -------
    dict with ``interstitial_fibrosis``, ``inflammation``, ``areas_um2``,
    ``interstitial_nuclei_um2``.
    """
    acc = ScoreAccumulator()
    acc.add_labels(labels, mpp)
    if nuclei is not None:
        if nuclei.shape != labels.shape:
            raise ValueError(f"nuclei {nuclei.shape} and labels {labels.shape} differ in shape")
        acc.add_interstitial_nuclei(int(np.count_nonzero((nuclei != 0) & (labels == 1))), mpp)
    return {
        **acc.scores(),
        "areas_um2": dict(acc.areas_um2),
        "interstitial_nuclei_um2": acc.interstitial_nuclei_um2,
    }
