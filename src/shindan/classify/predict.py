"""Classify image files with a shipped or saved model: batched, read-ahead, ONNX Runtime default."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shindan.classify.data import list_images, read_rgb
from shindan.classify.preprocess import prepare
from shindan.engine import Predictor, load_predictor
from shindan.models import ModelCard
from shindan.util.atomic import atomic_path


def input_crop(card: ModelCard) -> float:
    """The central crop fraction the model was trained with (1 = whole image)."""
    return float(card.data["input"].get("crop", 1.0))


def load_batches(
    paths: Sequence[Path],
    size: int,
    batch_size: int = 64,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    threads: int = 2,
    crop: float = 1.0,
    spec: Mapping[str, Any] | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 (N, size, size, 3) batches of the images, decoded ahead in threads.

    ``transform`` (e.g. a domain shift) is applied to each full-resolution image before the
    model's preparation: ``spec``, a card's ``input`` (:func:`shindan.classify.preprocess.prepare`:
    cell crop, resize, colour normalisation), or else the central ``crop`` resized to ``size``.
    """
    if spec is None:
        spec = {"size": size, "crop": crop}

    def load(p: Path) -> np.ndarray:
        image = read_rgb(p)
        return prepare(transform(image) if transform else image, spec)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        # map() keeps order; images are decoded while the model computes the previous batch.
        it = pool.map(load, paths)
        batch: list[np.ndarray] = []
        for image in it:
            batch.append(image)
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)


def predict_paths(
    predictor: Predictor,
    paths: Sequence[Path],
    batch_size: int = 64,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Class probabilities (N, classes) for image files, in order."""
    from shindan.util.progress import progress_bar

    out = []
    with progress_bar("classifying", len(paths), enabled=progress) as advance:
        for batch in load_batches(
            paths, predictor.card.size, batch_size, transform, spec=predictor.card.data["input"]
        ):
            out.append(predictor.predict(batch))
            advance(len(batch))
    return np.concatenate(out) if out else np.zeros((0, len(predictor.classes)), np.float32)


def is_predictions_header(row: Sequence[str]) -> bool:
    """Whether a CSV header row is the one :func:`write_predictions` writes (any classes).

    Examples
    --------
    >>> is_predictions_header(["image", "label", "p_GS", "p_nonGS"])
    True
    >>> is_predictions_header(["image", "label", "group"])  # a user's label table
    False
    """
    return (
        len(row) > 2
        and list(row[:2]) == ["image", "label"]
        and all(c.startswith("p_") for c in row[2:])
    )


def write_predictions(
    out: str | Path,
    names: Sequence[str],
    classes: Sequence[str],
    probs: np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """CSV ``image,label,p_<class>...`` written atomically; ``labels``: class indices
    (e.g. :meth:`shindan.engine.Predictor.labels`, the card's cut-off), default the arg-max."""
    out = Path(out)
    if labels is None:
        labels = np.argmax(probs, axis=1) if len(probs) else []
    with atomic_path(out) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", *[f"p_{c}" for c in classes]])
        for name, k, p in zip(names, labels, probs, strict=True):
            w.writerow([name, classes[int(k)], *[f"{v:.6f}" for v in p]])
    return out


def predict(
    model: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    backend: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
) -> Path:
    """Classify image files or folders (recursively) and write the predictions CSV.

    Parameters
    ----------
    model : str or Path
        A shipped model name (``wbc``) or a model folder / card path.
    inputs : list
        Image files and/or folders.
    out : path
        CSV to write: ``image`` (the path as found), ``label`` (by the card's decision: the
        positive class at or above its cut-off, else the arg-max) and one ``p_<class>``
        probability column per class (calibrated with the card's temperature).
    backend : {"auto", "onnx", "torch", "torch-bf16"}
        Inference backend; ``auto`` is ONNX Runtime on CPU.
    """
    predictor = load_predictor(str(model), backend=backend)
    paths = list_images(inputs)
    probs = predict_paths(predictor, paths, batch_size, progress=progress)
    return write_predictions(
        out, [str(p) for p in paths], predictor.classes, probs, predictor.labels(probs)
    )
