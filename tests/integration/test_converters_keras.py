"""converters.from_keras and converters.check against Keras itself (get_weights, functional sub-models)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import converters
import onnxscope

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
keras = tf.keras


def test_the_seed_sequential_example_as_written(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Dense(64, activation="relu", input_shape=(10,)),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    m = converters.from_keras(model, tmp_path / "seq.onnx")  # Keras 3: no KeyError 'keras_tensor_N'
    kernel, bias = model.layers[0].get_weights()
    name = model.layers[0].name
    (stored,) = [k for k, info in m.layer_map["weights"].items() if info["param"] == f"{name}/kernel"]
    np.testing.assert_array_equal(m.weights[stored].numpy(), kernel)
    n = m.neuron(name, 7)  # the Keras layer name
    np.testing.assert_array_equal(n.incoming, kernel[:, 7])
    np.testing.assert_array_equal(n.outgoing[0].weights, model.layers[1].get_weights()[0][7])
    assert not np.any(bias) and f"{name}/bias" in m.layer_map["dropped"]  # tf2onnx drops all-zero biases


@pytest.fixture(scope="module")
def functional(tmp_path_factory):
    keras.utils.set_random_seed(1)
    x = keras.Input((6, 16), name="x")
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(x, x)
    h = keras.layers.LayerNormalization(name="norm")(keras.layers.Add(name="residual")([x, a]))
    inter = keras.layers.Dense(32, activation="relu", name="intermediate")(h)
    y = keras.layers.Dense(4, name="head")(inter)
    model = keras.Model(x, y, name="encoder")
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-zero biases everywhere
        layer.set_weights(
            [
                w if w.ndim > 1 else rng.standard_normal(w.shape).astype(np.float32)
                for w in layer.get_weights()
            ]
        )
    return model, converters.from_keras(model, tmp_path_factory.mktemp("f") / "encoder.onnx")


def test_the_intermediate_layer_output_equals_the_capture(functional):
    model, m = functional
    x = np.random.default_rng(2).standard_normal((3, 6, 16)).astype(np.float32)
    probe = keras.Model(model.inputs, model.get_layer("intermediate").output)
    cap = onnxscope.capture(m, {"x": x}, select="module:intermediate")
    np.testing.assert_allclose(cap[m.layer_map["layers"]["intermediate"]["output"]], probe(x), atol=1e-5)


def test_keras_parity_and_a_perturbed_weight(functional, tmp_path):
    model, m = functional
    x = np.random.default_rng(3).standard_normal((1, 6, 16)).astype(np.float32)
    report = converters.check(model, m, x)
    assert report.ok, [r for r in report.rows if not r.ok]
    assert {"mha", "residual", "norm", "intermediate", "head"} <= {r.layer for r in report.rows}
    import onnx_ir as ir

    (name,) = [k for k, info in m.layer_map["weights"].items() if info["param"] == "intermediate/kernel"]
    bad = ir.load(str(m.path))
    arr = np.array(bad.graph.initializers[name].const_value.numpy()) * 1.5
    bad.graph.initializers[name].const_value = ir.tensor(arr, name=name)
    ir.save(bad, str(tmp_path / "bad.onnx"))
    assert (
        converters.check(model, onnxscope.load(tmp_path / "bad.onnx"), x).first_divergence == "intermediate"
    )


def test_a_missing_framework_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # what `import tensorflow` sees when it is absent
    with pytest.raises(onnxscope.MissingDependencyError, match=r"pip install 'onnxscope\[tf\]'"):
        converters.from_keras(tmp_path / "m.keras", tmp_path / "m.onnx")


def test_a_savedmodel_folder_converts_and_computes_the_same(functional, tmp_path):
    model, _ = functional
    model.export(str(tmp_path / "saved"))  # a TensorFlow SavedModel folder
    m = converters.from_keras(tmp_path / "saved", tmp_path / "saved.onnx")
    x = np.random.default_rng(4).standard_normal((2, 6, 16)).astype(np.float32)
    cap = onnxscope.capture(m, {m.ir.graph.inputs[0].name: x})
    np.testing.assert_allclose(next(iter(cap.outputs.values())), model(x), atol=1e-5)
