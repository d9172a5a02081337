"""``gamornet.utils``: the names GaMorNet 0.4.3 users reach there keep working."""

import numpy as np

from gamornet import utils


def test_presets_as_module_attributes_and_aliases():
    assert utils.INPUT_SHAPES == {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1)}
    assert utils.train_bools_CANDELS == [False] * 3 + [True] * 5
    assert utils.load_bools_SDSS == [True] * 5 + [False] * 3
    presets = utils.train_bools_SDSS
    presets[0] = False  # a copy: the preset itself never changes
    assert utils.train_bools_SDSS == [True] * 8
    assert utils.check_bools("load_bools_CANDELS", "load_layers_bools") == (True,) * 6 + (False,) * 2


def test_thresholds_and_checks_are_reachable():
    labels = utils.classify_probabilities(np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8]]), "keras_sdss")
    assert labels.tolist() == ["disk", "bulge"]
    assert utils.get_policy("tflearn_sdss") is utils.POLICIES["tflearn_sdss"]
    assert isinstance(utils.POLICIES["keras_sdss"], utils.ThresholdPolicy)
    assert utils.check_input_shape("CANDELS") == (83, 83, 1)
    assert utils.is_published_model("SDSS_tl") and not utils.is_published_model("my_model.keras")
    for name in utils.__all__:
        assert getattr(utils, name) is not None, name
