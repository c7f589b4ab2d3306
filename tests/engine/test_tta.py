import numpy as np
import pytest
import torch

from shindan.engine.tta import VIEWS, tta_logits
from shindan.errors import ModelError


def test_spatial_views_are_undone():
    """A pointwise map commutes with every view, so TTA returns it unchanged."""
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = tta_logits(lambda z: z * 3 - 1, x, VIEWS)
    np.testing.assert_allclose(out, x * 3 - 1, rtol=1e-6)


def test_classification_logits_are_averaged_over_views():
    x = np.zeros((1, 1, 2, 2), np.float32)
    x[0, 0, 0, 1] = 1.0  # top-right pixel

    def top_right(z):  # "logit" = value of the top-right pixel: view-dependent
        return z[:, :, 0, -1].copy()

    # plain 1, hflip 0 (pixel moves left), transpose 0 (moves to bottom-left)
    np.testing.assert_allclose(tta_logits(top_right, x, ["hflip", "transpose"]), [[1 / 3]])


def test_torch_and_numpy_agree():
    x = np.random.default_rng(1).normal(size=(1, 2, 5, 7)).astype(np.float32)

    def f(z):
        return z.cumsum(-1) if isinstance(z, np.ndarray) else torch.cumsum(z, -1)

    a = tta_logits(f, x, ["hflip", "rot180"])
    b = tta_logits(f, torch.from_numpy(x), ["hflip", "rot180"]).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_unknown_view_is_refused():
    with pytest.raises(ModelError, match="unknown test-time view"):
        tta_logits(lambda z: z, np.zeros((1, 1, 2, 2)), ["spin"])


def test_predictor_uses_card_views(tmp_path):
    from shindan.engine import load_predictor
    from tests.helpers import smooth_image, tiny_seg_model

    card = tiny_seg_model(tmp_path / "m", size=32, overlap=8)
    image = smooth_image(32, 32, seed=2)[None]
    plain = load_predictor(card, "torch")
    card.data["input"]["tta"] = ["hflip"]
    flipped = load_predictor(card, "torch")
    expected = (plain.logits(image) + plain.logits(image[:, :, ::-1].copy())[..., ::-1]) / 2
    np.testing.assert_allclose(flipped.logits(image), expected, rtol=1e-4, atol=1e-5)
