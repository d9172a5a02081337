"""True classes of the rows of a prediction table read in batches, from a catalogue of true classes.

The catalogue (a ``label`` or ``bt`` column, :func:`gamornet.evaluate.true_labels`)
is matched to the table as :func:`gamornet.evaluate.evaluate_tables` matches
it: by ``id`` (compared as text), else by the catalogue id of a simulated
galaxy's image id (:func:`gamornet.simulate.galaxy_id`); without an ``id``
column, row by row.

Limit: the catalogue is read whole, and its ids are kept as one sorted
array of text (4 bytes a character, plus 8 bytes a row for the order): about
50 bytes a row for ids of ten characters, so half a gigabyte for a
catalogue of ten million rows.  The prediction table itself is not held.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from gamornet.core.tables import read_table
from gamornet.evaluate import true_labels
from gamornet.simulate import galaxy_id

__all__ = ["TruthLookup"]


class TruthLookup:
    """The true class of each row of a prediction table, batch after batch; :meth:`check` after the last one.

    Parameters
    ----------
    catalog : astropy.table.Table, str or os.PathLike
        True classes (``label`` or ``bt``, and ``id``).
    """

    def __init__(self, catalog):
        table = catalog if isinstance(catalog, Table) else read_table(catalog, "catalog")
        self.labels = true_labels(table, "CATALOG")
        self.by_id = "id" in table.colnames
        self._used, self._absent, self._examples = 0, 0, []
        if self.by_id:
            ids = np.asarray(table["id"]).astype(str)
            self._order = np.argsort(ids, kind="stable")
            self._sorted = ids[self._order]
            self._shown = ids[:3].tolist()

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Catalogue row of each id of equal text, -1 for none."""
        if not len(self._sorted):
            return np.full(len(ids), -1)
        where = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return np.where(self._sorted[where] == ids, self._order[where], -1)

    def __call__(self, ids) -> np.ndarray:
        """True class names of the next rows (with ``ids``); ``""`` for a row the catalogue lacks."""
        ids = np.asarray(ids).astype(str, copy=False)
        if not self.by_id:
            rows = np.arange(self._used, self._used + len(ids))
            self._used += len(ids)
            return np.where(rows < len(self.labels), self.labels[np.minimum(rows, len(self.labels) - 1)], "")
        rows = self._rows(ids)
        missing = np.flatnonzero(rows < 0)
        if len(missing):  # a simulated set's image ids: images.npy:N, gal_NNNNNN.fits -> catalogue id N
            numbers = [galaxy_id(value) for value in ids[missing].tolist()]
            rows[missing] = self._rows(np.array(["" if n is None else str(n) for n in numbers]))
            absent = ids[rows < 0]
            self._absent += len(absent)
            self._examples += absent[:5 - len(self._examples)].tolist()
        return np.where(rows >= 0, self.labels[np.maximum(rows, 0)], "")

    def check(self) -> None:
        """Raise for the table's ids the catalogue lacks, or (without ids) tables of different lengths.

        Raises
        ------
        ValueError
            As :func:`gamornet.evaluate.evaluate_tables` does.
        """
        if self._absent:
            raise ValueError(f"PREDICTIONS ids missing from CATALOG. Received: {self._absent} such ids, e.g. "
                             f"{self._examples} (CATALOG ids e.g. {self._shown})")
        if not self.by_id and self._used != len(self.labels):
            raise ValueError(f"without `id` columns PREDICTIONS and CATALOG must have the same rows. Received: "
                             f"{self._used} and {len(self.labels)} rows")

