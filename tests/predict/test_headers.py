"""Inputs checked against the model's card from their FITS headers (pixel scale, FILTER, BUNIT) before predicting."""

from __future__ import annotations

import math
import os
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits

from gamornet.predict import predict_files
from gamornet.predict.headers import (
    InputMismatchError,
    InputMismatchWarning,
    check_input_headers,
    header_facts,
    model_card,
)
from gamornet.predict.inputs import list_images
from gamornet.published.cards import ModelCard, read_card, write_card_entry

from helpers import NARROW_WIDTHS, saved_keras_model

SHAPE = (32, 32, 1)


def _header(scale=None, rotation=None, **keys) -> fits.Header:
    """A header with a TAN WCS of ``scale`` arcsec/px (CDELT, or a CD matrix rotated by ``rotation`` degrees)."""
    header = fits.Header()
    if scale is not None:
        header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0, CRPIX1=16.0, CRPIX2=16.0)
        s = scale / 3600
        if rotation is None:
            header.update(CDELT1=-s, CDELT2=s)
        else:
            c, n = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
            header.update(CD1_1=-s * c, CD1_2=s * n, CD2_1=s * n, CD2_2=s * c)
    header.update(keys)
    return header


def _fits_files(directory, n=3, **header) -> str:
    os.makedirs(directory, exist_ok=True)
    image = np.random.default_rng(0).normal(10, 3, SHAPE[:2]).astype(np.float32)
    for i in range(n):
        fits.writeto(os.path.join(directory, f"g{i:02d}.fits"), image, _header(**header), overwrite=True)
    return str(directory)


def _check(inputs, model="SDSS_tl", shape=(167, 167, 1), **kwargs) -> list[warnings.WarningMessage]:
    refs, _ = list_images(inputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_input_headers(refs, model, "keras", shape, **kwargs)
    return [w for w in caught if issubclass(w.category, InputMismatchWarning)]


@pytest.mark.parametrize("rotation", [None, 0.0, 33.0, 90.0])
def test_sdss_scale_fits_an_sdss_model(tmp_path, rotation):
    assert header_facts(_header(0.396, rotation))["pixel_scale"] == pytest.approx(0.396)
    assert _check(_fits_files(tmp_path, scale=0.396, rotation=rotation, FILTER="g")) == []
    assert _check(_fits_files(tmp_path / "b", scale=0.399, rotation=rotation, FILTER="SDSS g")) == []  # within 1%


def test_candels_scale_warns_once_naming_both_scales(tmp_path):
    inputs = [_fits_files(tmp_path / "a", n=12, scale=0.06, rotation=20.0),
              _fits_files(tmp_path / "b", n=5, scale=0.06)]
    caught = _check(inputs)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert '0.06"/px' in text and '0.396"/px' in text and "from scratch" in text
    assert "Can I run GaMorNet on any galaxy image? No!" in text
    assert "2 FITS file(s)" in text
    assert _check(inputs, model="CANDELS_tl", shape=(83, 83, 1)) == []


def test_filter_and_units_mismatch(tmp_path):
    caught = _check(_fits_files(tmp_path, scale=0.396, FILTER="r"))
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "band 'r'" in text and "SDSS g" in text and "transfer-learn" in text and "(_sim) and the final (_tl)" in text
    assert "pixel scale" not in text
    assert _check(_fits_files(tmp_path / "h", FILTER="F160W"), model="CANDELS_sim", shape=(83, 83, 1)) == []
    assert _check(_fits_files(tmp_path / "b", BAND="H")) != []
    assert _check(_fits_files(tmp_path / "u", BUNIT="nanomaggy")) == []  # the published cards state no units


def test_strict_raises(tmp_path):
    inputs = _fits_files(tmp_path, scale=0.06, FILTER="F160W")
    with pytest.raises(InputMismatchError, match="Received: strict=True") as info:
        _check(inputs, strict=True)
    assert "pixel scale" in str(info.value) and "band 'F160W'" in str(info.value)


def test_inputs_without_keywords_are_not_checked(tmp_path):
    np.save(tmp_path / "stack.npy", np.zeros((3, *SHAPE), np.float32))
    assert _check(str(tmp_path / "stack.npy")) == []
    assert _check(np.zeros((2, *SHAPE), np.float32)) == []
    assert _check(_fits_files(tmp_path / "plain")) == []
    assert header_facts(fits.Header()) == {"pixel_scale": None, "band": None, "units": None}
    assert header_facts(_header(PIXSCALE=0.06))["pixel_scale"] == 0.06


def test_model_file_without_card_gets_the_card_of_its_shape(tmp_path):
    path = str(tmp_path / "model.keras")
    assert model_card(path, "keras", (167, 167, 1)).pixel_scale_arcsec == 0.396
    assert model_card(path, "tflearn", (83, 83, 1)).policy == "tflearn_candels"
    assert model_card(path, "keras", SHAPE) is None


@pytest.fixture(scope="module")
def carded_model(tmp_path_factory) -> str:
    """A narrow model of SHAPE whose card says SDSS g at 0.396"/px."""
    directory = tmp_path_factory.mktemp("carded")
    path = saved_keras_model(directory, SHAPE, seed=1, widths=NARROW_WIDTHS)
    carded = str(directory / "carded.keras")
    shutil.copy(path, carded)
    write_card_entry(carded, ModelCard("carded", band="SDSS g", pixel_scale_arcsec=0.396, shape=SHAPE))
    return carded


def test_predict_files_checks_headers_once(tmp_path, carded_model):
    assert read_card(carded_model).band == "SDSS g"
    opts = {"input_shape": SHAPE, "progress": False, "engine": "keras", "chunk_size": 2}
    fitting = _fits_files(tmp_path / "fit", n=4, scale=0.396, FILTER="g")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(predict_files(fitting, carded_model, **opts)) == 4
    assert not [w for w in caught if issubclass(w.category, InputMismatchWarning)]
    other = _fits_files(tmp_path / "hst", n=6, scale=0.06)
    with pytest.warns(InputMismatchWarning) as record:
        assert len(predict_files(other, carded_model, **opts)) == 6
    assert len([w for w in record if issubclass(w.category, InputMismatchWarning)]) == 1
    output = str(tmp_path / "out.ecsv")
    with pytest.raises(InputMismatchError, match="strict"):
        predict_files(other, carded_model, output=output, strict=True, **opts)
    assert not os.path.exists(output) and not os.path.exists(output + ".chunks")
    with pytest.raises(ValueError, match="Received: strict="):
        predict_files(other, carded_model, strict="yes", **opts)


# ---------------------------------------------------------------- the catalogue route: the survey images' headers

TILE_SHAPE = (64, 64)


def _catalog_refs(directory, tiles: list[dict], grid=None, rows=((150.0, 2.0),)):
    """The refs of a catalogue of ``rows`` cut from tiles (each a dict of scale, centre and header keywords)."""
    from astropy.table import Table

    from gamornet.cutouts import model_grid
    from gamornet.predict.catalog import open_catalog

    from helpers import tan_wcs, write_tile

    os.makedirs(directory, exist_ok=True)
    paths = []
    for k, spec in enumerate(tiles):
        keys = dict(spec)
        scale, (ra, dec) = keys.pop("scale"), keys.pop("centre", (150.0, 2.0))
        wcs = tan_wcs(ra, dec, scale, TILE_SHAPE)
        paths.append(write_tile(os.path.join(directory, f"tile{k}.fits"), wcs, np.ones(TILE_SHAPE), **keys))
    table = Table({"ra": [r[0] for r in rows], "dec": [r[1] for r in rows]})
    grid = grid or model_grid(pixel_scale=0.4, size=31)
    return open_catalog(table, paths, grid).refs()


@pytest.fixture
def survey_card(tmp_path) -> str:
    """A model path with only a card (sidecar): SDSS g, 0.4"/px, 31 x 31, nanomaggy."""
    path = str(tmp_path / "survey_model.keras")
    card = ModelCard("survey model", band="SDSS g", pixel_scale_arcsec=0.4, shape=(31, 31, 1), units="nanomaggy")
    with open(path + ".card.json", "w") as f:
        f.write(card.to_json())
    return path


def _tile_check(refs, model, shape=(31, 31, 1), **kwargs) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_input_headers(refs, model, "keras", shape, **kwargs)
    return [w for w in caught if issubclass(w.category, InputMismatchWarning)]


def test_catalogue_tiles_fitting_the_card_give_no_warning(tmp_path, survey_card):
    refs = _catalog_refs(tmp_path, [{"scale": 0.4, "FILTER": "g", "BUNIT": "nanomaggy"}])
    assert _tile_check(refs, survey_card) == []
    rotated = _catalog_refs(tmp_path / "r", [{"scale": 0.402, "FILTER": "SDSS g"}])  # within 1%, no BUNIT
    assert _tile_check(rotated, survey_card) == []


def test_catalogue_tiles_at_another_scale_were_resampled(tmp_path, survey_card):
    refs = _catalog_refs(tmp_path, [{"scale": 0.06, "FILTER": "g"}, {"scale": 0.06, "centre": (151.0, 2.0)}])
    caught = _tile_check(refs, survey_card)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert 'pixel scale 0.06"/px (survey image tile0.fits) differs from the model\'s 0.4"/px' in text
    assert 'resampled from it to 0.4"/px' in text and "from scratch" in text
    assert "1 survey image(s)" in text and "tile1.fits" not in text  # a tile holding no row is not read
    assert "band 'g'" not in text and "of the cutouts" not in text
    with pytest.raises(InputMismatchError, match="(?s)resampled.*Received: strict=True"):
        check_input_headers(refs, survey_card, "keras", (31, 31, 1), strict=True)


def test_catalogue_tiles_band_and_units_warn_as_files_do(tmp_path, survey_card):
    refs = _catalog_refs(tmp_path, [{"scale": 0.4, "FILTER": "r", "BUNIT": "e-/s"}])
    caught = _tile_check(refs, survey_card)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "band 'r' (survey image tile0.fits) differs from the model's SDSS g" in text
    assert "units 'e-/s' (survey image tile0.fits) differ from the model's nanomaggy" in text
    assert "pixel scale" not in text


def test_catalogue_grid_scale_given_and_the_survey_card(tmp_path, survey_card):
    from gamornet.cutouts import model_grid

    grid = model_grid(pixel_scale=0.5, size=31)  # pixel_scale given: not the card's
    caught = _tile_check(_catalog_refs(tmp_path, [{"scale": 0.5}], grid=grid), survey_card)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert 'pixel scale 0.5"/px of the cutouts (pixel_scale) differs from the model\'s 0.4"/px' in text
    # a model file without a card, the grid of --survey SDSS (its size replaced): the SDSS card
    sdss = model_grid("SDSS", size=31)
    refs = _catalog_refs(tmp_path / "s", [{"scale": 0.25}], grid=sdss)
    caught = _tile_check(refs, str(tmp_path / "plain.keras"))
    assert len(caught) == 1
    text = str(caught[0].message)
    assert 'pixel scale 0.25"/px (survey image tile0.fits) differs from the model\'s 0.396"/px' in text
    assert "SDSS grid" in text
    assert _tile_check(_catalog_refs(tmp_path / "f", [{"scale": 0.396, "FILTER": "g"}], grid=sdss),
                       str(tmp_path / "plain.keras")) == []
    # without a card, a survey or a survey's shape: nothing to compare with
    assert _tile_check(_catalog_refs(tmp_path / "n", [{"scale": 0.25}]), str(tmp_path / "plain.keras")) == []
