"""Every shipped model card states its licence, and those trained on non-commercial data say so."""

import pytest

from shindan.models import list_models

# Shipped models whose training data is CC BY-NC-SA (see ../shared/data/README.md).
NON_COMMERCIAL = {"nuclei", "glomerulosclerosis", "kidney-compartments"}


@pytest.mark.parametrize("card", list_models(), ids=lambda c: c.name)
def test_licence_is_stated(card):
    licence = card.data["training"]["licence"]
    assert licence and licence != "as the training data"
    if card.name in NON_COMMERCIAL:
        assert "non-commercial" in licence.lower()


@pytest.mark.parametrize("card", list_models(), ids=lambda c: c.name)
def test_domain_and_scales_are_stated(card):
    # an analysis marks results outside a model's stains and scale: the card must state them
    domain = card.data["domain"]
    assert domain["stains"] and domain["tissue"]
    assert "mpp" in domain
    scales = card.data["training"]["scales"]
    assert scales and all(s["source"] for s in scales)


def test_stated_stains_and_synthetic_data():
    cards = {c.name: c.data for c in list_models()}
    assert cards["glomerulosclerosis"]["domain"]["stains"] == ["PAS"]
    assert cards["nuclei"]["domain"]["stains"] == ["H&E"]
    assert set(cards["kidney-compartments"]["domain"]["stains"]) == {"H&E", "PAS"}
    # its training data holds shindan.slide_phantom biopsies
    assert cards["kidney-compartments"]["training"]["includes_synthetic"] is True
    hubmap = [
        s for s in cards["kidney-compartments"]["training"]["scales"] if "HuBMAP" in s["data"]
    ]
    assert hubmap[0]["mpp"] == 0.95
