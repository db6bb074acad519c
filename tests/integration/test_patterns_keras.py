"""A Keras functional model with MultiHeadAttention and a residual Add, exported by tf2onnx."""

from __future__ import annotations

import numpy as np
import pytest

import onnxscope
from onnxscope.patterns import find_attention, find_residuals

tf = pytest.importorskip("tensorflow")
tf2onnx = pytest.importorskip("tf2onnx")
keras = tf.keras


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 16), name="x")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")
    h = keras.layers.LayerNormalization(name="ln")(keras.layers.Add(name="residual")([x, mha(x, x)]))
    y = keras.layers.Dense(4, name="head")(h)
    model = keras.Model(x, y)
    path = tmp_path_factory.mktemp("kmha") / "mha.onnx"
    spec = (tf.TensorSpec((None, 6, 16), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))
    return model, onnxscope.load(path)


def test_keras_multihead_attention_is_found_with_its_heads(exported):
    _, m = exported
    (block,) = find_attention(m)
    assert block.heads == 2 and block.causal is False
    assert block.w_q and block.w_k and block.w_v and block.w_o
    assert len(find_residuals(m)) == 1


def test_keras_attention_map_equals_the_layer_scores(exported):
    model, m = exported
    x = np.random.default_rng(0).standard_normal((3, 6, 16)).astype(np.float32)
    _, scores = model.get_layer("mha")(x, x, return_attention_scores=True)
    (block,) = find_attention(m)
    cap = onnxscope.capture(m, {"x": x})
    np.testing.assert_allclose(cap.attention(block), np.asarray(scores), atol=1e-5)
