"""Overlay of compartments and nuclei on a slide thumbnail."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# Colours per compartment code (non-tissue transparent); shown in the report's legend. The
# Okabe-Ito colour-blind-safe palette (Okabe & Ito 2008): yellow, bluish green, blue,
# vermillion; interstitial nuclei are black dots ringed in white. Every pair stays at least
# 12 CIEDE2000 apart for normal vision and simulated protanopia, deuteranopia and tritanopia
# (tests/report/test_legibility.py); the old vessel red and nucleus red were 7-9 apart.
PALETTE = {
    1: ("interstitium", (240, 228, 66)),
    2: ("glomerulus", (0, 158, 115)),
    3: ("tubule", (0, 114, 178)),
    4: ("vessel", (213, 94, 0)),
}
NUCLEUS_DOT = ("interstitial nucleus", (0, 0, 0))
NUCLEUS_RING = (255, 255, 255)


def dot_radius(width: int) -> int:
    """Radius (px) of a nucleus dot on an overlay ``width`` px wide: about 2 px on a report
    shown 1,000 px wide, plus a 1 px ring, so it stays visible."""
    return max(2, round(width / 500))


def colorize(labels: np.ndarray) -> np.ndarray:
    """RGB picture of a compartment label map (non-tissue white)."""
    lut = np.full((256, 3), 255, np.uint8)
    for code, (_, rgb) in PALETTE.items():
        lut[code] = rgb
    return lut[labels]  # one lookup instead of a masked write per class


def overlay_image(
    thumbnail: np.ndarray,
    labels: np.ndarray,
    nuclei_geojson: Path | None = None,
    *,
    scale: float = 1.0,
    alpha: float = 0.35,
) -> np.ndarray:
    """Thumbnail with compartments blended in, outlines drawn and interstitial nuclei dotted.

    Parameters
    ----------
    thumbnail : ndarray (h, w, 3) uint8
    labels : ndarray
        Compartment codes on any grid covering the same field (resized, nearest).
    nuclei_geojson : Path, optional
        Nuclei in level-0 pixel coordinates; ``scale`` maps them to thumbnail pixels.
    """
    h, w = thumbnail.shape[:2]
    lab = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    # float32 blend in one OpenCV pass (float64 numpy took 5x longer on a 2048² thumbnail)
    blend = cv2.addWeighted(thumbnail, 1 - alpha, colorize(lab), alpha, 0, dtype=cv2.CV_32F)
    out = np.where((lab > 0)[..., None], blend.astype(np.uint8), thumbnail)
    for code, (_, rgb) in PALETTE.items():
        contours, _ = cv2.findContours(
            (lab == code).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, rgb, 1)
    if nuclei_geojson is not None and Path(nuclei_geojson).exists():
        for feat in json.loads(Path(nuclei_geojson).read_text())["features"]:
            if feat["properties"]["classification"]["name"] != "interstitial":
                continue
            pts = np.asarray(feat["geometry"]["coordinates"][0], np.float32) * scale
            cx, cy = pts.mean(axis=0)
            r = dot_radius(w)
            cv2.circle(out, (int(cx), int(cy)), r + 1, NUCLEUS_RING, -1, lineType=cv2.LINE_AA)
            cv2.circle(out, (int(cx), int(cy)), r, NUCLEUS_DOT[1], -1, lineType=cv2.LINE_AA)
    return out


def image_data_uri(image: np.ndarray, fmt: str = "JPEG") -> str:
    """An RGB array as a ``data:`` URI, so a report stays one offline file.

    JPEG (default) keeps photographic overlays small; PNG for line art and plots.
    """
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
