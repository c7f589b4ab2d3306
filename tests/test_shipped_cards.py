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
