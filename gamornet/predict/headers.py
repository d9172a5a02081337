"""Do the input images fit the model?  Their FITS headers compared with the model's card.

Before anything is predicted, :func:`check_input_headers` reads the headers
(never the pixels) of a few FITS inputs: the first file (in sorted order) of
each folder the inputs come from, which is enough for cutouts made alike.
From each it takes

- the pixel scale, from the WCS (``CDELT`` or ``CD`` keywords, rotated or not:
  :func:`astropy.wcs.utils.proj_plane_pixel_scales`), else a ``PIXSCALE``
  keyword in arcsec (as ``gamornet simulate`` writes it);
- the band, from ``FILTER`` (or ``BAND``);
- the pixel units, from ``BUNIT``;

and compares them with the model's card
(:func:`gamornet.published.cards.read_card`; for a model file without a card,
the card of the survey its input shape names, SDSS or CANDELS).  Pixel
scales match within 1%; band names loosely (``g``, ``SDSS g`` and ``g-band``
are one band, ``F160W`` and ``H`` another); units only when the card states
them.  Mismatches give one :class:`InputMismatchWarning` per run listing
each, with the handbook's advice (its FAQ: "Can I run GaMorNet on any galaxy
image? No!"), or with ``strict=True`` an :class:`InputMismatchError`.
Arrays, ``.npy`` stacks and headers without these keywords are not checked.

On the catalogue route (``predict_files(catalog=..., images=...)``) the
headers read are those of the survey images the rows are cut from (each
image holding at least one row of the run, its image HDU as the cut reads
it; a remote image's headers are those read when it was opened, not fetched
again).  The cutouts are on the
model's grid whatever the images' pixel scale, so a different native scale
is reported as such: the cutouts were resampled from it, which matches the
model's pixels but not the resolution of its training images.  A grid
whose scale differs from the card's (``pixel_scale`` given) is reported as
the cutouts' scale.  Band and units are compared as
for image files.  For a model file without a card, the card is that of the
``survey`` of the grid (``--survey``, or the ``input_shape`` alias), else
that of its input shape.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from gamornet.predict.fits import read_image_header
from gamornet.predict.inputs import BadImageError
from gamornet.published.cards import (
    HANDBOOK_ADVICE,
    ModelCard,
    bands_match,
    card_for_shape,
    get_card,
    read_card,
    units_match,
)
from gamornet.published.models import is_published_model

__all__ = ["InputMismatchWarning", "InputMismatchError", "header_facts", "model_card", "check_input_headers"]

#: Relative difference of pixel scales still taken as the same.
SCALE_TOLERANCE = 0.01
_SCALE_KEYS = frozenset(("CDELT1", "CDELT2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"))


class InputMismatchWarning(UserWarning):
    """The input images differ from the model's training images (pixel scale, band or units)."""


class InputMismatchError(ValueError):
    """With ``strict=True``: the input images differ from the model's training images."""


def _wcs_scale(header) -> float | None:
    """Mean pixel scale (arcsec) of the two image axes of a header's WCS."""
    from astropy import units as u
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wcs = WCS(header, naxis=2)
            scales = proj_plane_pixel_scales(wcs)
        except Exception:  # a WCS astropy cannot read: no scale
            return None
    arcsec = []
    for scale, unit in zip(scales, wcs.wcs.cunit):
        try:
            factor = u.Unit(str(unit) or "deg").to(u.arcsec)
        except (ValueError, u.UnitConversionError):
            factor = 3600.0  # FITS default for celestial axes: degrees
        arcsec.append(abs(float(scale)) * factor)
    return sum(arcsec) / len(arcsec) if arcsec and all(s > 0 for s in arcsec) else None


def header_facts(header) -> dict:
    """``pixel_scale`` (arcsec), ``band`` and ``units`` of a FITS header, each None where it has none."""
    scale = _wcs_scale(header) if _SCALE_KEYS & set(header.keys()) else None
    if scale is None and isinstance(header.get("PIXSCALE"), (int, float)) and header["PIXSCALE"] > 0:
        scale = float(header["PIXSCALE"])
    band = next((str(header[k]).strip() for k in ("FILTER", "BAND") if str(header.get(k, "")).strip()), None)
    units = str(header["BUNIT"]).strip() if str(header.get("BUNIT", "")).strip() else None
    return {"pixel_scale": scale, "band": band, "units": units}


def model_card(label: str, flavor: str, shape) -> ModelCard | None:
    """The card to check inputs against: a published model's, a model file's own, or that of its input shape."""
    if is_published_model(label):
        return get_card(label, flavor)
    try:
        card = read_card(label)
    except (OSError, ValueError):
        card = None
    return card if card is not None else card_for_shape(shape, flavor)


def _mismatches(facts: dict, card: ModelCard, where: str) -> list[tuple[str, str]]:
    """(kind, message) of each way one header differs from the card."""
    found = []
    scale, model_scale = facts["pixel_scale"], card.pixel_scale_arcsec
    if scale is not None and model_scale and abs(scale - model_scale) > SCALE_TOLERANCE * model_scale:
        found.append((f"scale:{scale:.4g}", f'pixel scale {scale:.4g}"/px ({where}) differs from the model\'s '
                                            f'{model_scale:g}"/px: for {HANDBOOK_ADVICE["scratch"]}'))
    if facts["band"] is not None and card.band and not bands_match(facts["band"], card.band):
        found.append((f"band:{facts['band']}", f"band {facts['band']!r} ({where}) differs from the model's "
                                               f"{card.band}: for {HANDBOOK_ADVICE['transfer']}; for "
                                               f"{HANDBOOK_ADVICE['scratch']}"))
    if facts["units"] is not None and card.units and not units_match(facts["units"], card.units):
        found.append((f"units:{facts['units']}", f"units {facts['units']!r} ({where}) differ from the model's "
                                                 f"{card.units}: GaMorNet applies no preprocessing, so the pixels "
                                                 "must be in the units of its training images"))
    return found


def _sample_paths(refs) -> list[str]:
    """The first FITS file (sorted) of each folder the images come from."""
    firsts: dict[str, str] = {}
    for path in sorted({ref.source.path for ref in refs if ref.source.kind == "fits"}):
        firsts.setdefault(os.path.dirname(path), path)
    return list(firsts.values())


def _cut_plans(refs) -> list[tuple[object, np.ndarray]]:
    """``(plan, tile indices)`` of each catalogue among ``refs``: the survey images holding one of their rows."""
    plans: dict[int, tuple[object, list[int]]] = {}
    for ref in refs:
        if ref.source.kind == "cutout" and ref.source.cutting is not None:
            plans.setdefault(id(ref.source.cutting), (ref.source.cutting, []))[1].append(ref.index)
    out = []
    for plan, rows in plans.values():
        used = np.unique(np.asarray(plan.tile_index)[np.asarray(rows, dtype=np.intp)])
        out.append((plan, used[used >= 0]))
    return out


def _grid_card(label: str, flavor: str, shape, survey: str | None) -> ModelCard | None:
    """The card of the catalogue route: the model's own, else that of the grid's ``survey``, else of ``shape``."""
    if survey is not None and not is_published_model(label):
        try:
            card = read_card(label)
        except (OSError, ValueError):
            card = None
        if card is None:
            from gamornet.simulate.config import SURVEYS

            survey_card = card_for_shape((*SURVEYS[survey].shape, 1), flavor)
            if survey_card is not None:
                return dataclasses.replace(survey_card, name=f"{survey} grid", notes=None)
    return model_card(label, flavor, shape)


def _differs(scale: float, reference: float) -> bool:
    return abs(scale - reference) > SCALE_TOLERANCE * reference


def _tile_mismatches(plan, tiles, card: ModelCard) -> list[tuple[str, str]]:
    """(kind, message) of each way the survey images ``tiles`` of ``plan`` (or its grid) differ from the card."""
    found = []
    grid_scale, model_scale = plan.grid.pixel_scale, card.pixel_scale_arcsec
    if model_scale and _differs(grid_scale, model_scale):
        found.append((f"grid:{grid_scale:.4g}", f'pixel scale {grid_scale:.4g}"/px of the cutouts (pixel_scale) '
                                                f'differs from the model\'s {model_scale:g}"/px: for '
                                                f'{HANDBOOK_ADVICE["scratch"]}'))
    for k in tiles:
        tile = plan.tiles[k]  # opened with the plan: a remote image's headers are not read again
        try:
            facts = header_facts(tile.header)  # of the image HDU the cuts read
        except (OSError, ValueError):
            continue  # the cut reports unreadable images
        scale, where = tile.scale, f"survey image {tile.name}"
        if model_scale and _differs(scale, model_scale) and _differs(scale, grid_scale):
            found.append((f"scale:{scale:.4g}", f'pixel scale {scale:.4g}"/px ({where}) differs from the model\'s '
                                                f'{model_scale:g}"/px: the cutouts were resampled from it to '
                                                f'{grid_scale:g}"/px (flux conserved), which gives them the model\'s '
                                                'pixel grid but not the resolution of its training images: for '
                                                f'{HANDBOOK_ADVICE["scratch"]}'))
        found += _mismatches({**facts, "pixel_scale": None}, card, where)
    return found


def _found(refs, label: str, flavor: str, shape, hdu) -> tuple[ModelCard | None, dict[str, str], str]:
    """The card, the mismatches found (by kind) and what was read, for the images of ``refs``."""
    paths, plans = _sample_paths(refs), _cut_plans(refs)
    survey = next((plan.grid.survey for plan, _ in plans if plan.grid.survey), None)
    card = _grid_card(label, flavor, shape, survey) if paths or plans else None
    found: dict[str, str] = {}
    if card is None:
        return None, found, ""
    for path in paths:
        try:
            facts = header_facts(read_image_header(path, hdu))
        except BadImageError:
            continue  # the scan reports unreadable files
        for kind, message in _mismatches(facts, card, os.path.basename(path)):
            found.setdefault(kind, message)
    for plan, tiles in plans:
        for kind, message in _tile_mismatches(plan, tiles, card):
            found.setdefault(kind, message)
    read = [f"{len(paths)} FITS file(s) read, the first of each folder"] if paths else []
    read += [f"{sum(len(t) for _, t in plans)} survey image(s) read, those the cutouts come from"] if plans else []
    return card, found, "; ".join(read)


def check_input_headers(refs, label: str, flavor: str, shape, hdu=None, strict: bool = False) -> list[str]:
    """Compare the headers of a few FITS inputs with the model's card; warn once (or raise) on mismatches.

    Parameters
    ----------
    refs : list of gamornet.predict.inputs.ImageRef
        The images of the run; only FITS files are looked at, one per folder, and for the rows of a catalogue
        (kind ``"cutout"``) the survey images they are cut from.
    label : str
        Published model name or model path.
    flavor : str
    shape : tuple
        The model's input shape (chooses the card of a model file without one).
    hdu : int or str, optional
        The image HDU read.
    strict : bool
        Raise instead of warning.

    Returns
    -------
    list of str
        The mismatches found (empty when the inputs fit, or cannot be checked).

    Raises
    ------
    InputMismatchError
        With ``strict=True``, if any header differs from the card.
    """
    card, found, read = _found(refs, label, flavor, shape, hdu)
    if card is None or not found:
        return []
    messages = list(found.values())
    text = (f"The input images may not fit the model {card.name} (headers of {read}):\n- " + "\n- ".join(messages)
            + "\nThe handbook's FAQ, 'Can I run GaMorNet on any galaxy image? No!': for "
            f"{HANDBOOK_ADVICE['predict']}; for {HANDBOOK_ADVICE['few']}.")
    if strict:
        raise InputMismatchError(f"{text} Received: strict=True")
    warnings.warn(text, InputMismatchWarning, stacklevel=5)
    return messages
