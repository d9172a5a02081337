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


def test_other_widths_change_only_the_widths():
    assert network.network_layers() is network.LAYERS and network.network_layers(network.WIDTHS) is network.LAYERS
    assert network.WIDTHS == (96, 256, 384, 384, 256, 4096, 4096)
    widths = (4, 5, 6, 7, 8, 9, 10)
    narrow = network.network_layers(widths)
    assert [s.filters if s.kind == "conv" else s.units for s in narrow if s.weighted] == [*widths, 3]
    for wide, spec in zip(network.LAYERS, narrow):  # kernels, strides, activations, names: the published ones
        assert (spec.kind, spec.name, spec.kernel, spec.strides, spec.activation, spec.rate) == (
            wide.kind, wide.name, wide.kernel, wide.strides, wide.activation, wide.rate)
    shapes = network.weight_shapes((32, 32, 1), widths)
    assert shapes[0] == ((11, 11, 1, 4), (4,)) and shapes[5] == ((8, 9), (9,)) and shapes[7] == ((10, 3), (3,))
    assert network.widths_of(shapes) == widths
    assert network.count_params((32, 32, 1), widths) == sum(k[0] * k[1] * k[2] * k[3] + b[0] for k, b in shapes[:5]) + \
        sum(k[0] * k[1] + b[0] for k, b in shapes[5:])
    assert network.forward_flops((32, 32, 1), widths) < network.forward_flops((32, 32, 1))


@pytest.mark.parametrize("widths", [(1, 2, 3), (4, 5, 6, 7, 8, 9, 0), (4, 5, 6, 7, 8, 9, 2.5), "abcdefg"])
def test_bad_widths_are_refused(widths):
    with pytest.raises(ValueError, match=r"`widths` must be 7 positive integers"):
        network.network_layers(widths)


def test_narrow_keras_model_loads_back_with_its_widths(tmp_path):
    """A saved model of other widths is rebuilt with its own (another input shape, another LRN flavour)."""
    import numpy as np

    from gamornet.keras_backend.model import build_keras_model, load_keras_model, model_widths, read_weights

    widths = (8, 16, 16, 16, 16, 32, 32)
    path = tmp_path / "narrow.keras"
    model = build_keras_model((32, 32, 1), seed=1, widths=widths)
    model.save(path)
    assert model_widths(model) == widths and model.count_params() == network.count_params((32, 32, 1), widths)
    weights = read_weights(str(path))
    assert weights.widths() == widths and weights.mismatches((29, 29, 1)) == []
    # the dense layer that reads the last feature map (2 x 2 x 16 at 48 x 48, 1 x 1 x 16 at 32 x 32) tells
    assert weights.mismatches((48, 48, 1)) == [
        "layer 13 (dense_1): expected [(64, 32), (32,)], found [(16, 32), (32,)]"]
    for shape, lrn in (((29, 29, 1), None), ((32, 32, 1), "tflearn")):
        rebuilt = load_keras_model(str(path), shape, lrn=lrn, reuse=False)
        assert model_widths(rebuilt) == widths
        for a, b in zip(rebuilt.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
