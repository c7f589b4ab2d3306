import numpy as np
import pytest

from shindan.engine import load_predictor
from shindan.engine.backends import Predictor
from shindan.engine.tiled import ArraySink, blend_window, predict_array, run_tiles
from shindan.io.slide import ImageSlide
from shindan.tiling import TileGrid
from tests.helpers import smooth_image, tiny_seg_model


class PointwisePredictor(Predictor):
    """Logits depend on each pixel alone, so any correct tiling must reproduce them exactly."""

    backend = "test"

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return np.stack([x[:, 0] * 2, x[:, 1] - x[:, 2], -x[:, 0]], axis=1)


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    return tiny_seg_model(tmp_path_factory.mktemp("m") / "tiny", size=64, overlap=16)


def test_blend_window_positive_and_flat_inside():
    w = blend_window(64, 16)
    assert w.min() > 0
    assert np.all(w[16:48, 16:48] == 1)
    assert np.allclose(w, w.T)


@pytest.mark.parametrize("size,overlap,strip", [(64, 16, 10_000), (48, 0, 10_000), (64, 24, 70)])
def test_pointwise_model_tiles_exactly(card, size, overlap, strip):
    image = smooth_image(157, 203, seed=1)
    pred = PointwisePredictor(card)
    whole = pred.predict(image[None])[0]
    grid = TileGrid(203, 157, size, overlap)
    sink = ArraySink(3, 157, 203)
    slide = ImageSlide.from_array(image, mpp=1.0)
    run_tiles(
        lambda loc, sz: slide.read_region(loc, 0, sz),
        pred,
        grid,
        sink,
        strip_width=strip,
        progress=False,
    )
    np.testing.assert_allclose(sink.probs, whole, atol=1e-5)


def test_skipped_tiles_filled(card):
    image = smooth_image(100, 100)
    pred = PointwisePredictor(card)
    grid = TileGrid(100, 100, 64, 16)
    sink = ArraySink(3, 100, 100)
    slide = ImageSlide.from_array(image, mpp=1.0)
    ran = run_tiles(
        lambda loc, sz: slide.read_region(loc, 0, sz),
        pred,
        grid,
        sink,
        keep=lambda r, c: False,
        fill_class=2,
        progress=False,
    )
    assert ran == 0
    assert np.all(sink.probs.argmax(0) == 2)


def test_no_seams_with_blending(card):
    """Probability jumps at tile boundaries are no larger than elsewhere once blended."""
    image = smooth_image(256, 256, seed=3)
    pred = load_predictor(card, backend="torch")
    probs = predict_array(pred, image)
    grid = TileGrid(256, 256, 64, 16)
    dx = np.abs(np.diff(probs, axis=2)).sum(0)  # (H, W-1) jump between column j and j+1
    # Columns where a tile's inner edge ends (the seam a non-blending engine would show).
    seams = sorted({grid.origin(0, c)[0] + 64 - 1 for c in range(grid.cols)} & set(range(255)))
    other = np.setdiff1d(np.arange(255), seams)
    assert dx[:, seams].mean() < 1.5 * dx[:, other].mean()


def test_backends_agree(card):
    image = smooth_image(128, 128, seed=4)
    labels = {
        b: predict_array(load_predictor(card, backend=b), image).argmax(0)
        for b in ("onnx", "torch", "torch-bf16")
    }
    assert (labels["onnx"] == labels["torch"]).mean() > 0.999
    assert (labels["torch-bf16"] == labels["torch"]).mean() > 0.95


@pytest.mark.parametrize("strip,chunk", [(10_000, 32), (96, 32), (128, 64)])
def test_label_sink_matches_probabilities(card, tmp_path, strip, chunk):
    """Streamed labels (live-column argmax, chunk-row buffering, strips) equal the argmax of
    the in-memory probabilities, skipped tiles included."""
    import zarr

    from shindan.engine.tiled import LabelSink

    image = smooth_image(230, 300, seed=5)
    pred = PointwisePredictor(card)
    grid = TileGrid(300, 230, 64, 16)
    slide = ImageSlide.from_array(image, mpp=1.0)

    def read(loc, sz):
        return slide.read_region(loc, 0, sz)

    def keep(r, c):
        return (r + 2 * c) % 3 != 0

    probs = ArraySink(3, 230, 300)
    run_tiles(read, pred, grid, probs, keep=keep, fill_class=1, strip_width=strip, progress=False)
    labels = LabelSink(
        tmp_path / "l.zarr", 3, 230, 300, overview_factor=4, chunk=chunk, fill_class=1
    )
    run_tiles(read, pred, grid, labels, keep=keep, fill_class=1, strip_width=strip, progress=False)
    expected = probs.probs.argmax(0)
    got = zarr.open_array(str(tmp_path / "l.zarr"), mode="r")[:]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(labels.counts, np.bincount(expected.ravel(), minlength=3))
    np.testing.assert_array_equal(labels.overview, expected[::4, ::4])


def test_argmax_first_axis_matches_numpy():
    from shindan.engine.tiled import argmax_first_axis

    x = np.random.default_rng(0).normal(size=(5, 37, 41)).astype(np.float32)
    x[3, :4] = x[1, :4]  # ties go to the lower index, as numpy's
    x[1, :4] += 10
    x[3, :4] += 10
    np.testing.assert_array_equal(argmax_first_axis(x), x.argmax(0))


def test_box_any_matches_a_brute_force_look():
    """predict_array's tile filter: a True pixel in the (clipped) box, boxes may stick out."""
    from shindan.engine.tiled import _box_any

    rng = np.random.default_rng(5)
    mask = rng.random((37, 53)) > 0.995
    wanted = _box_any(mask)
    for _ in range(300):
        r0, c0 = rng.integers(-20, 60, 2)
        r1, c1 = r0 + rng.integers(0, 30), c0 + rng.integers(0, 30)
        ref = mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)].any()
        assert wanted(r0, r1, c0, c1) == ref
