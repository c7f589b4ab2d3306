"""classify train writes the card's domain (stains, scale, tissue) and the data's scale."""

import json

from tests.classify.synth import tiny_options


def test_train_writes_domain_and_scales(image_tree, tmp_path):
    from shindan.classify.train import train_model
    from shindan.kidney.domain import domain_issues

    opts = tiny_options(
        group_pattern=r"^[^-]+", stains=["PAS"], tissue="kidney glomerulus crops", data="crops"
    )
    train_model(image_tree, tmp_path / "m", opts)
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["domain"] == {"stains": ["PAS"], "mpp": None, "tissue": "kidney glomerulus crops"}
    assert card["training"]["scales"][0]["data"] == "crops"
    assert card["training"]["scales"][0]["mpp"] is None
    assert domain_issues(card, "H&E", 0.5)  # an analysis on H&E marks it
    # without --stain the card says nothing of a domain, and analyses say it is unchecked
    train_model(image_tree, tmp_path / "n", tiny_options(group_pattern=r"^[^-]+", data_mpp=0.5))
    card = json.loads((tmp_path / "n" / "card.json").read_text())
    assert "domain" not in card and card["training"]["scales"][0]["mpp"] == 0.5
    assert "states no domain" in domain_issues(card, "H&E", 0.5)[0]
