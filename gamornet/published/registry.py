"""The published GaMorNet models (Ghosh et al. 2020 public data release).

One table: name, flavour, files relative to the authors' server, the input
shape each model expects and the threshold policy of its prediction tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from gamornet.weights.paths import CHECKPOINT_SUFFIXES

__all__ = [
    "DEFAULT_BASE_URL",
    "MIRRORS",
    "MANUAL_DOWNLOAD_HELP",
    "PublishedModel",
    "MODELS",
    "FLAVORS",
    "get_model_info",
    "model_names",
]

#: The authors' FTP server; ``GAMORNET_MODELS_URL`` replaces it.
DEFAULT_BASE_URL = "ftp://ftp.astro.yale.edu/pub/aghosh/"

#: Servers holding the published tree (same layout under each), tried in order
#: when neither ``GAMORNET_MODELS_URL`` nor an explicit list is given.
MIRRORS: tuple[str, ...] = (DEFAULT_BASE_URL,)

#: Where to get the files by hand when no server answers (the FTP server had
#: outages; the authors then published the same tree as one archive).
MANUAL_DOWNLOAD_HELP = (
    "The authors also published the same tree as a single archive (see the public data release page of "
    "the GaMorNet documentation, https://gamornet.readthedocs.io): download it and copy the file(s) to the "
    "cache path(s) shown, keeping their names, or pass the local path of the model as `model_load_path`."
)

FLAVORS: tuple[str, str] = ("keras", "tflearn")



@dataclass(frozen=True)
class PublishedModel:
    """One published model in one flavour.

    Attributes
    ----------
    name : str
        ``SDSS_sim``, ``SDSS_tl``, ``CANDELS_sim`` or ``CANDELS_tl``.
    flavor : str
        ``"keras"`` (one HDF5 file) or ``"tflearn"`` (a TF1 checkpoint).
    path : str
        For Keras, the file; for TFLearn, the checkpoint prefix; relative to
        the base URL.
    input_shape : str
        Input-shape alias the model expects (``"SDSS"`` or ``"CANDELS"``).
    policy : str
        Threshold policy of the published prediction tables.
    sha256 : dict
        Known SHA-256 digests by relative file path (empty where unknown).
    """

    name: str
    flavor: str
    path: str
    input_shape: str
    policy: str
    sha256: tuple[tuple[str, str], ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """Relative paths of every file that makes up the model."""
        if self.flavor == "keras":
            return (self.path,)
        return tuple(self.path + s for s in CHECKPOINT_SUFFIXES)


def _keras(name: str, path: str, shape: str) -> PublishedModel:
    return PublishedModel(name, "keras", "gamornet_keras/trained_models/" + path, shape, f"keras_{shape.lower()}")


def _tflearn(name: str, path: str, shape: str) -> PublishedModel:
    return PublishedModel(name, "tflearn", "gamornet/trained_models/" + path, shape, f"tflearn_{shape.lower()}")


MODELS: dict[tuple[str, str], PublishedModel] = {
    (m.name, m.flavor): m
    for m in (
        _keras("SDSS_sim", "SDSS/sim_trained/model_sdss_sim_trained.h5", "SDSS"),
        _keras("SDSS_tl", "SDSS/tl/model_sdsss_tl.hdf5", "SDSS"),
        _keras("CANDELS_sim", "CANDELS/sim_trained/model_candels_sim_trained.hdf5", "CANDELS"),
        _keras("CANDELS_tl", "CANDELS/tl/model_candels_tl.hdf5", "CANDELS"),
        _tflearn("SDSS_sim", "SDSS/sim_trained/check-1405593", "SDSS"),
        _tflearn("SDSS_tl", "SDSS/tl/check-1546293", "SDSS"),
        _tflearn("CANDELS_sim", "CANDELS/sim_trained/check-562800", "CANDELS"),
        _tflearn("CANDELS_tl", "CANDELS/tl/check-571275", "CANDELS"),
    )
}


def model_names() -> list[str]:
    """Names of the published models, each available in both flavours."""
    return sorted({name for name, _ in MODELS})


def get_model_info(name: str, flavor: str = "keras") -> PublishedModel:
    """Registry entry of a published model.

    Raises
    ------
    ValueError
        If ``name`` or ``flavor`` is unknown.
    """
    if flavor not in FLAVORS:
        raise ValueError(f"`flavor` must be one of {list(FLAVORS)}. Received: flavor={flavor!r}")
    try:
        return MODELS[(name, flavor)]
    except KeyError:
        raise ValueError(
            f"`model_load_path`={name!r} is not a published model; known names are {model_names()}."
        ) from None
