"""Scoring classifications against true labels, as in Ghosh et al. (2020).

- :func:`confusion_matrix`: rows are the **true** class, columns the
  **predicted** class, both in the order (disk, indeterminate, bulge).  Besides
  the counts it gives the fractions normalised by predicted class: column ``j``
  of ``fractions`` is the distribution of true classes among galaxies predicted
  ``j`` (each column sums to 1; an empty column is NaN).  So
  ``fractions[0, 0]`` is the disk precision and ``fractions[2, 2]`` the bulge
  precision quoted in the paper (Ghosh et al. 2020).
- :func:`summary`: the paper's headline numbers.
- :func:`threshold_sweep`: accuracy versus completeness as a symmetric
  probability threshold rises (the trade-off of the paper's Figs. 8-9).
- :func:`choose_thresholds`: the disk and bulge thresholds that reach a
  target purity (or completeness) on labelled galaxies; with
  :func:`gamornet.core.thresholds.save_policy` they become a policy file
  (``gamornet evaluate --target-purity P`` writes ``OUTPUT/policy.json``)
  that ``gamornet predict --policy FILE`` applies.
- :func:`true_labels`: the true classes of a catalogue, from its ``label``
  column or its ``bt`` (bulge-to-total) column
  (:func:`gamornet.core.labels.labels_from_bt`).

True labels may be class names or one-hot rows; predictions may be class names
or ``(N, 3)`` probabilities ``[P_disk, P_indeterminate, P_bulge]``, which are
turned into names with :func:`gamornet.core.thresholds.classify_probabilities` and
a policy.
"""

from gamornet.evaluate.choose import check_target, choose_thresholds, class_scores
from gamornet.evaluate.plots import plot_confusion_matrix, plot_threshold_sweep
from gamornet.evaluate.report import (
    DEFAULT_POLICY,
    PROBABILITY_COLUMNS,
    evaluate_tables,
    table_policy,
    true_labels,
    write_report,
)
from gamornet.evaluate.scores import (
    DEFAULT_THRESHOLDS,
    ConfusionMatrix,
    as_class_labels,
    confusion_matrix,
    indeterminate_fraction,
    summary,
    threshold_sweep,
)

__all__ = [
    "ConfusionMatrix",
    "as_class_labels",
    "confusion_matrix",
    "indeterminate_fraction",
    "summary",
    "threshold_sweep",
    "plot_confusion_matrix",
    "plot_threshold_sweep",
    "choose_thresholds",
    "class_scores",
    "check_target",
    "true_labels",
    "evaluate_tables",
    "table_policy",
    "write_report",
    "DEFAULT_POLICY",
    "PROBABILITY_COLUMNS",
    "DEFAULT_THRESHOLDS",
]
