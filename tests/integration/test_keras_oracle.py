"""A Keras model exported by tf2onnx against Keras itself: ``layers[i].get_weights()`` is the oracle."""

from __future__ import annotations

import numpy as np
import pytest

import onnxscope

tf = pytest.importorskip("tensorflow")
tf2onnx = pytest.importorskip("tf2onnx")
keras = tf.keras


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-zero biases: tf2onnx drops all-zero ones
        k, b = layer.get_weights()
        layer.set_weights([k, rng.standard_normal(b.shape).astype(np.float32)])
    model.output_names = ["output"]  # Keras 3 Sequential needs it for tf2onnx
    path = tmp_path_factory.mktemp("keras") / "dense.onnx"
    spec = (tf.TensorSpec((None, 10), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))
    return model, onnxscope.load(path)


def test_dense_neuron_weights_equal_keras_get_weights(exported):
    model, m = exported
    (k0, b0), (k1, _) = model.layers[0].get_weights(), model.layers[1].get_weights()
    first = next(n for n in m.nodes if n.op_type == "MatMul")
    for j in (0, 31, 63):
        n = m.neuron(first.name, j)
        np.testing.assert_array_equal(n.incoming, k0[:, j])
        assert float(n.bias) == float(b0[j])
        (out,) = n.outgoing
        np.testing.assert_array_equal(out.weights, k1[j, :])


def test_the_softmax_layer_neuron_stops_at_the_softmax(exported):
    model, m = exported
    second = [n for n in m.nodes if n.op_type == "MatMul"][1]
    n = m.neuron(second.name, 3)
    np.testing.assert_array_equal(n.incoming, model.layers[1].get_weights()[0][:, 3])
    assert n.outgoing == ()
    assert [s.op for s in n.stops] == ["Softmax"]
