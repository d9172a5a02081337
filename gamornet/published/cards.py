"""Model cards: what images a model expects (band, pixel scale, cutout size, redshift, units) and what it is for.

Every published model has a card (:func:`get_card`); models trained by
``gamornet`` carry theirs inside the saved ``.keras`` archive, as the JSON
entry ``gamornet_card.json`` (:data:`CARD_ENTRY`) beside the Keras
entries, which ``keras.saving.load_model`` ignores.  Any model file may also
have a sidecar ``<model>.card.json`` (:data:`SIDECAR_SUFFIX`), read when the
archive holds no card (HDF5 files, TFLearn checkpoints).  Loading a model
with Keras and saving it again writes a new archive without the card.
:func:`read_card` reads the card of a published name or a model path, without
Keras.

The facts of the published cards are those of Ghosh et al. (2020) and the
GaMorNet handbook; what they do not state is left as ``None``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile

from gamornet.published.registry import FLAVORS, get_model_info, model_names

__all__ = [
    "CARD_ENTRY",
    "SIDECAR_SUFFIX",
    "HANDBOOK_ADVICE",
    "ModelCard",
    "get_card",
    "card_for_shape",
    "read_card",
    "write_card_entry",
    "bands_match",
    "units_match",
]

#: Entry of a ``.keras`` archive holding the model's card (JSON).
CARD_ENTRY = "gamornet_card.json"
#: Ending of the sidecar file holding the card of a model file: ``<model>.card.json``.
SIDECAR_SUFFIX = ".card.json"
REFERENCE = "Ghosh et al. (2020), ApJ 895, 112"

#: The handbook's advice on data unlike the training data (FAQ "Can I run GaMorNet on any galaxy image? No!").
HANDBOOK_ADVICE = {
    "predict": "data like the training data (SDSS g-band at z ~ 0, CANDELS H-band at z ~ 1): predict as is with "
               "the final (_tl) models",
    "transfer": "data in a nearby band at the same redshift: transfer-learn (gamornet tl / gamornet_tl_keras), "
                "starting from both the simulation-only (_sim) and the final (_tl) model, and keep the one with "
                "the better validation accuracy",
    "scratch": "data significantly different in redshift, resolution or another photometric aspect: train a "
               "network from scratch (gamornet train / gamornet_train_keras)",
    "few": "only a handful of galaxies: a light-profile fitting code serves better",
}

_NO_PREPROCESSING = "none: images are given to the network as they are (GaMorNet applies no preprocessing)"


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a model expects of its images, and how it was made.

    Its fields (``None`` where a fact is not stated):

    - ``name``: model name (a published name, or what its trainer called it);
    - ``band``: photometric band of the training images, e.g. ``"SDSS g"``;
    - ``pixel_scale_arcsec``: arcsec per pixel of the training images;
    - ``shape``: input shape ``(height, width, channels)``;
    - ``redshift``: redshift of the training galaxies, e.g. ``"z ~ 0"``;
    - ``units``: pixel units of the training images;
    - ``preprocessing``: scaling the images need before the network (or that
      the model holds);
    - ``policy``: threshold policy of its labels (``None``: the default by
      input shape);
    - ``training``: what it was trained on;
    - ``reference``, ``notes``: where it is described; anything else.
    """

    name: str
    band: str | None = None
    pixel_scale_arcsec: float | None = None
    shape: tuple[int, ...] | None = None
    redshift: str | None = None
    units: str | None = None
    preprocessing: str | None = None
    policy: str | None = None
    training: str | None = None
    reference: str | None = None
    notes: str | None = None

    def as_dict(self) -> dict:
        """The card as JSON-able values."""
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape) if self.shape is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        """A card from :meth:`as_dict` values (unknown keys ignored).

        Raises
        ------
        ValueError
            If ``data`` is not a mapping with a ``name``.
        """
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError(f"A model card must be a mapping with a 'name'. Received: {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("shape") is not None:
            values["shape"] = tuple(int(n) for n in values["shape"])
        if values.get("pixel_scale_arcsec") is not None:
            values["pixel_scale_arcsec"] = float(values["pixel_scale_arcsec"])
        return cls(**values)

    def to_json(self) -> str:
        """The card as a JSON text."""
        return json.dumps(self.as_dict(), indent=1)

    def describe(self) -> str:
        """The card as lines of text, ``not stated`` where a fact is unknown."""
        scale = f'{self.pixel_scale_arcsec:g}"/px' if self.pixel_scale_arcsec is not None else None
        shape = "x".join(map(str, self.shape)) if self.shape is not None else None
        rows = [("band", self.band), ("pixel scale", scale), ("cutout", shape), ("redshift", self.redshift),
                ("units", self.units), ("preprocessing", self.preprocessing), ("policy", self.policy),
                ("training", self.training), ("reference", self.reference), ("notes", self.notes)]
        return "\n".join([f"Model card: {self.name}"] + [f"  {k:<14}{'not stated' if v is None else v}"
                                                         for k, v in rows])


_SURVEYS = {
    "SDSS": dict(band="SDSS g", pixel_scale_arcsec=0.396, shape=(167, 167, 1), redshift="z ~ 0"),
    "CANDELS": dict(band="CANDELS (HST WFC3) H, F160W", pixel_scale_arcsec=0.06, shape=(83, 83, 1),
                    redshift="z ~ 1"),
}
_TRAINING = {
    "sim": "simulations only: about 100,000 simulated {survey} galaxies (Sersic n=4 bulge + exponential disk, "
           "PSF-convolved, real sky noise)",
    "tl": "simulations, then transfer learning on real {survey} galaxies (the final model)",
}


def get_card(name: str, flavor: str = "keras") -> ModelCard:
    """The card of a published model (``SDSS_sim``, ``SDSS_tl``, ``CANDELS_sim``, ``CANDELS_tl``).

    Parameters
    ----------
    name : str
        Published model name.
    flavor : {"keras", "tflearn"}
        Which flavour's threshold policy the card names.

    Raises
    ------
    ValueError
        If ``name`` or ``flavor`` is unknown.
    """
    if name not in model_names():
        raise ValueError(f"`name` must be a published model, one of {model_names()}. Received: name={name!r}")
    info = get_model_info(name, flavor)
    survey, kind = info.input_shape, name.rsplit("_", 1)[1]
    notes = ("Labels from the bulge-to-total light ratio: disk < 0.45 <= indeterminate <= 0.55 < bulge. "
             + ("Use it for SDSS g-band galaxies at z ~ 0, or as a starting point of transfer learning."
                if survey == "SDSS" else
                "Use it for CANDELS H-band galaxies at z ~ 1, or as a starting point of transfer learning."))
    if kind == "sim":
        notes += " Simulation-only: the handbook advises the final (_tl) model for predictions on real data."
    return ModelCard(name=name, **_SURVEYS[survey], units=None, preprocessing=_NO_PREPROCESSING, policy=info.policy,
                     training=_TRAINING[kind].format(survey=survey), reference=REFERENCE, notes=notes)


def card_for_shape(shape, flavor: str = "keras") -> ModelCard | None:
    """The card of the survey whose input shape ``shape`` is (SDSS or CANDELS), for a model file without a card.

    None for any other shape.
    """
    for survey, facts in _SURVEYS.items():
        if tuple(shape) == facts["shape"]:
            return ModelCard(name=f"{survey}-shaped model", **facts, policy=f"{flavor}_{survey.lower()}",
                             notes=f"The model file has no card; these are the facts of the published {survey} "
                                   "models, whose input shape it has.")
    return None


def write_card_entry(archive_path, card: ModelCard) -> None:
    """Add ``card`` to a ``.keras`` archive as :data:`CARD_ENTRY` (the file is appended to, not replaced)."""
    with zipfile.ZipFile(archive_path, "a") as archive:
        archive.writestr(CARD_ENTRY, card.to_json())


def read_card(path_or_name, flavor: str = "keras") -> ModelCard | None:
    """The card of a published model name, or of a model path; None when the model has none.

    A path's card is the :data:`CARD_ENTRY` of its ``.keras`` archive, else
    its sidecar ``<path>.card.json``.  Keras is not imported.

    Raises
    ------
    ValueError
        If the card found is not valid JSON of a card.
    """
    if isinstance(path_or_name, str) and path_or_name in model_names():
        if flavor not in FLAVORS:
            raise ValueError(f"`flavor` must be one of {list(FLAVORS)}. Received: flavor={flavor!r}")
        return get_card(path_or_name, flavor)
    path = os.fspath(path_or_name)
    text = None
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if CARD_ENTRY in archive.namelist():
                text = archive.read(CARD_ENTRY)
    if text is None and os.path.isfile(path + SIDECAR_SUFFIX):
        with open(path + SIDECAR_SUFFIX, "rb") as f:
            text = f.read()
    if text is None:
        return None
    try:
        return ModelCard.from_dict(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"The model card of {path} is not readable ({exc}). Received: path_or_name={path!r}") from None


# ---------------------------------------------------------------- comparisons

#: Words of band names that do not name the band itself.
_BAND_NOISE = frozenset(("sdss", "band", "filter", "hst", "wfc3", "ir", "uvis", "acs", "wfc", "candels", "the"))
#: Names of one band.
_BAND_EQUIVALENTS = (frozenset(("h", "f160w")), frozenset(("j", "f125w")), frozenset(("i", "f814w")),
                     frozenset(("v", "f606w")))


def _band_words(text: str) -> set[str]:
    words = {w for w in re.split(r"[^a-z0-9]+", str(text).lower()) if w} - _BAND_NOISE
    for names in _BAND_EQUIVALENTS:
        if words & names:
            words |= names
    return words


def bands_match(value: str, band: str) -> bool:
    """Whether a header's band name (``g``, ``SDSS g``, ``g-band``, ``F160W``, ``H``...) names ``band``."""
    return bool(_band_words(value) & _band_words(band))


def _unit_key(text: str) -> str:
    key = re.sub(r"\s+", "", str(text).lower())
    return {"counts": "count", "ct": "count", "cts": "count"}.get(key, key)


def units_match(value: str, units: str) -> bool:
    """Whether a header's ``BUNIT`` names ``units`` (case, spaces and ``counts`` / ``count`` / ``ct`` aside)."""
    return _unit_key(value) == _unit_key(units)
