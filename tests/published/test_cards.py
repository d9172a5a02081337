"""Model cards: the published models' facts, reading cards from files, the ``gamornet models --card`` command."""

from __future__ import annotations

import json
import zipfile

import pytest

from gamornet.cli import main
from gamornet.published.cards import (
    CARD_ENTRY,
    SIDECAR_SUFFIX,
    ModelCard,
    bands_match,
    card_for_shape,
    get_card,
    read_card,
    units_match,
    write_card_entry,
)
from gamornet.published.registry import model_names


@pytest.mark.parametrize("name", ["SDSS_sim", "SDSS_tl"])
def test_sdss_cards(name):
    card = get_card(name)
    assert (card.name, card.band, card.pixel_scale_arcsec, card.shape, card.redshift) == (
        name, "SDSS g", 0.396, (167, 167, 1), "z ~ 0")
    assert card.policy == "keras_sdss" and get_card(name, "tflearn").policy == "tflearn_sdss"
    assert card.units is None and "no preprocessing" in card.preprocessing
    assert ("simulations only" in card.training) == name.endswith("_sim")
    assert "transfer learning" in card.training or name.endswith("_sim")


@pytest.mark.parametrize("name", ["CANDELS_sim", "CANDELS_tl"])
def test_candels_cards(name):
    card = get_card(name)
    assert (card.pixel_scale_arcsec, card.shape, card.redshift) == (0.06, (83, 83, 1), "z ~ 1")
    assert "F160W" in card.band and " H" in card.band
    assert card.policy == "keras_candels" and get_card(name, "tflearn").policy == "tflearn_candels"


def test_every_published_model_has_a_card_and_unknown_names_raise():
    assert all(read_card(name) == get_card(name) for name in model_names())
    with pytest.raises(ValueError, match="Received"):
        get_card("SDSS_xx")
    with pytest.raises(ValueError, match="flavor"):
        get_card("SDSS_tl", "torch")


def test_card_for_shape():
    assert card_for_shape((167, 167, 1)).pixel_scale_arcsec == 0.396
    assert card_for_shape((83, 83, 1), "tflearn").policy == "tflearn_candels"
    assert card_for_shape((32, 32, 1)) is None


def test_card_round_trips_through_json_archive_entry_and_sidecar(tmp_path):
    card = ModelCard("mine", band="SDSS r", pixel_scale_arcsec=0.396, shape=(64, 64, 1), units="nanomaggies")
    assert ModelCard.from_dict(json.loads(card.to_json())) == card
    archive = tmp_path / "m.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", "{}")
    assert read_card(archive) is None
    write_card_entry(archive, card)
    assert CARD_ENTRY in zipfile.ZipFile(archive).namelist()
    assert read_card(str(archive)) == card
    h5 = tmp_path / "m.h5"
    h5.write_bytes(b"not a zip")
    assert read_card(h5) is None
    (tmp_path / ("m.h5" + SIDECAR_SUFFIX)).write_text(card.to_json())
    assert read_card(h5) == card
    (tmp_path / ("m.h5" + SIDECAR_SUFFIX)).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not readable"):
        read_card(h5)
    with pytest.raises(ValueError, match="name"):
        ModelCard.from_dict({"band": "g"})


@pytest.mark.parametrize("value", ["g", "SDSS g", "g-band", "G", "sdss_g", "g'"])
def test_g_band_names_match(value):
    assert bands_match(value, "SDSS g")
    assert not bands_match(value, get_card("CANDELS_tl").band)


@pytest.mark.parametrize("value", ["F160W", "H", "WFC3/IR F160W", "h-band"])
def test_h_band_names_match(value):
    assert bands_match(value, get_card("CANDELS_tl").band)
    assert not bands_match(value, "SDSS g")


def test_other_bands_and_units():
    assert not bands_match("r", "SDSS g") and not bands_match("F125W", get_card("CANDELS_tl").band)
    assert units_match("COUNTS", "count") and units_match("nanomaggy ", "nanomaggy")
    assert not units_match("electrons/s", "counts")


def test_models_card_command(capsys, tmp_path):
    assert main(["models", "--card", "SDSS_tl"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Model card: SDSS_tl")
    for text in ("SDSS g", '0.396"/px', "167x167x1", "z ~ 0", "keras_sdss", "transfer learning", "units         not "
                 "stated", "Ghosh et al. (2020)"):
        assert text in out
    assert main(["models", "--card", "CANDELS_sim", "--flavor", "tflearn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pixel_scale_arcsec"] == 0.06 and data["shape"] == [83, 83, 1] and data["policy"] == "tflearn_candels"
    empty = tmp_path / "m.h5"
    empty.write_bytes(b"x")
    assert main(["models", "--card", str(empty)]) == 1
    assert "no model card" in capsys.readouterr().err
    assert main(["models", "--card", str(tmp_path / "missing.keras")]) != 0
    assert "Received: --card=" in capsys.readouterr().err
