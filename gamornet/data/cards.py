"""The model card of a model being trained: what its training data says about the survey, and what was given.

A trained model's card (:class:`gamornet.published.cards.ModelCard`) records
the band and pixel scale of its training images where known: given
(``card=``, ``gamornet train --band --pixel-scale``), else from the
simulator's settings of a :class:`~gamornet.data.SimulatedSource` (its
:class:`~gamornet.simulate.SurveyConfig`), else unknown (``None``).
"""

from __future__ import annotations

import dataclasses

from gamornet.published.cards import ModelCard
from gamornet.simulate import SurveyConfig

__all__ = ["PRESET_BANDS", "card_of_survey", "training_card"]

#: Band of the simulator's presets (SDSS g at z ~ 0, CANDELS H at z ~ 1, as in Ghosh et al. 2020).
PRESET_BANDS = {"SDSS": "SDSS g", "CANDELS": "CANDELS (HST WFC3) H, F160W"}


def card_of_survey(config: SurveyConfig) -> dict:
    """Card fields known from the simulator's settings: pixel scale, and the band of a preset."""
    return {"pixel_scale_arcsec": float(config.pixel_scale), "band": PRESET_BANDS.get(config.name),
            "training": f"simulated {config.name} galaxies (gamornet.simulate, "
                        f'{config.pixel_scale:g}"/px)'}


def _given(card) -> dict:
    if card is None:
        return {}
    if isinstance(card, ModelCard):
        return {k: v for k, v in card.as_dict().items() if v is not None}
    known = {f.name for f in dataclasses.fields(ModelCard)}
    if not isinstance(card, dict) or not set(card) <= known:
        raise ValueError(f"`card` must be None, a ModelCard or a dict with keys among {sorted(known)}. "
                         f"Received: card={card!r}")
    return {k: v for k, v in card.items() if v is not None}


def training_card(card, source, shape, start: str | None = None, preprocessing: dict | None = None,
                  transfer: bool = False) -> ModelCard:
    """The card saved with a model trained on ``source``.

    Parameters
    ----------
    card : None, ModelCard or dict
        Facts given by the user (they win over what the data says).
    source : gamornet.data.Source
        The training data (a :class:`~gamornet.data.SimulatedSource` tells its survey's pixel scale and band).
    shape : tuple
        Input shape.
    start : str, optional
        The starting model (published name or path), if any.
    preprocessing : dict, optional
        The pixel scaling stored in the model.
    transfer : bool
        Transfer learning (else training from scratch or continued).

    Raises
    ------
    ValueError
        If ``card`` is not a card, a dict of card fields or None.
    """
    given = _given(card)
    config = getattr(source, "config", None)
    derived = card_of_survey(config) if isinstance(config, SurveyConfig) else {}
    how = (f"transfer learning from {start}" if transfer else
           f"training continued from {start}" if start is not None else "trained from scratch")
    what = derived.pop("training", None)
    fields = {
        "name": "trained_model",
        "shape": tuple(int(n) for n in shape),
        "preprocessing": (f"stored in the model ({preprocessing}): it takes raw pixels" if preprocessing else
                          "none: images are given to the network as they are"),
        "training": f"{how}, on {what or 'data not described'}",
        **{k: v for k, v in derived.items() if v is not None},
        **given,
    }
    return ModelCard.from_dict(fields)
