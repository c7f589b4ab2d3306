"""Stain colour between training slides: CIELAB statistics, Reinhard transfer of a tile or a
cut-out onto another slide's colours, and the references the sampler draws from."""

from __future__ import annotations

import numpy as np

from shindan.io.annotations import IGNORE
from shindan.kidney.labels import NON_TISSUE
from shindan.kidney.training.builtin_sets import cutout_source
from shindan.kidney.training.labelled import Cutout, LabelledImage


def _lab(pixels: np.ndarray) -> np.ndarray:
    import cv2

    return (
        cv2.cvtColor(pixels.reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    )


def match_colours(
    pixels: np.ndarray, reference: np.ndarray, source: np.ndarray | None = None
) -> np.ndarray:
    """Reinhard colour transfer: map CIELAB statistics of ``source`` (default: ``pixels``)
    onto those of ``reference``, and apply that map to ``pixels``; all (N, 3) uint8 RGB."""
    import cv2

    src = _lab(pixels)
    s_lab = _lab(source) if source is not None else src
    ref = _lab(reference)
    out = (src - s_lab.mean(0)) / (s_lab.std(0) + 1e-3) * ref.std(0) + ref.mean(0)
    out = np.clip(out, 0, 255).astype(np.uint8).reshape(-1, 1, 3)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB).reshape(-1, 3)


def colour_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB mean and standard deviation of (N, 3) uint8 RGB pixels."""
    lab = _lab(pixels)
    return lab.mean(0), lab.std(0)


def transfer_stain(
    image: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Give an RGB tile the CIELAB colour statistics ``reference`` (see :func:`colour_stats`).

    Statistics are taken over the tile's tissue (glass and blacked-out holes excluded) and
    only tissue pixels change, so glass stays glass. With ``rng`` the reference spread is
    jittered by ±15%. Tiles with too little tissue come back unchanged.
    """
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    tissue = ~(((hsv[..., 2] > 215) & (hsv[..., 1] < 25)) | (hsv[..., 2] < 25))
    if tissue.sum() < 64:
        return image
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    px = lab[tissue]
    mean, std = px.mean(0), px.std(0) + 1e-3
    r_mean, r_std = reference
    if rng is not None:
        r_std = r_std * rng.uniform(0.85, 1.15, 3)
    out = lab.copy()
    out[tissue] = (px - mean) / std * r_std + r_mean
    out = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return out


def stain_references(
    cutouts: list[Cutout], images: list[LabelledImage], min_pixels: int = 2000
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Colour statistics of every training slide, grouped by stain: one per cut-out source
    slide (pooled over its cut-outs, at least ``min_pixels``) and one per labelled image
    (its tissue pixels). Training tiles re-coloured to them see the stain variety of all
    sources (e.g. H&E tubules in the paler HE_00x stain, or in HuBMAP's PAS)."""
    refs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    by_source: dict[str, list[Cutout]] = {}
    for c in cutouts:
        by_source.setdefault(cutout_source(c.name), []).append(c)
    for cs in by_source.values():
        px = np.concatenate([c.image[c.mask] for c in cs])
        if len(px) >= min_pixels:
            refs.setdefault("H&E", []).append(colour_stats(px[:: max(1, len(px) // 100_000)]))
    for img in images:
        px = img.image[(img.label != NON_TISSUE) & (img.label != IGNORE)]
        px = px[px.sum(1) > 75]  # blacked-out holes carry no stain
        if len(px) >= min_pixels:
            refs.setdefault(img.stain, []).append(colour_stats(px[:: max(1, len(px) // 100_000)]))
    return refs


def harmonise_sources(cutouts: list[Cutout], reference_sources: tuple[str, ...]) -> None:
    """Give every cut-out a ``harmonised`` copy in the reference slides' stain.

    Cut-outs come from several slides; some slides gave only vessels and glomeruli, so their
    stain alone would tell the class. One Reinhard map per *source slide* (statistics pooled
    over all its cut-outs, so colour differences between classes of a slide survive) moves
    each slide onto the pooled statistics of the reference slides' cut-outs.
    """

    def pooled(cs: list[Cutout]) -> np.ndarray:
        px = np.concatenate([c.image[c.mask] for c in cs])
        step = max(1, len(px) // 200_000)
        return px[::step]

    ref_cuts = [c for c in cutouts if cutout_source(c.name) in reference_sources]
    if not ref_cuts:
        return
    ref = pooled(ref_cuts)
    by_source: dict[str, list[Cutout]] = {}
    for c in cutouts:
        by_source.setdefault(cutout_source(c.name), []).append(c)
    for src, cs in by_source.items():
        if src in reference_sources:
            continue
        stats = pooled(cs)
        for c in cs:
            c.harmonised = match_colours(c.image.reshape(-1, 3), ref, stats).reshape(c.image.shape)
