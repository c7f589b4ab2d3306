"""Folding run-time "same" pads into convolutions: same logits, no Pad left, checked before
a file is replaced."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from shindan.engine import load_predictor
from shindan.models import build_network, load_card, load_network, save_model
from shindan.models.network import export_onnx
from shindan.models.onnx_graph import (
    fold_same_padding,
    fold_same_padding_file,
    max_logit_difference,
)
from tests.helpers import seg_card_dict


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def tf_unet(tmp_path_factory):
    """A small U-Net on a TF-ported encoder (tf_efficientnet_lite0, whose strided
    convolutions pad "same" at run time), saved as a model folder (export folds the pads)."""
    torch.manual_seed(0)
    data = seg_card_dict(size=64, overlap=16, classes=3)
    data["architecture"]["kwargs"]["encoder_name"] = "tu-tf_efficientnet_lite0"
    return save_model(build_network(data), data, tmp_path_factory.mktemp("m") / "tf-unet")


def test_export_folds_same_pads_and_keeps_the_logits(tf_unet):
    assert "Pad" not in ops(tf_unet.onnx_path)
    convs = onnx.load(str(tf_unet.onnx_path)).graph.node
    same = [n for n in convs if any(a.name == "auto_pad" for a in n.attribute)]
    assert same, "no convolution carries the folded padding"
    net = load_network(tf_unet)
    onnx_pred = load_predictor(tf_unet, "onnx")
    rng = np.random.default_rng(1)
    for h, w in [(64, 64), (45, 37), (33, 64)]:  # odd sizes: the "same" pads differ by parity
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(onnx_pred._forward(x), ref, atol=1e-4)


def test_unfolded_export_gives_the_same_logits(tf_unet, tmp_path):
    """The folded file against the plain export of the same weights (``fold_pads=False``,
    the bench's speed yardstick), which still has its run-time pads."""
    plain = tmp_path / "plain.onnx"
    export_onnx(load_network(tf_unet), tf_unet.data, plain, fold_pads=False)
    pads = ops(plain).count("Pad")
    assert pads > 0  # the form the rewrite targets
    shapes = [(1, 3, 64, 64), (2, 3, 51, 29)]
    assert max_logit_difference(plain, tf_unet.onnx_path, shapes) <= 1e-4
    folded, diff = fold_same_padding_file(plain, shapes)
    assert folded == pads
    assert "Pad" not in ops(plain) and diff <= 1e-4


def _pad_conv_model(pads: list[int], value: float = 0.0) -> onnx.ModelProto:
    """input → Pad(pads, value) → Conv 3x3 stride 1 (no pads) → output."""
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((2, 1, 3, 3)).astype(np.float32), "w"
    )
    p = numpy_helper.from_array(np.array(pads, np.int64), "pads")
    v = numpy_helper.from_array(np.array(value, np.float32), "value")
    nodes = [
        helper.make_node("Pad", ["input", "pads", "value"], ["padded"], mode="constant"),
        helper.make_node("Conv", ["padded", "w"], ["logits"], kernel_shape=[3, 3]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2, "h", "w"])],
        [w, p, v],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_true_same_pad_is_folded(tmp_path):
    path = tmp_path / "same.onnx"
    onnx.save(_pad_conv_model([0, 0, 1, 1, 0, 0, 1, 1]), str(path))
    assert fold_same_padding_file(path, [(1, 1, 9, 8)]) == (1, 0.0)
    assert ops(path) == ["Conv"]


def test_a_pad_that_is_not_same_is_left_alone(tmp_path):
    """A zero pad of 2 on every side matches the form but not "same" padding: the numeric
    check refuses it and the file stays as it was."""
    path = tmp_path / "wide.onnx"
    onnx.save(_pad_conv_model([0, 0, 2, 2, 0, 0, 2, 2]), str(path))
    before = path.read_bytes()
    folded, diff = fold_same_padding_file(path, [(1, 1, 9, 8)])
    assert folded == 0 and diff > 1e-4
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_a_non_zero_pad_is_not_folded():
    model, folded = fold_same_padding(_pad_conv_model([0, 0, 1, 1, 0, 0, 1, 1], value=1.0))
    assert folded == 0 and [n.op_type for n in model.graph.node] == ["Pad", "Conv"]


@pytest.mark.parametrize("name", ["kidney-compartments", "nuclei", "wbc"])
def test_shipped_models_carry_no_run_time_pads(name):
    """The shipped ONNX files are the folded export (1.16x faster kidney net)."""
    assert "Pad" not in ops(load_card(name).onnx_path)
