import pytest

from gamornet.core import network
from gamornet.utils import INPUT_SHAPES


@pytest.mark.parametrize("alias,params,flat", [("SDSS", 58_270_403, 9216), ("CANDELS", 29_958_851, 2304)])
def test_parameter_counts_from_the_description(alias, params, flat):
    shape = INPUT_SHAPES[alias]
    assert network.count_params(shape) == params
    flatten = [s for spec, s in zip(network.LAYERS, network.feature_map_shape(shape)) if spec.kind == "flatten"]
    assert flatten == [(flat,)]


@pytest.mark.parametrize("alias,params", [("SDSS", 58_270_403), ("CANDELS", 29_958_851)])
def test_parameter_counts_of_built_keras_model(alias, params):
    from gamornet.keras_module import gamornet_build_model_keras

    model = gamornet_build_model_keras(alias)
    assert model.count_params() == params
    assert model.output_shape == (None, 3)


def test_weighted_layers_are_the_papers():
    assert network.WEIGHTED_LAYER_NUMBERS == (2, 5, 8, 9, 10, 13, 15, 17)
    assert [s.kind for s in network.WEIGHTED_LAYERS] == ["conv"] * 5 + ["dense"] * 3
    assert [s.number for s in network.LAYERS if s.number] == list(range(2, 18))


def test_forward_flops_match_published_cost():
    assert network.forward_flops(INPUT_SHAPES["SDSS"]) / 1e9 == pytest.approx(1.44, abs=0.01)
    assert network.forward_flops(INPUT_SHAPES["CANDELS"]) / 1e9 == pytest.approx(0.43, abs=0.01)


def test_tflearn_variable_names():
    assert network.tflearn_variable_prefixes() == [
        "Conv2D", "Conv2D_1", "Conv2D_2", "Conv2D_3", "Conv2D_4", "FullyConnected", "FullyConnected_1",
        "FullyConnected_2",
    ]


def test_keras_model_layers_follow_the_description():
    from gamornet.keras_backend.model import build_keras_model, weighted_layers

    model = build_keras_model((32, 32, 1), lrn="tflearn")
    names = [layer.name for layer in model.layers]
    for spec in network.LAYERS:
        assert spec.name in names
    shapes = [tuple(w.shape) for layer in weighted_layers(model) for w in layer.weights]
    assert shapes == [s for pair in network.weight_shapes((32, 32, 1)) for s in pair]
