"""Phase identification from descriptions, user phase maps, one series per phase."""

import json

import pytest

from shindan.ct.dicom import Instance, SeriesHeader
from shindan.ct.phases import assign_phases, guess_phase, normalise_phase, read_phase_map
from shindan.errors import InputError


@pytest.mark.parametrize(
    "description, phase",
    [
        ("ABD NON-CONTRAST 5.0", "non-contrast"),
        ("Pre contrast abdomen", "non-contrast"),
        ("ABD C-", "non-contrast"),
        ("Unenhanced", "non-contrast"),
        ("腹部 単純", "non-contrast"),
        ("RENAL ARTERIAL 2.5 B30f", "corticomedullary"),
        ("Corticomedullary phase", "corticomedullary"),
        ("Late arterial", "corticomedullary"),
        ("動脈相", "corticomedullary"),
        ("Nephrographic 3.0", "nephrographic"),
        ("PORTAL VENOUS 1.0 Br40", "nephrographic"),
        ("腎実質相", "nephrographic"),
        ("EXCRETORY DELAYED 4.0", "excretory"),
        ("Delayed 10 min", "excretory"),
        ("排泄相", "excretory"),
        ("Intravenous contrast study", None),
        ("Topogram 0.6 T20s", None),
        ("", None),
    ],
)
def test_guess_phase(description, phase):
    assert guess_phase(description) == phase


def test_normalise_phase():
    assert normalise_phase("Arterial") == "corticomedullary"
    assert normalise_phase("excretory") == "excretory"
    with pytest.raises(InputError, match="unknown phase"):
        normalise_phase("sagittal")


def _h(uid, desc, n=10, number=1, orientation=(1, 0, 0, 0, 1, 0), image_type=()):
    inst = tuple(
        Instance(
            path=f"{uid}-{i}",
            rows=8,
            cols=8,
            position=(0, 0, float(i)),
            orientation=orientation,
            number=i,
        )
        for i in range(n)
    )
    return SeriesHeader(
        uid=uid,
        description=desc,
        modality="CT",
        study_uid="s",
        number=number,
        instances=inst,
        image_type=image_type,
    )


def test_assign_picks_one_series_per_phase():
    headers = [
        _h("1", "Topogram", n=1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")),
        _h("2", "NC 5mm", n=8),
        _h("3", "Arterial 1mm", n=40),
        _h("4", "Arterial 5mm", n=8),
        _h("5", "Portal venous COR", n=60, orientation=(1, 0, 0, 0, 0, -1)),
        _h("6", "Portal venous 2mm", n=20),
        _h("7", "Delayed", n=10),
    ]
    chosen = assign_phases(headers)
    assert {p: h.uid for p, h in chosen.items()} == {
        "non-contrast": "2",
        "corticomedullary": "3",
        "nephrographic": "6",
        "excretory": "7",
    }


def test_phase_map_overrides_and_missing_phase(tmp_path):
    headers = [_h("1.1", "Series A"), _h("1.2", "Series B"), _h("1.3", "Arterial")]
    with pytest.raises(
        InputError,
        match=r"no series for phase\(s\) non-contrast, "
        r"nephrographic, excretory.*give a phase map",
    ):
        assign_phases(headers)
    csv_map = tmp_path / "map.csv"
    csv_map.write_text("series,phase\n1.1,plain\nseries b,portal venous\nArterial,ignore\n")
    pmap = read_phase_map(csv_map)
    assert pmap == {"1.1": "non-contrast", "series b": "nephrographic", "Arterial": "ignore"}
    chosen = assign_phases(headers, pmap, phases=["non-contrast", "nephrographic"])
    assert {p: h.uid for p, h in chosen.items()} == {"non-contrast": "1.1", "nephrographic": "1.2"}
    got = assign_phases(headers, pmap, required=False)
    assert "corticomedullary" not in got  # the arterial series was ignored by the map
    json_map = tmp_path / "map.json"
    json_map.write_text(json.dumps({"1.3": "excretory"}))
    assert (
        assign_phases(headers, read_phase_map(json_map), phases=["excretory"])["excretory"].uid
        == "1.3"
    )


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("m.csv", "uid;phase\n1;nc\n", "needs columns"),
        ("m.csv", "series,phase\n1,sideways\n", "unknown phase 'sideways'"),
        ("m.json", "[1, 2]", "expected an object"),
        ("m.json", "{", "invalid JSON"),
    ],
)
def test_bad_phase_maps(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=message):
        read_phase_map(p)
    with pytest.raises(InputError, match="phase map not found"):
        read_phase_map(tmp_path / "nope.csv")
