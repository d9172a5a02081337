"""Catalogue columns: which hold RA, Dec and the id, and the positions they give.

RA and Dec are found by name (case ignored) among :data:`RA_NAMES` and
:data:`DEC_NAMES` unless given; they may be numbers in degrees, numbers with
an angle unit (``deg``, ``rad``, ``hourangle``...), or sexagesimal strings
(RA in hours, ``"10:00:28.6"`` or ``"10h00m28.6s"``; Dec in degrees), which
:class:`astropy.coordinates.SkyCoord` parses.  The id comes from
:data:`ID_NAMES` (or ``id_column``); without one, ids are row numbers.
"""

from __future__ import annotations

import os

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from gamornet.core.tables import read_table

__all__ = ["RA_NAMES", "DEC_NAMES", "ID_NAMES", "load_catalog", "find_column", "catalog_positions"]

#: Names of RA columns, in order of preference (case ignored).
RA_NAMES = ("ra", "raj2000", "_raj2000", "ra_j2000", "ra_icrs", "alpha_j2000", "ra_deg", "radeg", "ra2000",
            "alpha", "right_ascension", "ra_d", "ra_degrees", "ra_sexagesimal", "ra_hms")
#: Names of Dec columns, in order of preference (case ignored).
DEC_NAMES = ("dec", "dej2000", "_dej2000", "decj2000", "dec_j2000", "de_icrs", "dec_icrs", "delta_j2000", "dec_deg",
             "decdeg", "dec2000", "delta", "declination", "dec_d", "dec_degrees", "dec_sexagesimal", "dec_dms")
#: Names of id columns, in order of preference (case ignored).
ID_NAMES = ("id", "objid", "obj_id", "object_id", "objectid", "source_id", "sourceid", "specobjid", "galaxy_id",
            "number", "name", "object", "seqnr")


def load_catalog(catalog, name: str = "catalog") -> Table:
    """``catalog`` as a Table: a Table (used as is) or a path read by :func:`gamornet.core.tables.read_table`.

    Column units are kept in every format that stores them (ECSV, FITS, VOTable, Parquet).
    """
    if isinstance(catalog, Table):
        return catalog
    if isinstance(catalog, (str, os.PathLike)):
        return read_table(catalog, name)
    raise TypeError(f"`{name}` must be an astropy Table or a table file path. Received: {name} of type "
                    f"{type(catalog).__name__}")


def find_column(table: Table, given: str | None, names: tuple[str, ...], argument: str,
                required: bool = True) -> str | None:
    """The column ``given`` (checked; case ignored when no other column differs only by case), else the first of
    ``names`` in ``table`` (case ignored).

    Raises
    ------
    ValueError
        If ``given`` is not a column, or (``required``) none of ``names`` is.
    """
    if given is not None:
        alike = [c for c in table.colnames if c.lower() == str(given).lower()]
        if given not in table.colnames and len(alike) == 1:
            return alike[0]
        if given not in table.colnames:
            raise ValueError(f"`{argument}`: no such column in the catalogue (columns: {', '.join(table.colnames)})."
                             f" Received: {argument}={given!r}")
        return given
    lower = {c.lower(): c for c in reversed(table.colnames)}
    for candidate in names:
        if candidate in lower:
            return lower[candidate]
    if required:
        raise ValueError(f"`{argument}`: no column of the catalogue is named like one ({', '.join(names[:8])}...); "
                         f"give it. Received: columns {', '.join(table.colnames)}")
    return None


def _angle_values(column, axis: str, argument: str):
    """A column as a Quantity or strings SkyCoord reads."""
    data = getattr(column, "filled", lambda *a: column)(np.nan) if np.ma.isMaskedArray(column) else column
    if data.dtype.kind in "US" or data.dtype == object:
        values = np.asarray(data).astype(str)
        numeric = np.char.strip(values)
        try:
            return numeric.astype(float) * u.deg
        except ValueError:
            return values  # sexagesimal: SkyCoord parses it
    if data.dtype.kind not in "iuf":
        raise ValueError(f"`{argument}`: the {axis} column must hold numbers or sexagesimal strings. "
                         f"Received: {column.name!r} of dtype {data.dtype}")
    unit = column.unit if getattr(column, "unit", None) is not None else u.deg
    try:
        return u.Quantity(np.asarray(data, dtype=float), unit).to(u.deg)
    except u.UnitsError:
        raise ValueError(f"`{argument}`: the {axis} column's unit is not an angle. Received: {column.name!r} "
                         f"in {unit}") from None


def catalog_positions(table: Table, ra_column: str | None = None, dec_column: str | None = None,
                      id_column: str | None = None) -> tuple[SkyCoord, np.ndarray, dict]:
    """Positions and ids of the rows of ``table``.

    Returns
    -------
    coords : astropy.coordinates.SkyCoord
        ICRS positions, one per row (NaN where a row has none).
    ids : numpy.ndarray
        The id column's values, else row numbers.
    columns : dict
        ``{"ra": name, "dec": name, "id": name or None}``: the columns used.

    Raises
    ------
    ValueError
        If a column is missing or cannot be read as an angle.
    """
    ra_name = find_column(table, ra_column, RA_NAMES, "ra_column")
    dec_name = find_column(table, dec_column, DEC_NAMES, "dec_column")
    id_name = find_column(table, id_column, ID_NAMES, "id_column", required=False)
    ra = _angle_values(table[ra_name], "RA", "ra_column")
    dec = _angle_values(table[dec_name], "Dec", "dec_column")
    try:
        if isinstance(ra, u.Quantity) and isinstance(dec, u.Quantity):
            coords = SkyCoord(ra, dec, frame="icrs")
        else:
            coords = SkyCoord(ra, dec, unit=(u.hourangle, u.deg), frame="icrs")
    except ValueError as exc:
        raise ValueError(f"`ra_column` / `dec_column`: positions could not be read ({exc}). Received: columns "
                         f"{ra_name!r}, {dec_name!r}, first row {table[ra_name][0]!r}, {table[dec_name][0]!r}")\
            from None
    ids = np.asarray(table[id_name]) if id_name is not None else np.arange(len(table))
    return coords, ids, {"ra": ra_name, "dec": dec_name, "id": id_name}
