"""Classes from the bulge-to-total ratio, as every reader of labels applies them (training, evaluation, galleries)."""

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from gamornet.core.labels import BT_BOUNDS, labels_from_bt
from gamornet.data.labels import load_labels
from gamornet.evaluate import true_labels

BT = [0.0, 0.2, 0.44, 0.45, 0.5, 0.55, 0.56, 0.9, 1.0]
NAMES = ["disk", "disk", "disk", "indeterminate", "indeterminate", "indeterminate", "bulge", "bulge", "bulge"]


def test_bounds_belong_to_the_indeterminate_class():
    assert BT_BOUNDS == (0.45, 0.55)  # Ghosh et al. (2020): disk < 0.45 <= indeterminate <= 0.55 < bulge
    assert list(labels_from_bt(BT)) == NAMES
    assert list(labels_from_bt(np.array(BT, np.float32))) == NAMES  # float32 0.45 / 0.55 are the bounds as written
    low, high = (np.float64(b) for b in BT_BOUNDS)
    steps = [np.nextafter(low, 0), low, np.nextafter(high, 1), high]
    assert list(labels_from_bt(steps)) == ["disk", "indeterminate", "bulge", "indeterminate"]
    assert list(labels_from_bt(np.array([0, 1]))) == ["disk", "bulge"]  # integers


@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (-0.1, "-0.1"), (1.2, "1.2"), (np.inf, "inf")])
def test_values_that_are_not_ratios_are_refused(bad, shown):
    with pytest.raises(ValueError, match=rf"`bt` must hold bulge-to-total ratios in \[0, 1\]. Received: 1 bad "
                                         rf"value\(s\) of 3: row 1 = {shown}"):
        labels_from_bt([0.3, bad, 0.7])
    masked = MaskedColumn([0.3, 0.5, 0.7], mask=[False, False, True])
    with pytest.raises(ValueError, match="row 2 = masked"):
        labels_from_bt(masked)
    with pytest.raises(ValueError, match=r"1-D array .*Received: dtype=<U"):
        labels_from_bt(["disk"])


def test_catalogues_with_bt_give_the_same_labels_to_training_and_evaluation(tmp_path):
    catalog = Table({"id": np.arange(len(BT)), "bt": BT})
    catalog.write(tmp_path / "train.ecsv")  # as gamornet train / tl --catalog read it
    onehot = load_labels(str(tmp_path / "train.ecsv"), len(BT))
    assert onehot.dtype == np.float32 and np.array_equal(onehot, np.eye(3)[[("disk", "indeterminate", "bulge").index(n)
                                                                             for n in NAMES]])
    assert list(true_labels(catalog)) == NAMES
    with_label = Table({"label": ["Bulge"] * len(BT), "bt": BT})  # a label column wins over bt
    assert list(true_labels(with_label)) == ["bulge"] * len(BT) and load_labels(with_label, len(BT))[:, 2].all()
    with pytest.raises(ValueError, match=r"`training_labels` must hold one class name per image \(4\)"):
        load_labels(catalog, 4)
    bad = Table({"bt": [0.2, 7.0]})
    with pytest.raises(ValueError, match=r"`training_labels column 'bt'` must hold .*row 1 = 7.0"):
        load_labels(bad, 2)
    with pytest.raises(ValueError, match=r"`CATALOG bt` must hold .*row 1 = 7.0"):
        true_labels(bad, "CATALOG")
    with pytest.raises(ValueError, match=r"table needs a `label` or `bt` column. Received: columns \['x'\]"):
        true_labels(Table({"x": [1]}))
