"""Batched tiled inference with seamless blending, streamed to disk.

Tiles of the card's size overlap by the card's overlap on a grid fixed to the image
(:class:`~shindan.tiling.TileGrid`). Each tile's logits are weighted by a window that ramps
down across the overlap and the weighted sum is normalised, so neighbouring tiles fade into
each other instead of meeting at a seam. Blending logits (softmax once per pixel, only where
probabilities are wanted) costs a fraction of a softmax per tile.

Memory stays flat as slides grow: the image is cut into vertical strips at most
``strip_width`` pixels wide, each processed top to bottom with one band of ``tile`` rows held
in memory; finished rows go straight to a chunked zarr array on disk. Tiles straddling a strip
boundary are the same tiles of the same global grid in both strips, so the result equals a
single pass. Tiles are read and resampled in a thread pool while the model computes.
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from shindan.engine.backends import Predictor, _threads
from shindan.io.slide import ImageSlide, Slide
from shindan.tiling import TileGrid, TissueMask, read_at_mpp, require_mpp
from shindan.util.progress import progress_bar

Reader = Callable[[tuple[int, int], tuple[int, int]], np.ndarray]
# Logit given to the fill class of skipped (glass) tiles: softmax ≈ 1 for it.
FILL_LOGIT = 30.0


def _weight(z: np.ndarray, window: np.ndarray, overlap: int) -> None:
    """``z *= window`` in place, touching only the ramps (the window is 1 inside)."""
    o = overlap
    if o == 0:
        return
    if 2 * o >= window.shape[0]:
        z *= window
        return
    z[..., :o, :] *= window[:o]
    z[..., -o:, :] *= window[-o:]
    z[..., o:-o, :o] *= window[o:-o, :o]
    z[..., o:-o, -o:] *= window[o:-o, -o:]


def blend_window(size: int, overlap: int) -> np.ndarray:
    """Separable (size, size) float32 weights: 1 inside, ramping to ~0 across ``overlap``."""
    if overlap == 0:
        return np.ones((size, size), np.float32)
    i = np.arange(size, dtype=np.float32) + 0.5
    ramp = np.minimum(1.0, np.minimum(i, size - i) / overlap)
    return np.outer(ramp, ramp).astype(np.float32)


@dataclass
class _Band:
    """Weighted sums for the rows of one tile row of one strip."""

    acc: np.ndarray  # (C, size, width) float32
    wsum: np.ndarray  # (size, width) float32, or (1, 1) when the sink does not need it
    live: np.ndarray  # (size, width) bool: reached by a tile that ran the model
    top: int  # image row of band row 0

    def shift(self, rows: int) -> None:
        """Move the band down by ``rows``: drop finished rows, zero the new ones."""
        for a in (self.acc, self.wsum, self.live):
            if a.shape[-2] > 1:  # a (1, 1) wsum placeholder stays as it is
                a[..., : a.shape[-2] - rows, :] = a[..., rows:, :]
                a[..., a.shape[-2] - rows :, :] = 0
        self.top += rows


class Sink:
    """Receives finished rows of weighted logit sums.

    ``put(row, x0, acc, wsum, live)`` gets ``acc`` (C, rows, cols) and their weights ``wsum``
    (rows, cols) for image rows from ``row`` and columns from ``x0``. ``live`` lists the
    ``(start, stop)`` column runs that model output reached; every other column holds only
    skipped (no tissue) tiles, i.e. the fill class with full confidence. ``close()`` is called
    once after the last row.
    """

    #: Whether ``put`` reads ``wsum``; when False the engine does not accumulate it.
    needs_weights: bool = True

    def put(
        self, row: int, x0: int, acc: np.ndarray, wsum: np.ndarray, live: list[tuple[int, int]]
    ) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish writing (after the last ``put``)."""


@dataclass
class ArraySink(Sink):
    """Keeps all probabilities in memory (for images that fit)."""

    classes: int
    height: int
    width: int
    probs: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.probs = np.zeros((self.classes, self.height, self.width), np.float32)

    def put(
        self, row: int, x0: int, acc: np.ndarray, wsum: np.ndarray, live: list[tuple[int, int]]
    ) -> None:
        z = acc / wsum
        z -= z.max(axis=0, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=0, keepdims=True)
        self.probs[:, row : row + acc.shape[1], x0 : x0 + acc.shape[2]] = z


@dataclass
class LabelSink(Sink):
    """Argmax labels streamed to a chunked zarr array, with per-class pixel counts and a
    coarse overview map kept in memory.

    The argmax runs only over ``live`` columns (the rest is the fill class). Storing happens
    in a background thread so it overlaps the next batch, and rows are buffered until whole
    chunk rows are complete, so no chunk is read back and rewritten.
    """

    path: Path
    classes: int
    height: int
    width: int
    overview_factor: int = 1
    chunk: int = 512
    fill_class: int = 0
    counts: np.ndarray = field(init=False)
    overview: np.ndarray = field(init=False)
    needs_weights = False  # argmax of the weighted sum: the weights are positive

    def __post_init__(self) -> None:
        from zarr.codecs import BloscCodec

        # lz4 without shuffle: label maps still compress ~50x and it is the fastest codec.
        self.labels = zarr.create_array(
            store=str(self.path),
            shape=(self.height, self.width),
            dtype="uint8",
            chunks=(self.chunk, self.chunk),
            fill_value=self.fill_class,
            overwrite=True,
            compressors=[BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle")],
        )
        self.counts = np.zeros(self.classes, np.int64)
        f = self.overview_factor
        self.overview = np.zeros((-(-self.height // f), -(-self.width // f)), np.uint8)
        self._buffer: dict[int, tuple[int, list[np.ndarray]]] = {}  # x0 → (first row, rows)
        self._writer = ThreadPoolExecutor(max_workers=1)
        self._pending: deque[Future] = deque()

    def put(
        self, row: int, x0: int, acc: np.ndarray, wsum: np.ndarray, live: list[tuple[int, int]]
    ) -> None:
        lab = np.full(acc.shape[1:], self.fill_class, np.uint8)
        for a, b in live:
            lab[:, a:b] = argmax_first_axis(acc[:, :, a:b])
        while len(self._pending) >= 2:  # bounded backlog keeps memory flat
            self._pending.popleft().result()
        self._pending.append(self._writer.submit(self._store, row, x0, lab, live))

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
            for x0 in self._buffer:
                self._flush(x0, everything=True)
            self._buffer.clear()
        finally:
            self._writer.shutdown()

    def _store(self, row: int, x0: int, lab: np.ndarray, live: list[tuple[int, int]]) -> None:
        n_live = 0
        for a, b in live:
            part = lab[:, a:b]
            self.counts += np.bincount(part.ravel(), minlength=self.classes)[: self.classes]
            n_live += part.size
        self.counts[self.fill_class] += lab.size - n_live
        f = self.overview_factor
        # Overview: label at each coarse pixel's top-left fine pixel (rows aligned to f).
        r_first = -(-row // f) * f
        sub = lab[r_first - row :: f, (-(-x0 // f) * f) - x0 :: f]
        self.overview[
            r_first // f : r_first // f + sub.shape[0], -(-x0 // f) : -(-x0 // f) + sub.shape[1]
        ] = sub
        self._buffer.setdefault(x0, (row, []))[1].append(lab)
        self._flush(x0)

    def _flush(self, x0: int, everything: bool = False) -> None:
        """Write the buffered rows of strip ``x0``: whole chunk rows only, unless the strip
        reaches the last image row or ``everything`` is asked for."""
        first, rows = self._buffer[x0]
        n = sum(len(r) for r in rows)
        whole = n if everything or first + n >= self.height else n - (first + n) % self.chunk
        if whole > 0:
            block = np.concatenate(rows)
            self.labels[first : first + whole, x0 : x0 + block.shape[1]] = block[:whole]
            self._buffer[x0] = (first + whole, [block[whole:]])


def argmax_first_axis(x: np.ndarray) -> np.ndarray:
    """``x.argmax(axis=0)`` as uint8 for (C, H, W) with C ≤ 255; ties go to the lower index.

    One pass per class over contiguous planes, instead of numpy's strided reduction.
    """
    best = x[0].copy()
    lab = np.zeros(best.shape, np.uint8)
    for c in range(1, x.shape[0]):
        np.copyto(lab, np.uint8(c), where=x[c] > best)
        np.maximum(best, x[c], out=best)
    return lab


def _tile_batches(
    grid: TileGrid, strip: tuple[int, int], keep: Callable[[int, int], bool], batch: int
) -> Iterator[list[tuple[int, int, bool]]]:
    """Tiles (row, col, has_tissue) of one strip in row order, cut into batches per tile row."""
    cols = grid.cols_touching(*strip)
    for r in range(grid.rows):
        row = [(r, c, keep(r, c)) for c in cols]
        for i in range(0, len(row), batch):
            yield row[i : i + batch]


def run_tiles(
    reader: Reader,
    predictor: Predictor,
    grid: TileGrid,
    sink: Sink,
    *,
    keep: Callable[[int, int], bool] | None = None,
    fill_class: int = 0,
    batch_size: int = 4,
    strip_width: int = 16384,
    progress: bool = True,
    description: str = "tiles",
) -> int:
    """Run ``predictor`` over every tile of ``grid`` and stream blended rows to ``sink``.

    Parameters
    ----------
    reader : callable
        ``reader((x, y), (w, h))`` → uint8 RGB tile on the grid's pixel scale.
    keep : callable, optional
        ``keep(row, col)`` → False for tiles with no tissue; those are not read or run and
        count as ``fill_class`` with full confidence.
    strip_width : int
        Widest strip processed at once, in pixels: bounds memory for any slide width.

    Returns
    -------
    int
        Number of tiles run through the model.
    """
    keep = keep or (lambda r, c: True)
    strips = [(x, min(x + strip_width, grid.width)) for x in range(0, grid.width, strip_width)]
    total = sum(len(grid.cols_touching(*s)) for s in strips) * grid.rows
    ran = 0
    # One thread runs the model so that blending a batch overlaps the next batch's inference.
    with (
        ThreadPoolExecutor(max_workers=max(2, _threads())) as pool,
        ThreadPoolExecutor(max_workers=1) as model,
        progress_bar(description, total, enabled=progress) as advance,
    ):
        try:
            for strip in strips:
                ran += _run_strip(
                    reader,
                    predictor,
                    grid,
                    sink,
                    strip,
                    keep,
                    fill_class,
                    batch_size,
                    (pool, model),
                    advance,
                )
        finally:
            sink.close()
    return ran


def _run_strip(
    reader: Reader,
    predictor: Predictor,
    grid: TileGrid,
    sink: Sink,
    strip: tuple[int, int],
    keep: Callable[[int, int], bool],
    fill_class: int,
    batch_size: int,
    pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor],
    advance: Callable[[int], None],
    read_ahead: int = 4,
) -> int:
    """One vertical strip, top to bottom, with one band of tile rows in memory."""
    size = grid.size
    window = blend_window(size, grid.overlap)
    fill_window = FILL_LOGIT * window
    cols = grid.cols_touching(*strip)
    bx0 = grid.origin(0, cols[0])[0]  # band x origin (image px)
    bw = grid.origin(0, cols[-1])[0] + size - bx0
    n_cls = len(predictor.classes)
    wshape = (size, bw) if sink.needs_weights else (1, 1)
    band = _Band(
        np.zeros((n_cls, size, bw), np.float32),
        np.zeros(wshape, np.float32),
        np.zeros((size, bw), bool),
        grid.offset,
    )
    emitted = 0  # image rows of this strip already handed to the sink
    ran = 0
    batches = _tile_batches(grid, strip, keep, batch_size)
    queue: deque[tuple[list, Future | None]] = deque()
    read_pool, model_pool = pools

    def infer(reads: list[Future]) -> np.ndarray:
        return predictor.logits(np.stack([f.result() for f in reads]))

    def submit() -> None:
        tiles = next(batches, None)
        if tiles is not None:
            reads = [
                read_pool.submit(reader, grid.origin(r, c), (size, size)) for r, c, k in tiles if k
            ]
            queue.append((tiles, model_pool.submit(infer, reads) if reads else None))

    for _ in range(read_ahead):  # reading and decoding overlap with compute
        submit()
    while queue:
        tiles, result = queue.popleft()
        submit()
        logits = iter(result.result()) if result else None
        ran += sum(k for _, _, k in tiles)
        y0 = grid.origin(tiles[0][0], 0)[1]
        if y0 > band.top:  # a new tile row starts: every row above it is final
            done_to = min(y0, grid.height)
            if done_to > emitted:
                _emit(sink, band, emitted - band.top, done_to - band.top, emitted, bx0, strip)
                emitted = done_to
            band.shift(y0 - band.top)
        for r, c, k in tiles:
            x = grid.origin(r, c)[0] - bx0
            if k:
                z = next(logits)
                _weight(z, window, grid.overlap)
                band.acc[:, :, x : x + size] += z
                band.live[:, x : x + size] = True
            else:  # no tissue: full confidence in the fill class, no model run
                band.acc[fill_class, :, x : x + size] += fill_window
            if sink.needs_weights:
                band.wsum[:, x : x + size] += window
        advance(len(tiles))
    if emitted < grid.height:
        _emit(sink, band, emitted - band.top, grid.height - band.top, emitted, bx0, strip)
    return ran


def _emit(
    sink: Sink, band: _Band, a: int, b: int, row: int, bx0: int, strip: tuple[int, int]
) -> None:
    """Hand band rows [a, b) over the strip's columns to the sink, with their live runs."""
    sx0, sx1 = strip
    c0, c1 = sx0 - bx0, sx1 - bx0
    cols = np.concatenate([[False], band.live[a:b, c0:c1].any(axis=0), [False]])
    edges = np.flatnonzero(cols[1:] != cols[:-1])
    live = [(int(i), int(j)) for i, j in zip(edges[::2], edges[1::2], strict=True)]
    wsum = band.wsum[a:b, c0:c1] if sink.needs_weights else band.wsum
    sink.put(row, sx0, band.acc[:, a:b, c0:c1], wsum, live)


def predict_array(
    predictor: Predictor,
    image: np.ndarray,
    *,
    batch_size: int = 8,
    progress: bool = False,
    where: np.ndarray | None = None,
    reach: int = 0,
    fill_class: int = 0,
) -> np.ndarray:
    """Blended tiled probabilities of an in-memory image already at the model's µm/px.

    Parameters
    ----------
    predictor : Predictor
        A segmentation model (its card gives tile size and overlap).
    image : ndarray (H, W, 3) uint8
    where : ndarray (H, W) of bool, optional
        Pixels whose prediction is wanted: a tile whose footprint, widened by ``reach`` px
        on every side, holds none of them is not run and counts as ``fill_class`` with full
        confidence. Every pixel within ``reach`` of a wanted one is then covered by run
        tiles only, so its probabilities equal those of a full run.
    reach : int
        Margin in pixels around wanted pixels that must also be exact.

    Returns
    -------
    ndarray of float32, shape (classes, H, W)
    """
    h, w = image.shape[:2]
    card = predictor.card
    grid = TileGrid(w, h, card.size, card.overlap)
    slide = ImageSlide.from_array(image, mpp=None, name="array")
    sink = ArraySink(len(predictor.classes), h, w)

    def reader(loc: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        return slide.read_region(loc, 0, size)

    keep = None
    if where is not None:
        if where.shape != (h, w):
            raise ValueError(f"where has shape {where.shape}, the image {(h, w)}")
        wanted = _box_any(where)

        def keep(r: int, c: int) -> bool:
            x, y = grid.origin(r, c)
            return wanted(y - reach, y + card.size + reach, x - reach, x + card.size + reach)

    run_tiles(
        reader,
        predictor,
        grid,
        sink,
        keep=keep,
        fill_class=fill_class,
        batch_size=batch_size,
        progress=progress,
    )
    return sink.probs


def _box_any(mask: np.ndarray) -> Callable[[int, int, int, int], bool]:
    """``wanted(r0, r1, c0, c1)``: whether ``mask`` holds a True pixel in rows [r0, r1),
    columns [c0, c1) (clipped to the mask).

    A direct look at the box: the tiles' boxes cover the image about once, so this costs
    less than the summed-area table it replaces (two int64 cumulative sums of the whole
    mask, 5% of a kidney analysis).
    """
    h, w = mask.shape

    def wanted(r0: int, r1: int, c0: int, c1: int) -> bool:
        r0, r1 = min(max(r0, 0), h), min(max(r1, 0), h)
        c0, c1 = min(max(c0, 0), w), min(max(c1, 0), w)
        return bool(mask[r0:r1, c0:c1].any())

    return wanted


@dataclass
class SlideSegmentation:
    """A segmented slide: labels on disk (zarr) at ``mpp``, counts and a coarse overview."""

    labels_path: Path
    mpp: float
    width: int
    height: int
    classes: list[str]
    counts: np.ndarray
    overview: np.ndarray
    overview_mpp: float
    tiles_run: int

    def labels(self):
        """The zarr label array (read regions with slicing, [rows, cols])."""
        return zarr.open_array(str(self.labels_path), mode="r")


def segment_slide(
    slide: Slide,
    predictor: Predictor,
    out: str | Path,
    *,
    tissue: TissueMask | None = None,
    min_tissue: float = 0.01,
    fill_class: int = 0,
    batch_size: int = 4,
    strip_width: int = 16384,
    overview_size: int = 4096,
    progress: bool = True,
) -> SlideSegmentation:
    """Segment a whole slide at the model's µm/px; labels streamed to ``out`` (a zarr folder).

    Tiles with less than ``min_tissue`` tissue (when a mask is given) are skipped and count
    as ``fill_class``. The zarr folder is written under a temporary name and renamed at the end.
    """
    mpp = predictor.card.mpp or require_mpp(slide)
    s_mpp = require_mpp(slide)
    w0, h0 = slide.dimensions
    width, height = max(int(round(w0 * s_mpp / mpp)), 1), max(int(round(h0 * s_mpp / mpp)), 1)
    grid = TileGrid(width, height, predictor.card.size, predictor.card.overlap)
    factor = max(1, -(-max(width, height) // overview_size))
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    sink = LabelSink(
        tmp, len(predictor.classes), height, width, overview_factor=factor, fill_class=fill_class
    )

    def keep(r: int, c: int) -> bool:
        if tissue is None:
            return True
        x, y = grid.origin(r, c)
        return tissue.fraction((x, y, grid.size, grid.size), mpp) >= min_tissue

    def reader(loc: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        return read_at_mpp(slide, loc, size, mpp)

    try:
        ran = run_tiles(
            reader,
            predictor,
            grid,
            sink,
            keep=keep,
            fill_class=fill_class,
            batch_size=batch_size,
            strip_width=strip_width,
            progress=progress,
            description=f"{predictor.card.name} {slide.path.name}",
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SlideSegmentation(
        out, mpp, width, height, predictor.classes, sink.counts, sink.overview, mpp * factor, ran
    )
