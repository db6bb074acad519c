"""Fuzz onnxscope with mutated models: every failure must be a clean ``OnnxscopeError`` — no other exception, no
crash, no hang.

Seeds are small valid models built here in code (an MLP, a CNN with BatchNorm and a residual Add, an attention
block, If/Loop/Scan bodies, a QDQ model, a model with external data, one with Constants, a string tensor and a
local function) plus the bundled ``fixtures/small_cnn.onnx``. Each case takes one seed and applies one to three
structural mutations to its protobuf (drop/rename/rewire edges, cycles, dtypes, dims, payload sizes, attribute
types and values, names, external-data entries and files, If/Loop/Scan bodies, opsets, metadata…), then
sometimes flips, cuts or inserts bytes in the serialized model or corrupts a name into invalid UTF-8. The case
is written to disk and sent through every static query — load, summary, weights (to_dict, stats, dequantize,
duplicates), neuron on two layers, find_residuals, find_attention, paths (all_paths, shortest_path, between,
ancestors, extract), each result rendered to JSON and by the CLI's table code — and, for a subset, through
``onnxscope.capture(..., random=True)`` with a save and a read back.

Cases run in worker subprocesses (each handles many cases in turn); the parent is the watchdog: a case over its
time limit is a hang (the worker is killed and a fresh one continues with the next case), a worker that dies is a
crash. Workers run with ``ONNXSCOPE_MAX_BYTES`` at 256 MiB and an address-space limit, so an allocation sized
from a declared (mutated) shape shows up as an exception instead of exhausting the machine. Everything is
deterministic given ``--seed``: case ``i`` is the same model on every run and every machine.

For each distinct signature (exception type + innermost onnxscope frame) the smallest model that raised it is
kept under ``OUT/repros/<signature>/`` with ``case.json`` (mutations, query, traceback); ``--replay OUT`` runs the
saved repros again and says which still fail.

Run:
    python benchmarks/fuzz.py --cases 20000 --capture-cases 2000 --seed 0 --jobs 1 --out /tmp/fuzz
    python benchmarks/fuzz.py --replay /tmp/fuzz
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "fixtures" / "small_cnn.onnx"
MODEL = "model.onnx"
WORKER_MAX_BYTES = 256 << 20  # ONNXSCOPE_MAX_BYTES inside workers
WORKER_ADDRESS_SPACE = 6 << 30  # RLIMIT_AS inside workers: a missed budget check ends as MemoryError, not OOM
WORKER_FILE_SIZE = 256 << 20  # RLIMIT_FSIZE inside workers

# ------------------------------------------------------------------------------------------------------------
# Seeds: small valid models, as (ModelProto, {file name: bytes}) with external data files beside the model.
# ------------------------------------------------------------------------------------------------------------

Files = dict[str, bytes]


def _w(rng: np.random.Generator, name: str, *shape: int, dtype: type = np.float32) -> TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)


def _model(graph: onnx.GraphProto, opset: int = 17, **kw: object) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kw)
    m.ir_version = 9
    return m


def seed_mlp() -> tuple[onnx.ModelProto, Files]:
    import onnx_ir as ir

    from onnxscope.testing import mlp_model

    return ir.to_proto(mlp_model(in_features=4, hidden=6, out_features=3)), {}


def seed_cnn() -> tuple[onnx.ModelProto, Files]:
    rng = np.random.default_rng(1)
    inits = [
        _w(rng, "conv1.weight", 4, 3, 3, 3),
        _w(rng, "conv1.bias", 4),
        _w(rng, "conv2.weight", 4, 4, 3, 3),
        _w(rng, "fc.weight", 3, 4),
        _w(rng, "fc.bias", 3),
    ]
    for bn in ("bn1", "bn2"):
        inits += [_w(rng, f"{bn}.weight", 4), _w(rng, f"{bn}.bias", 4), _w(rng, f"{bn}.running_mean", 4)]
        inits.append(
            numpy_helper.from_array(np.abs(rng.standard_normal(4)).astype(np.float32) + 0.5, f"{bn}.var")
        )
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.var"],
            ["b1"],
            "bn1",
        ),
        helper.make_node("Relu", ["b1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "conv2.weight"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization",
            ["c2", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.var"],
            ["b2"],
            "bn2",
        ),
        helper.make_node("Add", ["b2", "r1"], ["s"], "add"),
        helper.make_node("Relu", ["s"], ["r2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], "pool"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], "fc", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        inits,
    )
    return _model(g), {}


def seed_attention() -> tuple[onnx.ModelProto, Files]:
    rng = np.random.default_rng(2)
    d, h = 8, 2
    inits = [_w(rng, f"attn.{k}.weight", d, d) for k in "qkvo"]
    inits += [
        numpy_helper.from_array(np.array([0, 0, h, d // h], np.int64), "heads_shape"),
        numpy_helper.from_array(np.array([0, 0, d], np.int64), "merge_shape"),
        numpy_helper.from_array(np.array(np.sqrt(d // h), np.float32), "scale"),
    ]
    nodes = []
    for k in "qkv":
        nodes += [
            helper.make_node("MatMul", ["x", f"attn.{k}.weight"], [f"{k}"], f"attn/{k}_proj"),
            helper.make_node("Reshape", [k, "heads_shape"], [f"{k}_h"], f"attn/{k}_reshape"),
        ]
    nodes += [
        helper.make_node("Transpose", ["q_h"], ["q_t"], "attn/q_t", perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k_h"], ["k_t"], "attn/k_t", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v_h"], ["v_t"], "attn/v_t", perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q_t", "k_t"], ["scores"], "attn/qk"),
        helper.make_node("Div", ["scores", "scale"], ["scaled"], "attn/scale"),
        helper.make_node("Softmax", ["scaled"], ["probs"], "attn/softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v_t"], ["ctx"], "attn/pv"),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], "attn/ctx_t", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["merged"], "attn/merge"),
        helper.make_node("MatMul", ["merged", "attn.o.weight"], ["o"], "attn/o_proj"),
        helper.make_node("Add", ["o", "x"], ["y"], "attn/residual"),
    ]
    g = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        inits,
    )
    return _model(g), {}


def seed_control_flow() -> tuple[onnx.ModelProto, Files]:
    rng = np.random.default_rng(3)
    f = TensorProto.FLOAT
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t_out"], "then_relu")],
        "then_branch",
        [],
        [helper.make_tensor_value_info("t_out", f, [2, 3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e_out"], "else_neg")],
        "else_branch",
        [],
        [helper.make_tensor_value_info("e_out", f, [2, 3])],
    )
    loop_body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], "body_cond"),
            helper.make_node("Add", ["h_in", "loop.weight"], ["h_out"], "body_add"),
            helper.make_node("Relu", ["h_out"], ["h_scan"], "body_relu"),
        ],
        "loop_body",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", f, [2, 3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", f, [2, 3]),
            helper.make_tensor_value_info("h_scan", f, [2, 3]),
        ],
    )
    scan_body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "row"], ["s_out"], "scan_add"),
            helper.make_node("Mul", ["row", "row"], ["sq"], "scan_mul"),
        ],
        "scan_body",
        [helper.make_tensor_value_info("s_in", f, [3]), helper.make_tensor_value_info("row", f, [3])],
        [helper.make_tensor_value_info("s_out", f, [3]), helper.make_tensor_value_info("sq", f, [3])],
    )
    inits = [
        _w(rng, "loop.weight", 2, 3),
        numpy_helper.from_array(np.array(3, np.int64), "trip"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.zeros(3, np.float32), "s0"),
    ]
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], "sum", keepdims=0),
        helper.make_node("Greater", ["total", "s0_scalar"], ["positive"], "greater"),
        helper.make_node("If", ["positive"], ["if_out"], "if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trip", "cond", "if_out"], ["h_final", "h_all"], "loop", body=loop_body),
        helper.make_node(
            "Scan", ["s0", "x"], ["s_final", "squares"], "scan", body=scan_body, num_scan_inputs=1
        ),
    ]
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "s0_scalar"))
    g = helper.make_graph(
        nodes,
        "control_flow",
        [helper.make_tensor_value_info("x", f, [2, 3])],
        [
            helper.make_tensor_value_info("h_final", f, [2, 3]),
            helper.make_tensor_value_info("h_all", f, [3, 2, 3]),
            helper.make_tensor_value_info("s_final", f, [3]),
            helper.make_tensor_value_info("squares", f, [2, 3]),
        ],
        inits,
    )
    return _model(g), {}


def seed_qdq() -> tuple[onnx.ModelProto, Files]:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w_scale = (np.abs(w).reshape(4, -1).max(axis=1) / 127).astype(np.float32)
    w_q = np.clip(np.rint(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    fc = rng.standard_normal((3, 4)).astype(np.float32)
    fc_scale = np.float32(np.abs(fc).max() / 127)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
        numpy_helper.from_array(w_q, "conv.weight_quantized"),
        numpy_helper.from_array(w_scale, "conv.weight_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "conv.weight_zp"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv.bias"),
        numpy_helper.from_array(
            np.clip(np.rint(fc / fc_scale), -127, 127).astype(np.int8), "fc.weight_quantized"
        ),
        numpy_helper.from_array(np.array(fc_scale, np.float32), "fc.weight_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "fc.weight_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], "x_quant"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], "x_dequant"),
        helper.make_node(
            "DequantizeLinear",
            ["conv.weight_quantized", "conv.weight_scale", "conv.weight_zp"],
            ["conv.weight_dq"],
            "conv.weight_dequant",
            axis=0,
        ),
        helper.make_node("Conv", ["x_dq", "conv.weight_dq", "conv.bias"], ["c"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], "relu"),
        helper.make_node("QuantizeLinear", ["r", "x_scale", "x_zp"], ["r_q"], "r_quant"),
        helper.make_node("DequantizeLinear", ["r_q", "x_scale", "x_zp"], ["r_dq"], "r_dequant"),
        helper.make_node("GlobalAveragePool", ["r_dq"], ["p"], "pool"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node(
            "DequantizeLinear",
            ["fc.weight_quantized", "fc.weight_scale", "fc.weight_zp"],
            ["fc.weight_dq"],
            "fc.weight_dequant",
        ),
        helper.make_node("Gemm", ["f", "fc.weight_dq"], ["y"], "fc", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    return _model(g, opset=19), {}


def _externalize(model: onnx.ModelProto, location: str, threshold: int = 0) -> Files:
    """Move every initializer's bytes into one file ``location`` (aligned at 64 bytes), as exporters do."""
    blob = bytearray()
    for t in model.graph.initializer:
        raw = numpy_helper.to_array(t).tobytes()
        if len(raw) < threshold:
            continue
        blob += b"\0" * (-len(blob) % 64)
        offset = len(blob)
        blob += raw
        t.ClearField("raw_data")
        for fld in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(fld)
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
            t.external_data.add(key=k, value=v)
    return {location: bytes(blob)}


def seed_external() -> tuple[onnx.ModelProto, Files]:
    import onnx_ir as ir

    from onnxscope.testing import mlp_model

    model = ir.to_proto(mlp_model(in_features=5, hidden=8, out_features=2, seed=5))
    return model, _externalize(model, "weights.bin")


def seed_misc() -> tuple[onnx.ModelProto, Files]:
    """Constants in every attribute form, an embedding Gather, LayerNorm, Concat, a string tensor, a function."""
    rng = np.random.default_rng(6)
    f = TensorProto.FLOAT
    inits = [
        _w(rng, "emb.weight", 10, 4),
        _w(rng, "ln.weight", 4),
        _w(rng, "ln.bias", 4),
        numpy_helper.from_array(np.array([b"a", b"bc"], dtype=object), "labels"),
    ]
    fn = helper.make_function(
        "local",
        "Swish",
        ["X"],
        ["Y"],
        [helper.make_node("Sigmoid", ["X"], ["S"]), helper.make_node("Mul", ["X", "S"], ["Y"])],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        helper.make_node("Gather", ["emb.weight", "ids"], ["e"], "emb"),
        helper.make_node("LayerNormalization", ["e", "ln.weight", "ln.bias"], ["n"], "ln", axis=-1),
        helper.make_node(
            "Constant",
            [],
            ["c_tensor"],
            "c_tensor",
            value=numpy_helper.from_array(np.ones((1, 1, 4), np.float32)),
        ),
        helper.make_node("Constant", [], ["c_float"], "c_float", value_float=0.5),
        helper.make_node("Constant", [], ["c_ints"], "c_ints", value_ints=[1, 1, 4]),
        helper.make_node("Constant", [], ["c_str"], "c_str", value_string="hello"),
        helper.make_node("Add", ["n", "c_tensor"], ["a"], "add"),
        helper.make_node("Mul", ["a", "c_float"], ["m"], "mul"),
        helper.make_node("Swish", ["m"], ["sw"], "swish", domain="local"),
        helper.make_node("Concat", ["sw", "a"], ["cat"], "concat", axis=-1),
        helper.make_node("Cast", ["c_ints"], ["c_ints_f"], "cast", to=f),
        helper.make_node("ReduceMean", ["cat"], ["y"], "mean", keepdims=0, axes=[-1]),
    ]
    g = helper.make_graph(
        nodes,
        "misc",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [
            helper.make_tensor_value_info("y", f, ["batch", "seq"]),
            helper.make_tensor_value_info("c_ints_f", f, [3]),
        ],
        inits,
    )
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[fn],
    )
    m.ir_version = 9
    m.graph.node[0].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'emb']")
    m.metadata_props.add(
        key="onnxscope.layer_map", value=json.dumps({"nodes": {"emb": "emb"}, "weights": {}})
    )
    return m, {}


def seed_fixture() -> tuple[onnx.ModelProto, Files]:
    model = onnx.load(str(FIXTURE), load_external_data=False)
    return model, {"small_cnn.onnx.data": (FIXTURE.parent / "small_cnn.onnx.data").read_bytes()}


SEEDS = {
    "mlp": seed_mlp,
    "cnn": seed_cnn,
    "attention": seed_attention,
    "control_flow": seed_control_flow,
    "qdq": seed_qdq,
    "external": seed_external,
    "misc": seed_misc,
    "fixture": seed_fixture,
}

# ------------------------------------------------------------------------------------------------------------
# Mutations. Each takes (Mutant, random.Random) and returns a description, or None when it does not apply.
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Mutant:
    model: onnx.ModelProto
    files: Files
    special: dict[str, str] = field(
        default_factory=dict
    )  # file name -> "fifo" | "dir" | "symlink:…" | "hardlink:…"
    utf8: list[str] = field(default_factory=list)  # names to corrupt into invalid UTF-8 once serialized
    model_kind: str = "file"  # or fifo / dir / devnull / zero


def graphs(model: onnx.ModelProto) -> list[onnx.GraphProto]:
    """The main graph and every subgraph body, depth first."""
    out: list[onnx.GraphProto] = []
    stack = [model.graph]
    while stack:
        g = stack.pop()
        out.append(g)
        for n in g.node:
            for a in n.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)
    return out


def _nodes(m: onnx.ModelProto) -> list[tuple[onnx.GraphProto, onnx.NodeProto]]:
    return [(g, n) for g in graphs(m) for n in g.node]


def _tensors(m: onnx.ModelProto) -> list[TensorProto]:
    out = [t for g in graphs(m) for t in g.initializer]
    for _, n in _nodes(m):
        for a in n.attribute:
            if a.HasField("t"):
                out.append(a.t)
    return out


def _values(m: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return [v for g in graphs(m) for v in (*g.input, *g.output, *g.value_info)]


def _names(m: onnx.ModelProto) -> list[str]:
    out: set[str] = set()
    for g in graphs(m):
        out.update(v.name for v in (*g.input, *g.output, *g.value_info))
        out.update(t.name for t in g.initializer)
        for n in g.node:
            out.update(n.input)
            out.update(n.output)
            out.add(n.name)
    out.discard("")
    return sorted(out)


HUGE = [2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1]
ODD_DIMS = [0, 1, -1, -7, 3, 1000, *HUGE]
DTYPES = list(range(0, 27)) + [99, 1000, -1]
ODD_NAMES = [
    "",
    "a/b",
    "../../etc/passwd",
    "x" * 5000,
    "line\nbreak",
    "nul\0byte",
    "é²名",
    " ",
    "*",
    "re:.*",
    "op:Conv",
    "[0]",
]
OPS = [
    "Relu",
    "Conv",
    "Gemm",
    "MatMul",
    "Softmax",
    "If",
    "Loop",
    "Scan",
    "Attention",
    "Foo",
    "",
    "Add",
    "DequantizeLinear",
    "QLinearConv",
    "Reshape",
    "Transpose",
    "Constant",
    "Identity",
    "Concat",
    "Split",
    "LayerNormalization",
    "BatchNormalization",
    "Cast",
    "Gather",
    "MatMulInteger",
    "QGemm",
    "Squeeze",
]
DOMAINS = ["", "ai.onnx", "com.microsoft", "ai.onnx.ml", "custom", "local", "é"]


def _pick(rng: random.Random, seq: list) -> object:
    return seq[rng.randrange(len(seq))] if seq else None


def m_drop_input(mu: Mutant, rng: random.Random) -> str | None:
    cands = [(g, n) for g, n in _nodes(mu.model) if n.input]
    if not cands:
        return None
    _, n = _pick(rng, cands)
    k = rng.randrange(len(n.input))
    if rng.random() < 0.5:
        n.input[k] = ""
        return f"input {k} of {n.name!r} emptied"
    del n.input[k]
    return f"input {k} of {n.name!r} removed"


def m_rewire_input(mu: Mutant, rng: random.Random) -> str | None:
    cands = [(g, n) for g, n in _nodes(mu.model) if n.input]
    if not cands:
        return None
    _, n = _pick(rng, cands)
    k = rng.randrange(len(n.input))
    r = rng.random()
    new = (
        f"ghost_{rng.randrange(100)}"
        if r < 0.4
        else (_pick(rng, _names(mu.model)) if r < 0.9 else _pick(rng, ODD_NAMES))
    )
    n.input[k] = new
    return f"input {k} of {n.name!r} -> {new[:40]!r}"


def m_add_input(mu: Mutant, rng: random.Random) -> str | None:
    _, n = _pick(rng, _nodes(mu.model))
    for _ in range(rng.randint(1, 3)):
        n.input.append(_pick(rng, [*_names(mu.model), "ghost", ""]))
    return f"inputs appended to {n.name!r}"


def m_cycle(mu: Mutant, rng: random.Random) -> str | None:
    g = _pick(rng, [g for g in graphs(mu.model) if len(g.node) >= 2])
    if g is None:
        return None
    i = rng.randrange(len(g.node) - 1)
    j = rng.randrange(i, len(g.node))
    a, b = g.node[i], g.node[j]
    if not b.output:
        return None
    if a.input:
        a.input[rng.randrange(len(a.input))] = b.output[0]
    else:
        a.input.append(b.output[0])
    return f"cycle: {a.name!r} reads {b.output[0]!r}"


def m_rename_output(mu: Mutant, rng: random.Random) -> str | None:
    cands = [(g, n) for g, n in _nodes(mu.model) if n.output]
    if not cands:
        return None
    _, n = _pick(rng, cands)
    k = rng.randrange(len(n.output))
    r = rng.random()
    new = "" if r < 0.2 else (f"renamed_{rng.randrange(100)}" if r < 0.6 else _pick(rng, _names(mu.model)))
    n.output[k] = new
    return f"output {k} of {n.name!r} -> {new[:40]!r}"


def m_output_count(mu: Mutant, rng: random.Random) -> str | None:
    _, n = _pick(rng, _nodes(mu.model))
    if n.output and rng.random() < 0.5:
        del n.output[-1]
        return f"last output of {n.name!r} removed"
    n.output.append(f"extra_{rng.randrange(10)}")
    return f"output appended to {n.name!r}"


def m_drop_node(mu: Mutant, rng: random.Random) -> str | None:
    g = _pick(rng, [g for g in graphs(mu.model) if g.node])
    i = rng.randrange(len(g.node))
    name = g.node[i].name
    del g.node[i]
    return f"node {name!r} removed"


def m_dup_node(mu: Mutant, rng: random.Random) -> str | None:
    g = _pick(rng, [g for g in graphs(mu.model) if g.node])
    n = copy.deepcopy(g.node[rng.randrange(len(g.node))])
    if rng.random() < 0.5:
        n.name += "_dup"
    g.node.insert(rng.randrange(len(g.node) + 1), n)
    return f"node {n.name!r} duplicated"


def m_shuffle_nodes(mu: Mutant, rng: random.Random) -> str | None:
    g = _pick(rng, [g for g in graphs(mu.model) if len(g.node) >= 2])
    if g is None:
        return None
    nodes = list(g.node)
    rng.shuffle(nodes)
    del g.node[:]
    g.node.extend(nodes)
    return f"nodes of graph {g.name!r} shuffled"


def m_op_type(mu: Mutant, rng: random.Random) -> str | None:
    _, n = _pick(rng, _nodes(mu.model))
    if rng.random() < 0.7:
        n.op_type = _pick(rng, OPS)
        return f"{n.name!r} op -> {n.op_type!r}"
    n.domain = _pick(rng, DOMAINS)
    return f"{n.name!r} domain -> {n.domain!r}"


def m_graph_output(mu: Mutant, rng: random.Random) -> str | None:
    g = _pick(rng, graphs(mu.model))
    r = rng.random()
    if not g.output or r < 0.15:
        o = g.output.add()
        o.CopyFrom(
            helper.make_tensor_value_info(_pick(rng, [*_names(mu.model), "nowhere"]), TensorProto.FLOAT, None)
        )
        return f"graph {g.name!r}: output {o.name!r} added"
    k = rng.randrange(len(g.output))
    if r < 0.3:
        del g.output[k]
        return f"graph {g.name!r}: output {k} removed"
    if r < 0.4:
        g.output.append(copy.deepcopy(g.output[k]))
        return f"graph {g.name!r}: output {k} duplicated"
    new = "nowhere" if r < 0.7 else _pick(rng, [*_names(mu.model), *ODD_NAMES])
    g.output[k].name = new
    return f"graph {g.name!r}: output {k} -> {new[:40]!r}"


def m_graph_input(mu: Mutant, rng: random.Random) -> str | None:
    g = _pick(rng, graphs(mu.model))
    r = rng.random()
    if not g.input or r < 0.2:
        name = _pick(rng, [*_names(mu.model), "fresh"])
        g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]))
        return f"graph {g.name!r}: input {name!r} added"
    k = rng.randrange(len(g.input))
    if r < 0.5:
        name = g.input[k].name
        del g.input[k]
        return f"graph {g.name!r}: input {name!r} removed"
    if r < 0.6:
        g.input.append(copy.deepcopy(g.input[k]))
        return f"graph {g.name!r}: input {k} duplicated"
    v = g.input[k]
    return _retype(v, rng)


def _retype(v: onnx.ValueInfoProto, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        v.type.tensor_type.elem_type = _pick(rng, DTYPES)
        return f"value {v.name!r} elem_type -> {v.type.tensor_type.elem_type}"
    if r < 0.55:
        v.type.CopyFrom(
            helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
        )
        return f"value {v.name!r} -> sequence"
    if r < 0.65:
        v.type.CopyFrom(
            helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
        )
        return f"value {v.name!r} -> optional"
    if r < 0.72:
        v.type.CopyFrom(
            helper.make_map_type_proto(
                TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
            )
        )
        return f"value {v.name!r} -> map"
    if r < 0.8:
        v.type.CopyFrom(helper.make_sparse_tensor_type_proto(TensorProto.FLOAT, [2, 2]))
        return f"value {v.name!r} -> sparse tensor"
    if r < 0.9:
        v.ClearField("type")
        return f"value {v.name!r}: type cleared"
    v.type.tensor_type.ClearField("shape")
    return f"value {v.name!r}: shape cleared"


def m_value_dims(mu: Mutant, rng: random.Random) -> str | None:
    vs = [v for v in _values(mu.model) if v.type.HasField("tensor_type")]
    if not vs:
        return None
    v = _pick(rng, vs)
    shape = v.type.tensor_type.shape
    r = rng.random()
    if not shape.dim or r < 0.2:
        d = shape.dim.add()
        d.dim_value = _pick(rng, ODD_DIMS) if rng.random() < 0.6 else 0
        if d.dim_value == 0 and rng.random() < 0.5:
            d.dim_param = _pick(rng, ["batch", "seq", "²", "", "n m", "x" * 300])
        return f"value {v.name!r}: dim added"
    d = shape.dim[rng.randrange(len(shape.dim))]
    if r < 0.6:
        d.dim_value = _pick(rng, ODD_DIMS)
        return f"value {v.name!r}: dim -> {d.dim_value}"
    if r < 0.8:
        d.dim_param = _pick(rng, ["batch", "seq", "²", "", "n m", "x" * 300, "batch2"])
        return f"value {v.name!r}: dim -> {d.dim_param[:20]!r}"
    del shape.dim[rng.randrange(len(shape.dim))]
    return f"value {v.name!r}: dim removed"


def m_value_type(mu: Mutant, rng: random.Random) -> str | None:
    v = _pick(rng, _values(mu.model))
    return None if v is None else _retype(v, rng)


def m_tensor_dtype(mu: Mutant, rng: random.Random) -> str | None:
    t = _pick(rng, _tensors(mu.model))
    if t is None:
        return None
    t.data_type = _pick(rng, DTYPES)
    return f"tensor {t.name!r} data_type -> {t.data_type}"


def m_tensor_dims(mu: Mutant, rng: random.Random) -> str | None:
    t = _pick(rng, _tensors(mu.model))
    if t is None:
        return None
    r = rng.random()
    if r < 0.25 and t.dims:
        t.dims[rng.randrange(len(t.dims))] = _pick(rng, ODD_DIMS)
    elif r < 0.4:
        t.dims.append(_pick(rng, [2, 3, 0, *HUGE]))
    elif r < 0.55:
        del t.dims[:]
    elif r < 0.7 and t.dims:
        del t.dims[rng.randrange(len(t.dims))]
    elif r < 0.85:
        del t.dims[:]
        t.dims.extend([2**32, 2**32])  # the product overflows int64 arithmetic
    else:
        del t.dims[:]
        t.dims.extend([_pick(rng, HUGE)] + [rng.randint(1, 4) for _ in range(rng.randint(0, 2))])
    return f"tensor {t.name!r} dims -> {list(t.dims)[:6]}"


def m_tensor_payload(mu: Mutant, rng: random.Random) -> str | None:
    ts = [t for t in _tensors(mu.model) if t.data_location != TensorProto.EXTERNAL]
    t = _pick(rng, ts)
    if t is None:
        return None
    r = rng.random()
    if t.raw_data and r < 0.3:
        cut = rng.randrange(len(t.raw_data))
        t.raw_data = t.raw_data[:cut]
        return f"tensor {t.name!r} raw_data cut to {cut}"
    if r < 0.45:
        t.raw_data = t.raw_data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
        return f"tensor {t.name!r} raw_data extended"
    if r < 0.6:
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.ClearField("int64_data")
        t.ClearField("int32_data")
        return f"tensor {t.name!r} payload cleared"
    if r < 0.75:
        t.ClearField("raw_data")
        t.float_data.extend(rng.random() for _ in range(rng.randint(0, 7)))
        return f"tensor {t.name!r} float_data of another length"
    if r < 0.85:
        t.int64_data.extend(rng.randint(-(2**63), 2**63 - 1) for _ in range(rng.randint(1, 5)))
        return f"tensor {t.name!r} int64_data added"
    if r < 0.92:
        t.string_data.extend([b"\xff\xfe", b"ok"])
        return f"tensor {t.name!r} string_data added"
    t.segment.begin, t.segment.end = rng.randint(-5, 5), rng.randint(-5, 50)
    return f"tensor {t.name!r} segment set"


ATTR_TYPES = list(range(0, 15)) + [99]


def m_attr_type(mu: Mutant, rng: random.Random) -> str | None:
    cands = [(n, a) for _, n in _nodes(mu.model) for a in n.attribute]
    if not cands:
        return None
    n, a = _pick(rng, cands)
    r = rng.random()
    if r < 0.6:
        a.type = _pick(rng, ATTR_TYPES)
        return f"attribute {n.name!r}.{a.name} type -> {a.type}"
    for fld in ("f", "i", "s", "t", "g", "tp", "sparse_tensor"):
        a.ClearField(fld)
    for fld in ("floats", "ints", "strings", "tensors", "graphs", "type_protos", "sparse_tensors"):
        a.ClearField(fld)
    kind = rng.randrange(6)
    if kind == 0:
        a.f = float("nan")
    elif kind == 1:
        a.i = _pick(rng, [-1, 0, 2**62, -(2**63)])
    elif kind == 2:
        a.s = bytes(rng.randrange(256) for _ in range(6))
    elif kind == 3:
        a.ints.extend(_pick(rng, ODD_DIMS) for _ in range(rng.randint(0, 5)))
    elif kind == 4:
        a.t.CopyFrom(numpy_helper.from_array(np.zeros(2, np.float32), "t"))
    else:
        a.strings.extend([b"\xff", b"x"])
    return f"attribute {n.name!r}.{a.name} payload replaced (kind {kind}), type {a.type}"


def m_attr_value(mu: Mutant, rng: random.Random) -> str | None:
    cands = [(n, a) for _, n in _nodes(mu.model) for a in n.attribute if a.type in (1, 2, 3, 6, 7, 8)]
    if not cands:
        return None
    n, a = _pick(rng, cands)
    if a.type == onnx.AttributeProto.INT:
        a.i = _pick(rng, [-1, -100, 0, 5, 2**31, 2**62, -(2**63)])
    elif a.type == onnx.AttributeProto.INTS:
        del a.ints[:]
        a.ints.extend(_pick(rng, ODD_DIMS) for _ in range(rng.randint(0, 6)))
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = _pick(rng, [float("nan"), float("inf"), -1.0, 1e38])
    elif a.type == onnx.AttributeProto.FLOATS:
        a.floats.append(float("nan"))
    elif a.type == onnx.AttributeProto.STRING:
        a.s = _pick(rng, [b"", b"\xff\xfe", b"NOTSET", b"x" * 1000])
    else:
        a.strings.append(b"\xc3\x28")
    return f"attribute {n.name!r}.{a.name} value changed"


def m_attr_drop_add(mu: Mutant, rng: random.Random) -> str | None:
    _, n = _pick(rng, _nodes(mu.model))
    if n.attribute and rng.random() < 0.5:
        a = n.attribute[rng.randrange(len(n.attribute))]
        name = a.name
        n.attribute.remove(a)
        return f"attribute {n.name!r}.{name} removed"
    name = _pick(
        rng, ["axis", "perm", "transB", "body", "then_branch", "value", "to", "junk", "axes", "num_heads"]
    )
    kind = rng.randrange(5)
    if kind == 0:
        n.attribute.append(helper.make_attribute(name, rng.randint(-3, 3)))
    elif kind == 1:
        n.attribute.append(
            helper.make_attribute(name, [rng.randint(-3, 3) for _ in range(rng.randint(0, 4))])
        )
    elif kind == 2:
        n.attribute.append(helper.make_attribute(name, "text"))
    elif kind == 3:
        n.attribute.append(helper.make_attribute(name, helper.make_graph([], "empty", [], [])))
    else:
        n.attribute.append(helper.make_attribute(name, numpy_helper.from_array(np.ones(2, np.float32))))
    return f"attribute {n.name!r}.{name} added (kind {kind})"


def m_names(mu: Mutant, rng: random.Random) -> str | None:
    r = rng.random()
    new = _pick(rng, [*ODD_NAMES, *_names(mu.model)])
    if r < 0.3:
        _, n = _pick(rng, _nodes(mu.model))
        n.name = new
        return f"node renamed to {new[:40]!r}"
    if r < 0.6:
        t = _pick(rng, [t for g in graphs(mu.model) for t in g.initializer])
        if t is None:
            return None
        t.name = new
        return f"initializer renamed to {new[:40]!r}"
    if r < 0.8:
        old = _pick(rng, _names(mu.model))
        if old is None:
            return None
        for g in graphs(mu.model):  # a consistent rename everywhere: the model stays valid
            for v in (*g.input, *g.output, *g.value_info):
                if v.name == old:
                    v.name = new
            for t in g.initializer:
                if t.name == old:
                    t.name = new
            for n in g.node:
                for seq in (n.input, n.output):
                    for k, s in enumerate(seq):
                        if s == old:
                            seq[k] = new
        return f"tensor {old!r} renamed everywhere to {new[:40]!r}"
    g = _pick(rng, graphs(mu.model))
    g.name = new
    return f"graph renamed to {new[:40]!r}"


def m_invalid_utf8(mu: Mutant, rng: random.Random) -> str | None:
    names = [s for s in _names(mu.model) if len(s.encode()) >= 2]
    names += [n.name for _, n in _nodes(mu.model) if len(n.name) >= 2]
    name = _pick(rng, names)
    if name is None:
        return None
    mu.utf8.append(name)
    return f"name {name!r} corrupted to invalid UTF-8"


def m_external(mu: Mutant, rng: random.Random) -> str | None:
    ext = [t for t in _tensors(mu.model) if t.data_location == TensorProto.EXTERNAL]
    if not ext or rng.random() < 0.2:  # make an inline tensor external, pointing into an existing or new file
        t = _pick(rng, [t for t in _tensors(mu.model) if t.data_location != TensorProto.EXTERNAL])
        if t is None:
            return None
        target = _pick(rng, [*mu.files, "absent.bin", "model.onnx"])
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=target)
        if rng.random() < 0.5:
            t.external_data.add(key="length", value=str(rng.randint(0, 64)))
        return f"tensor {t.name!r} made external in {target!r}"
    t = _pick(rng, ext)
    entries = {e.key: e for e in t.external_data}
    r = rng.random()
    if r < 0.35 and "location" in entries:
        entries["location"].value = _pick(
            rng,
            [
                "../weights.bin",
                "/etc/hostname",
                "sub/../../x",
                "",
                ".",
                "..",
                "a\0b",
                "absent.bin",
                "weights.bin/x",
                "model.onnx",
                "\\windows\\path",
                "~/x",
                "%s",
                "weights.bin\n",
                "proc/self/mem",
                "/dev/zero",
            ],
        )
        return f"tensor {t.name!r} location -> {entries['location'].value!r}"
    if r < 0.65:
        key = _pick(rng, ["offset", "length"])
        val = _pick(rng, ["-1", "-4096", str(2**62), str(2**64), "1.5", "abc", "", "0x10", " 4", "4096", "1"])
        if key in entries:
            entries[key].value = val
        else:
            t.external_data.add(key=key, value=val)
        return f"tensor {t.name!r} {key} -> {val!r}"
    if r < 0.75:
        key = _pick(rng, list(entries)) if entries else None
        if key is None:
            return None
        t.external_data.remove(entries[key])
        return f"tensor {t.name!r} entry {key!r} removed"
    if r < 0.85:
        t.external_data.add(key=_pick(rng, ["checksum", "junk", "location", "offset", ""]), value="7")
        return f"tensor {t.name!r} extra external-data entry"
    if r < 0.92:
        t.raw_data = b"\0" * 8
        return f"tensor {t.name!r} external with raw_data too"
    t.data_location = TensorProto.DEFAULT
    return f"tensor {t.name!r} marked inline with external entries"


def m_external_file(mu: Mutant, rng: random.Random) -> str | None:
    if not mu.files:
        return None
    name = _pick(rng, sorted(mu.files))
    r = rng.random()
    if r < 0.3:
        cut = rng.randrange(len(mu.files[name]) + 1)
        mu.files[name] = mu.files[name][:cut]
        return f"data file {name!r} cut to {cut} bytes"
    kind = _pick(
        rng,
        [
            "fifo",
            "dir",
            "symlink:/dev/zero",
            "symlink:/etc/hostname",
            "symlink:loop",
            "absent",
            "hardlink",
            "symlink:inside",
            "symlink:dir",
        ],
    )
    mu.special[name] = kind
    return f"data file {name!r} -> {kind}"


def m_body(mu: Mutant, rng: random.Random) -> str | None:
    cands = [(n, a) for _, n in _nodes(mu.model) for a in n.attribute if a.HasField("g")]
    if not cands:
        return None
    n, a = _pick(rng, cands)
    body = a.g
    r = rng.random()
    if r < 0.12:
        n.attribute.remove(a)
        return f"{n.name!r}: body {a.name} removed"
    if r < 0.22:
        a.g.CopyFrom(helper.make_graph([], "empty", [], []))
        return f"{n.name!r}: body {a.name} emptied"
    if r < 0.32 and body.input:
        del body.input[rng.randrange(len(body.input))]
        return f"{n.name!r}: a body input removed"
    if r < 0.42:
        body.input.append(helper.make_tensor_value_info("extra_in", TensorProto.FLOAT, [1]))
        return f"{n.name!r}: a body input added"
    if r < 0.52 and body.output:
        del body.output[rng.randrange(len(body.output))]
        return f"{n.name!r}: a body output removed"
    if r < 0.62 and body.output:
        body.output[rng.randrange(len(body.output))].name = _pick(rng, ["nowhere", "x", *_names(mu.model)])
        return f"{n.name!r}: a body output renamed"
    if r < 0.72 and body.node:
        bn = body.node[rng.randrange(len(body.node))]
        if bn.input:
            bn.input[0] = _pick(rng, ["outer_ghost", *_names(mu.model)])
            return f"{n.name!r}: body node reads {bn.input[0]!r}"
    if r < 0.8:
        others = [(m, b) for _, m in _nodes(mu.model) for b in m.attribute if b.HasField("g") and b is not a]
        if others:
            _, b = _pick(rng, others)
            a.g.CopyFrom(b.g)
            return f"{n.name!r}: body {a.name} replaced by another node's body"
    if r < 0.9:
        a.g.node.append(
            helper.make_node("Relu", [n.output[0] if n.output else "y"], ["inner_cycle"], "inner")
        )
        return f"{n.name!r}: body reads its own node's output"
    n.attribute.append(helper.make_attribute("num_scan_inputs", _pick(rng, [0, -1, 50, 2**40])))
    return f"{n.name!r}: num_scan_inputs set"


def m_opset(mu: Mutant, rng: random.Random) -> str | None:
    ops = mu.model.opset_import
    r = rng.random()
    if r < 0.3 and ops:
        del ops[rng.randrange(len(ops))]
        return "an opset import removed"
    if r < 0.7 and ops:
        o = ops[rng.randrange(len(ops))]
        o.version = _pick(rng, [0, -1, 1, 6, 1000, 2**40, 2**63 - 1])
        return f"opset {o.domain!r} -> {o.version}"
    ops.append(helper.make_opsetid(_pick(rng, DOMAINS), rng.choice([1, 17, 0])))
    return "an opset import added"


def m_ir_version(mu: Mutant, rng: random.Random) -> str | None:
    mu.model.ir_version = _pick(rng, [0, -1, 1, 3, 4, 7, 10, 11, 100, 2**40])
    return f"ir_version -> {mu.model.ir_version}"


def m_metadata(mu: Mutant, rng: random.Random) -> str | None:
    junk = [
        "[]",
        "{",
        "null",
        '{"nodes": 5}',
        '{"nodes": {"fc1": 5}}',
        '{"weights": {"w": "x"}}',
        '{"weights": {"fc1.weight": {"param": 5}}}',
        '{"weights": [1]}',
        '{"layers": {"a": null}}',
        '{"nodes": {"' + "x" * 10 + '": ["a"]}}',
        "1e999",
        '"text"',
    ]
    if rng.random() < 0.5:
        mu.model.metadata_props.add(key="onnxscope.layer_map", value=_pick(rng, junk))
        return "layer map junk"
    _, n = _pick(rng, _nodes(mu.model))
    value = _pick(
        rng, ["['a', 1]", "[[]]", "{}", "['', '']", "[" * 200, "not python", "['a', 'b', 'c']", "None"]
    )
    n.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=value)
    return f"{n.name!r}: name_scopes junk"


def m_constant(mu: Mutant, rng: random.Random) -> str | None:
    g = _pick(rng, graphs(mu.model))
    name = _pick(rng, [*_names(mu.model), "konst"])
    kind = rng.randrange(8)
    attrs: dict[str, object] = {}
    if kind == 0:
        attrs["value"] = numpy_helper.from_array(np.zeros((2, 2), np.float32))
    elif kind == 1:
        attrs["value_float"] = 1.5
    elif kind == 2:
        attrs["value_floats"] = [1.0, 2.0]
    elif kind == 3:
        attrs["value_int"] = 3
    elif kind == 4:
        attrs["value_ints"] = []
    elif kind == 5:
        attrs["value_string"] = "s"
    elif kind == 6:
        attrs["value_strings"] = ["a", "b"]
    else:
        attrs["sparse_value"] = helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([1.0], np.float32), "v"),
            numpy_helper.from_array(np.array([rng.choice([0, 5, -1])], np.int64), "i"),
            [2, 2],
        )
    if rng.random() < 0.2:
        attrs["value_int"] = 1  # two value attributes
    g.node.insert(
        rng.randrange(len(g.node) + 1), helper.make_node("Constant", [], [name], f"const_{kind}", **attrs)
    )
    return f"Constant ({list(attrs)}) producing {name!r}"


def m_sparse(mu: Mutant, rng: random.Random) -> str | None:
    name = _pick(rng, [*_names(mu.model), "sparse_w"])
    idx = np.array([rng.choice([0, 1, 3, 99, -1])], np.int64)
    mu.model.graph.sparse_initializer.append(
        helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([1.0], np.float32), name),
            numpy_helper.from_array(idx, "idx"),
            _pick(rng, [[2, 2], [4], [], [2**40]]),
        )
    )
    return f"sparse initializer {name!r}"


def m_shadow_input(mu: Mutant, rng: random.Random) -> str | None:
    """Valid: an initializer that is also a graph input (a default value the caller may override)."""
    g = mu.model.graph
    names = {v.name for v in g.input}
    cands = [t for t in g.initializer if t.name not in names and t.data_location != TensorProto.EXTERNAL]
    t = _pick(rng, cands)
    if t is None:
        return None
    g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return f"initializer {t.name!r} also a graph input"


def m_unused_initializer(mu: Mutant, rng: random.Random) -> str | None:
    """Valid: an initializer nothing reads."""
    g = _pick(rng, graphs(mu.model))
    name = f"unused_{rng.randrange(1000)}"
    if name in _names(mu.model):
        return None
    g.initializer.append(numpy_helper.from_array(np.ones((3, 3), np.float32), name))
    return f"unused initializer {name!r}"


def m_rename_everywhere(mu: Mutant, rng: random.Random) -> str | None:
    """Valid: one tensor renamed consistently to an unusual but fresh name."""
    old = _pick(rng, _names(mu.model))
    new = _pick(rng, [n for n in ODD_NAMES if n]) + f"#{rng.randrange(1000)}"
    if old is None or new in _names(mu.model) or any(old in f for f in mu.files):
        return None
    for g in graphs(mu.model):
        for v in (*g.input, *g.output, *g.value_info):
            if v.name == old:
                v.name = new
        for t in g.initializer:
            if t.name == old:
                t.name = new
        for n in g.node:
            for seq in (n.input, n.output):
                for k, x in enumerate(seq):
                    if x == old:
                        seq[k] = new
    return f"tensor {old!r} renamed everywhere to {new[:40]!r}"


def m_initializer(mu: Mutant, rng: random.Random) -> str | None:
    g = mu.model.graph
    r = rng.random()
    if r < 0.35 and g.input:
        v = g.input[rng.randrange(len(g.input))]
        g.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), v.name))
        return f"graph input {v.name!r} given an initializer of another shape"
    if r < 0.7 and g.initializer:
        g.initializer.append(copy.deepcopy(g.initializer[rng.randrange(len(g.initializer))]))
        return "initializer duplicated"
    s = numpy_helper.from_array(np.array([b"\xff\xfe", b"ok"], dtype=object), "strings")
    g.initializer.append(s)
    return "string initializer with invalid UTF-8"


def m_value_info(mu: Mutant, rng: random.Random) -> str | None:
    g = _pick(rng, graphs(mu.model))
    name = _pick(rng, _names(mu.model))
    if name is None:
        return None
    dims = [_pick(rng, [1, 2, 0, -1, "n", 2**62]) for _ in range(rng.randint(0, 4))]
    g.value_info.append(helper.make_tensor_value_info(name, _pick(rng, [1, 7, 8, 10, 0]), dims))
    return f"value_info for {name!r}"


def m_function(mu: Mutant, rng: random.Random) -> str | None:
    m = mu.model
    r = rng.random()
    if m.functions and r < 0.5:
        f = m.functions[rng.randrange(len(m.functions))]
        if f.node and rng.random() < 0.5:
            f.node[0].input[0] = "ghost"
            return f"function {f.name!r} reads a ghost"
        f.name = "Renamed"
        return f"function {f.name!r} renamed"
    fn = helper.make_function(
        "local", "F", ["X"], ["Y"], [helper.make_node("Relu", ["X"], ["Y"])], [helper.make_opsetid("", 17)]
    )
    m.functions.append(fn)
    g, n = _pick(rng, _nodes(m))
    g.node.append(
        helper.make_node("F", [n.output[0] if n.output else "x"], ["f_out"], "call_f", domain="local")
    )
    return "local function called"


def m_huge_dims(mu: Mutant, rng: random.Random) -> str | None:
    g = mu.model.graph
    if not g.input:
        return None
    v = g.input[rng.randrange(len(g.input))]
    shape = v.type.tensor_type.shape
    if not shape.dim:
        return None
    for d in shape.dim:
        if rng.random() < 0.6:
            d.dim_value = _pick(rng, [3_000_000_000, 2**31, 100_000, 2**62])
    return f"graph input {v.name!r} dims -> {[d.dim_value or d.dim_param for d in shape.dim]}"


def m_model_path(mu: Mutant, rng: random.Random) -> str | None:
    mu.model_kind = _pick(rng, ["fifo", "dir", "zero", "devnull", "symlink_loop"])
    return f"model path is a {mu.model_kind}"


MUTATIONS: list[tuple[object, float]] = [
    (m_drop_input, 3),
    (m_rewire_input, 4),
    (m_add_input, 1),
    (m_cycle, 3),
    (m_rename_output, 3),
    (m_output_count, 1.5),
    (m_drop_node, 3),
    (m_dup_node, 1.5),
    (m_shuffle_nodes, 2),
    (m_op_type, 3),
    (m_graph_output, 3),
    (m_graph_input, 3),
    (m_value_dims, 3),
    (m_value_type, 2),
    (m_tensor_dtype, 4),
    (m_tensor_dims, 4),
    (m_tensor_payload, 4),
    (m_attr_type, 4),
    (m_attr_value, 3),
    (m_attr_drop_add, 3),
    (m_names, 3),
    (m_invalid_utf8, 3),
    (m_external, 4),
    (m_external_file, 2),
    (m_body, 4),
    (m_opset, 2),
    (m_ir_version, 1),
    (m_metadata, 2),
    (m_constant, 2),
    (m_sparse, 1),
    (m_initializer, 1.5),
    (m_shadow_input, 1),
    (m_unused_initializer, 1),
    (m_rename_everywhere, 1.5),
    (m_value_info, 1.5),
    (m_function, 1),
    (m_huge_dims, 2),
    (m_model_path, 0.1),
]


# Mutations that keep a model valid: a case made of these alone must load (graphs as they ship).
VALID = {m_shuffle_nodes, m_shadow_input, m_unused_initializer, m_rename_everywhere, m_metadata}


def _corrupt_utf8(data: bytes, name: str, rng: random.Random) -> bytes:
    raw = name.encode()
    hits = [m.start() for m in re.finditer(re.escape(raw), data)]
    if not hits:
        return data
    at = hits[rng.randrange(len(hits))] + rng.randrange(len(raw) - 1)
    bad = _pick(rng, [b"\xff", b"\xc0", b"\xed", b"\x80", b"\xfe"])
    return data[:at] + bad + data[at + 1 :]


def _byte_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    r = rng.random()
    b = bytearray(data)
    if r < 0.5 and b:
        k = rng.randint(1, 8)
        for _ in range(k):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), f"{k} bit(s) flipped"
    if r < 0.65 and b:
        at = rng.randrange(len(b))
        b[at] = rng.randrange(256)
        return bytes(b), f"byte {at} replaced"
    if r < 0.8:
        cut = rng.randrange(len(b) + 1)
        return bytes(b[:cut]), f"cut at {cut}"
    if r < 0.9:
        at = rng.randrange(len(b) + 1)
        return bytes(
            b[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + b[at:]
        ), "bytes inserted"
    at = rng.randrange(len(b) + 1)
    n = rng.randint(1, 64)
    return bytes(b[:at] + b[at : at + n] + b[at:]), "slice duplicated"


_SEED_CACHE: dict[str, tuple[bytes, Files]] = {}


def _seed(name: str) -> tuple[onnx.ModelProto, Files]:
    if name not in _SEED_CACHE:
        model, files = SEEDS[name]()
        _SEED_CACHE[name] = (model.SerializeToString(), files)
    data, files = _SEED_CACHE[name]
    m = onnx.ModelProto()
    m.ParseFromString(data)
    return m, dict(files)


@dataclass
class Case:
    index: int
    seed: str
    mutations: list[str]
    model: bytes
    files: Files
    special: dict[str, str]
    model_kind: str
    valid: bool = False
    ops: list[str] = field(default_factory=list)


# Mutations that often leave a model loadable: half of the capture cases draw from these only, so that the
# run-time part (input generation, graph rewriting, onnxruntime, the capture file) sees many odd models.
SOFT = [
    m_attr_value,
    m_value_dims,
    m_huge_dims,
    m_metadata,
    m_shuffle_nodes,
    m_op_type,
    m_value_type,
    m_attr_drop_add,
    m_shadow_input,
    m_rename_everywhere,
    m_graph_output,
    m_body,
    m_constant,
    m_value_info,
    m_unused_initializer,
    m_function,
    m_opset,
]


def make_case(seed: int, index: int, pristine: str | None = None, capture: bool = False) -> Case:
    """Case ``index`` of the campaign ``seed``: the same bytes on every run (``pristine``: that seed unmutated;
    ``capture``: a capture case, which draws from the soft mutations half of the time)."""
    if pristine is not None:
        model, files = _seed(pristine)
        return Case(index, pristine, [], model.SerializeToString(), files, {}, "file", valid=True)
    rng = random.Random(f"onnxscope-fuzz:{seed}:{index}")
    name = _pick(rng, sorted(SEEDS))
    model, files = _seed(name)
    mu = Mutant(model, files)
    done: list[str] = []
    ops: list[str] = []
    valid = True
    pool = MUTATIONS
    if capture and rng.random() < 0.5:
        pool = [(f, w) for f, w in MUTATIONS if f in SOFT]
    funcs = [f for f, _ in pool]
    weights = [w for _, w in pool]
    want = rng.choice([1, 1, 1, 2, 2, 3])
    tries = 0
    while len(done) < want and tries < 20:
        tries += 1
        fn = rng.choices(funcs, weights)[0]
        try:
            what = fn(mu, rng)
        except (ValueError, TypeError, IndexError):  # a protobuf refused the mutation itself: try another
            what = None
        if what:
            done.append(what)
            ops.append(fn.__name__.removeprefix("m_"))
            valid = valid and fn in VALID
    data = mu.model.SerializeToString()
    for name_ in mu.utf8:
        data = _corrupt_utf8(data, name_, rng)
    if rng.random() < 0.25:
        data, what = _byte_mutation(data, rng)
        done.append(what)
        ops.append("bytes")
        valid = False
    if mu.utf8:
        ops.append("invalid_utf8")
    return Case(
        index, name, done, data, mu.files, mu.special, mu.model_kind, valid=valid and bool(done), ops=ops
    )


def write_case(case: Case, folder: Path) -> None:
    """Write the case's bytes into ``folder`` (emptied first): ``src/`` holds the model and data files as bytes,
    ``case.json`` how to lay them out (FIFOs, symlinks…); :func:`materialize` builds the layout."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "src").mkdir(parents=True)
    (folder / "src" / MODEL).write_bytes(case.model)
    for name, data in case.files.items():
        (folder / "src" / name).write_bytes(data)
    meta = {
        "index": case.index,
        "seed_model": case.seed,
        "mutations": case.mutations,
        "files": sorted(case.files),
        "special": case.special,
        "model_kind": case.model_kind,
        "valid": case.valid,
        "ops": case.ops,
    }
    (folder / "case.json").write_text(json.dumps(meta, indent=1))


def materialize(case_dir: Path, folder: Path) -> Path:
    """Lay the case saved in ``case_dir`` out in ``folder`` (emptied first) as a user would have it; return the
    model's path."""
    meta = json.loads((case_dir / "case.json").read_text())
    src = case_dir / "src"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    path = folder / MODEL
    kind = meta.get("model_kind", "file")
    if kind == "file":
        shutil.copyfile(src / MODEL, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "zero":
        os.symlink("/dev/zero", path)
    elif kind == "devnull":
        os.symlink("/dev/null", path)
    else:
        os.symlink(MODEL, path)
    for name in meta.get("files", []):
        special = meta.get("special", {}).get(name)
        target = folder / name
        if special is None:
            shutil.copyfile(src / name, target)
        elif special == "fifo":
            os.mkfifo(target)
        elif special == "dir":
            target.mkdir()
        elif special == "absent":
            pass
        elif special == "hardlink":
            shutil.copyfile(src / name, folder / "data.orig")
            os.link(folder / "data.orig", target)
        elif special == "symlink:loop":
            os.symlink(name, target)
        elif special == "symlink:inside":
            shutil.copyfile(src / name, folder / "data.orig")
            os.symlink("data.orig", target)
        elif special == "symlink:dir":
            os.symlink(".", target)
        else:
            os.symlink(special.split(":", 1)[1], target)
    return path


# ------------------------------------------------------------------------------------------------------------
# Queries (inside a worker)
# ------------------------------------------------------------------------------------------------------------

_PKG = str(ROOT / "onnxscope") + os.sep


def signature(e: BaseException) -> str:
    """Exception type + the innermost onnxscope frame (file:function), e.g. ``ValueError@weights.py:numpy``."""
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if f.filename.startswith(_PKG)]
    frame = ours[-1] if ours else (tb[-1] if tb else None)
    where = "?" if frame is None else f"{os.path.relpath(frame.filename, ROOT)}:{frame.name}"
    if not ours:
        where = "outside onnxscope:" + where
    return f"{type(e).__name__}@{where}"


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def __call__(self, query: str, fn, *args: object, **kwargs: object) -> object:
        from onnxscope.errors import OnnxscopeError

        try:
            return fn(*args, **kwargs)
        except OnnxscopeError as e:
            msg = str(e)
            self.events.append({"query": query, "kind": "clean", "type": type(e).__name__, "msg": msg[:300]})
            if "\n" in msg or not msg:
                self.events.append(
                    {
                        "query": query,
                        "kind": "other",
                        "sig": f"MultiLineMessage@{type(e).__name__}",
                        "type": type(e).__name__,
                        "msg": msg[:500],
                        "tb": traceback.format_exc()[-4000:],
                    }
                )
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            sig = signature(e)
            if str(e).startswith("CanaryLeak"):  # a file outside the input's folder was read: a security bug
                sig = f"CanaryLeak@{query}"
            elif str(e).startswith("RoundTrip") and e.__cause__ is not None:
                sig = f"RoundTrip:{type(e.__cause__).__name__}@{signature(e.__cause__).split('@', 1)[1]}"
            self.events.append(
                {
                    "query": query,
                    "kind": "other",
                    "sig": sig,
                    "type": type(e).__name__,
                    "msg": str(e)[:500],
                    "tb": traceback.format_exc()[-4000:],
                }
            )
        return None


def _symbols(model: object) -> dict[str, int]:
    dims: dict[str, int] = {}
    for v in model.ir.graph.inputs:  # type: ignore[attr-defined]
        if v.shape is None:
            continue
        for d in v.shape:
            if not isinstance(d, int) and getattr(d, "value", None) is not None:
                dims[str(d.value)] = 2
    return dims


CANARY = bytes(range(64)) * 4  # the worker's working directory holds it as secret.bin: it must never be read


def _mutate_capture(saved: Path, rng: random.Random, out: Path) -> Path:
    """A broken copy of a saved capture: bytes flipped or cut, or its metadata bent out of shape."""
    bad = out / "bad_cap.npz"
    if rng.random() < 0.4:
        data, _ = _byte_mutation(saved.read_bytes(), rng)
        bad.write_bytes(data)
        return bad
    with np.load(saved, allow_pickle=False) as z:
        arrays = {
            k: z[k] for k in z.files
        }  # raises if the saved file holds pickled objects (a bug reported apart)
    meta = json.loads(bytes(arrays["__onnxscope__"]).decode())
    junk = [None, 1, -1, "x", [], {}, [1, 2], {"a": 1}, [["a"]], True, 1.5]
    r = rng.random()
    if r < 0.5 and meta:
        key = _pick(rng, sorted(meta))
        if rng.random() < 0.3:
            del meta[key]
        else:
            meta[key] = _pick(rng, junk)
    elif r < 0.8 and meta.get("tensors"):
        t = meta["tensors"][_pick(rng, sorted(meta["tensors"]))]
        t[_pick(rng, sorted(t) or ["name"])] = _pick(rng, junk)
    elif r < 0.9:
        meta = _pick(rng, junk)
    else:
        arrays.pop(_pick(rng, sorted(k for k in arrays if k != "__onnxscope__") or ["__onnxscope__"]), None)
    arrays["__onnxscope__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(bad, **arrays)
    return bad


def _mutate_inputs(
    feeds: dict[str, np.ndarray], rng: random.Random, out: Path
) -> tuple[list[str], str | None]:
    """Input files written from ``feeds`` (.npy, .npz, a test-data folder of .pb, maybe with external data
    pointing at the canary in the working directory), one of them damaged; the read_inputs arguments."""
    folder = out / "inputs"
    folder.mkdir()
    tensors = folder / "test_data_set_0"
    tensors.mkdir()
    specs: list[str] = []
    for i, (name, a) in enumerate(sorted(feeds.items())):
        t = numpy_helper.from_array(np.asarray(a), name)
        if rng.random() < 0.3:  # external data: the canary's name, which must not resolve to the working dir
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            t.external_data.add(
                key="location", value=_pick(rng, ["secret.bin", "../cwd/secret.bin", "data.bin"])
            )
            t.external_data.add(key="length", value=str(len(np.asarray(a).tobytes())))
            (tensors / "data.bin").write_bytes(np.asarray(a).tobytes())
        (tensors / f"input_{i}.pb").write_bytes(t.SerializeToString())
        np.save(folder / f"{i}.npy", np.asarray(a))
        specs.append(f"{name}={folder / f'{i}.npy'}")
    np.savez(folder / "all.npz", **{k: np.asarray(v) for k, v in feeds.items()})
    victims = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "data.bin")
    if victims and rng.random() < 0.8:
        v = _pick(rng, victims)
        if rng.random() < 0.15:
            v.unlink()
            os.mkfifo(v)  # must be refused, never opened
        else:
            v.write_bytes(_byte_mutation(v.read_bytes(), rng)[0])
    bundle = _pick(rng, [str(folder / "all.npz"), str(tensors), None])
    return specs if bundle is None else [], bundle


def run_queries(path: Path, capture: bool, out: Path, key: str = "") -> list[dict[str, object]]:
    """Every static query on the model at ``path`` (and a capture when asked); one event per failure."""
    import argparse

    import onnxscope
    from onnxscope import paths as P
    from onnxscope.cli import capture as cli_capture
    from onnxscope.cli import residuals as cli_residuals
    from onnxscope.cli import summary as cli_summary
    from onnxscope.cli import weights as cli_weights
    from onnxscope.graph import WEIGHTED_OPS, label
    from onnxscope.render import to_json

    rec = Recorder()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    m = rec("load", onnxscope.load, path)
    if m is None:
        return rec.events

    rec("summary", lambda: to_json(m.summary().to_dict()))
    rec("cli summary", cli_summary.run, argparse.Namespace(model=str(path), json=False))

    def weights() -> None:
        ws = m.weights
        to_json({"n": len(ws), "parameters": ws.parameters, "nbytes": ws.nbytes})
        for w in ws.values():
            rec("weights to_dict", lambda w=w: to_json(w.to_dict()))
            if w.dtype != "string":
                rec("weights stats", lambda w=w: to_json(w.stats().to_dict()))
                rec("weights values", w.values)
        rec("weights duplicates", ws.duplicates)

    rec("weights", weights)
    rec(
        "cli weights",
        cli_weights.run,
        argparse.Namespace(
            model=str(path),
            json=False,
            name=None,
            op=None,
            role=None,
            stats=True,
            duplicates=True,
            raw=False,
            save=str(out / "w.npz"),
        ),
    )

    def neurons() -> None:
        layers = [n for n in m.all_nodes() if n.op_type in WEIGHTED_OPS][:2]
        for node in layers:
            for index in (0, 1):
                rec("neuron", lambda node=node, index=index: to_json(m.neuron(label(node), index).to_dict()))

    rec("neuron", neurons)
    rec("residuals", lambda: to_json([r.to_dict() for r in onnxscope.find_residuals(m)]))
    rec("cli residuals", cli_residuals.run, argparse.Namespace(model=str(path), json=False))
    rec("attention", lambda: to_json([a.to_dict() for a in onnxscope.find_attention(m)]))

    def paths() -> None:
        g = m.ir.graph
        src = next((v.name for v in g.inputs if v.name), None)
        dst = next((v.name for v in g.outputs if v.name), None)
        nodes = [label(n) for n in g]
        if src and dst:
            rec("all_paths", lambda: to_json(list(P.all_paths(m, src, dst, limit=5))))
            rec("shortest_path", P.shortest_path, m, src, dst)
            rec("between", lambda: to_json(sorted(P.between(m, [src], [dst]).nodes)))
            rec("ancestors", P.ancestors, m, dst)
            rec("extract", P.extract, m, [src], [dst], out / "sub.onnx")
        if len(nodes) >= 2:
            rec("all_paths nodes", lambda: list(P.all_paths(m, nodes[0], nodes[-1], limit=3)))
        rec("graph views", lambda: (m.graph.number_of_edges(), m.tensor_graph.number_of_edges()))

    rec("paths", paths)
    if capture:
        rng = random.Random(f"capture:{key}")
        cap = rec("capture", onnxscope.capture, m, None, None, None, random=True, dims=_symbols(m), seed=0)
        if cap is not None:
            rec("capture table", lambda: (cli_capture.render(cap, False), cli_capture.render(cap, True)))
            saved = rec("capture save", cap.save, out / "cap.npz")
            if saved is not None:

                def read_back(p: Path) -> None:
                    back = onnxscope.load_capture(p, model=m)
                    cli_capture.render(back, True)
                    for name in list(back)[:8]:
                        back.info(name)
                        back[name]
                    for node in list(back.provenance.nodes)[:3]:
                        back.node(node)

                def round_trip() -> None:  # a capture onnxscope saved must read back: any error is a bug
                    from onnxscope.errors import OnnxscopeError

                    try:
                        read_back(Path(saved))
                    except OnnxscopeError as e:
                        raise AssertionError(f"RoundTrip: a saved capture does not read back: {e}") from e

                rec("load_capture", round_trip)
                try:
                    broken = _mutate_capture(Path(saved), rng, out)
                except Exception:  # the saved file itself is unreadable: reported by round_trip above
                    broken = None
                if broken is not None:
                    rec("load_capture broken", read_back, broken)

            def inputs() -> None:
                from onnxscope.inputs import read_inputs

                specs, bundle = _mutate_inputs(dict(cap.inputs), rng, out)
                got = read_inputs(specs, bundle)
                for a in got.values():
                    if np.asarray(a).tobytes().startswith(CANARY[:16]):
                        raise AssertionError(
                            "CanaryLeak: an input file read the working directory's secret.bin"
                        )
                onnxscope.capture(m, got)

            rec("read_inputs", inputs)
    return rec.events


def _limit_resources() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_FSIZE, (WORKER_FILE_SIZE, WORKER_FILE_SIZE))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def worker(seed: int, folder: Path) -> None:
    """Read one request per line on stdin, answer one JSON line per case on stdout."""
    import logging
    import warnings

    _limit_resources()
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    import onnxscope
    import onnxscope.model
    import onnxscope.session  # noqa: F401

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing printed by the code under test reaches the protocol
    cwd = folder / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "secret.bin").write_bytes(CANARY)
    os.chdir(cwd)  # a relative path that escapes its folder would land here, on the canary
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        os.ftruncate(2, 0)  # stderr keeps only the current case (a crash's last words)
        os.lseek(2, 0, os.SEEK_SET)
        start = time.perf_counter()
        if "replay" in req:
            case_dir = Path(req["replay"])
        else:
            case = make_case(seed, req["i"], req.get("pristine"), bool(req["capture"]))
            case_dir = folder / "case"
            write_case(case, case_dir)
        meta = json.loads((case_dir / "case.json").read_text())
        desc = meta.get("mutations", [])
        path = materialize(case_dir, folder / "run")
        events = run_queries(path, req["capture"], folder / "out", f"{meta.get('index')}:{seed}")
        if meta.get("valid"):  # a valid model refused at load: a false refusal is a failure too
            for e in events:
                if e["query"] == "load" and e["kind"] == "clean":
                    shape = re.sub(r"'[^']*'|[0-9]+|/[^ :]*", "_", e["msg"])[:80]
                    e.update(kind="other", sig=f"FalseRefusal@{shape}", tb="")
        loaded = not any(e["query"] == "load" for e in events)
        out.write(
            json.dumps(
                {
                    "i": req.get("i"),
                    "events": events,
                    "desc": desc,
                    "loaded": loaded,
                    "seconds": time.perf_counter() - start,
                }
            )
            + "\n"
        )
        out.flush()


# ------------------------------------------------------------------------------------------------------------
# The parent: dispatch, watchdog, bookkeeping
# ------------------------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, k: int, seed: int, work: Path) -> None:
        self.k, self.seed = k, seed
        self.folder = work / f"w{k}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.err = self.folder / "stderr.txt"
        env = {
            **os.environ,
            "ONNXSCOPE_MAX_BYTES": str(WORKER_MAX_BYTES),
            "OMP_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", "--seed", str(seed), "--work", str(self.folder)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                start_new_session=True,
                text=True,
                bufsize=1,
            )
        self.request: dict[str, object] | None = None
        self.deadline = 0.0
        self.buffer = ""
        self.ready = False

    def send(self, request: dict[str, object], timeout: float) -> None:
        self.request = request
        self.deadline = time.monotonic() + timeout
        self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass


@dataclass
class Tally:
    cases: int = 0
    capture_cases: int = 0
    ok: int = 0
    clean: int = 0
    other: int = 0
    crash: int = 0
    hang: int = 0
    clean_types: Counter = field(default_factory=Counter)
    clean_shapes: Counter = field(default_factory=Counter)
    signatures: Counter = field(default_factory=Counter)
    queries: dict[str, set] = field(default_factory=dict)
    slowest: float = 0.0
    loaded: int = 0
    captured: int = 0


def _slug(sig: str) -> str:
    short = re.sub(r"[^A-Za-z0-9_.@-]+", "_", sig)[:80]
    return f"{short}-{hashlib.sha1(sig.encode()).hexdigest()[:8]}"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in (folder / "src").iterdir())


class Campaign:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.repros = self.out / "repros"
        self.repros.mkdir(parents=True, exist_ok=True)
        self.tally = Tally()
        self.saved: dict[str, int] = {}  # signature -> size of the kept repro

    def is_capture(self, i: int) -> bool:
        n, m = self.args.cases, self.args.capture_cases
        return m > 0 and (i * m) // n != ((i + 1) * m) // n

    def keep(self, sig: str, case_dir: Path, info: dict[str, object]) -> None:
        size = _size(case_dir) if case_dir.exists() else 0
        if sig in self.saved and self.saved[sig] <= size:
            return
        dest = self.repros / _slug(sig)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(case_dir, dest)  # regular files only: src/ and case.json
        meta = json.loads((dest / "case.json").read_text()) if (dest / "case.json").exists() else {}
        meta.update(info, signature=sig, campaign_seed=self.args.seed)
        (dest / "case.json").write_text(json.dumps(meta, indent=1))
        self.saved[sig] = size

    def record(self, w: Worker, result: dict[str, object], case_dir: Path) -> None:
        t = self.tally
        t.cases += 1
        t.capture_cases += bool(w.request and w.request.get("capture"))
        t.slowest = max(t.slowest, float(result.get("seconds", 0.0)))
        t.loaded += bool(result.get("loaded"))
        t.captured += bool(result.get("loaded") and w.request and w.request.get("capture"))
        events = result["events"]
        others = [e for e in events if e["kind"] == "other"]
        if others:
            t.other += 1
            for e in {e["sig"]: e for e in others}.values():
                t.signatures[e["sig"]] += 1
                t.queries.setdefault(e["sig"], set()).add(e["query"])
                self.keep(
                    e["sig"],
                    case_dir,
                    {
                        "query": e["query"],
                        "message": e["msg"],
                        "traceback": e["tb"],
                        "capture": bool(w.request.get("capture")),
                    },
                )
        elif events:
            t.clean += 1
            t.clean_types.update({e["type"] for e in events})
            for e in events[:1]:
                shape = re.sub(r"'[^']*'|\"[^\"]*\"|[0-9]+|/[^ :]*", "_", e.get("msg", ""))[:90]
                t.clean_shapes[f"{e['query']}: {e['type']}: {shape}"] += 1
        else:
            t.ok += 1

    def failure(self, w: Worker, kind: str, case_dir: Path) -> None:
        t = self.tally
        t.cases += 1
        t.capture_cases += bool(w.request and w.request.get("capture"))
        setattr(t, kind, getattr(t, kind) + 1)
        stderr = w.err.read_text(errors="replace")[-4000:] if w.err.exists() else ""
        meta = json.loads((case_dir / "case.json").read_text()) if (case_dir / "case.json").exists() else {}
        what = f"{meta.get('seed_model', '?')}:{'+'.join(meta.get('ops') or ['?'])}"
        sig = f"hang@{what}" if kind == "hang" else f"crash@{what} (exit {w.proc.returncode})"
        t.signatures[sig] += 1
        t.queries.setdefault(sig, set()).add("?")
        if case_dir.exists():
            self.keep(
                sig,
                case_dir,
                {
                    "query": "?",
                    "message": kind,
                    "traceback": stderr,
                    "capture": bool(w.request and w.request.get("capture")),
                },
            )

    def run(self, requests: list[dict[str, object]], case_dir_of) -> None:
        """Send every request to the workers; watch them; restart a worker that hangs or dies."""
        work = Path(tempfile.mkdtemp(prefix="onnxscope-fuzz-"))
        try:
            self._run(requests, case_dir_of, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, requests: list[dict[str, object]], case_dir_of, work: Path) -> None:
        sel = selectors.DefaultSelector()
        pending = list(reversed(requests))
        workers: dict[int, Worker] = {}

        def start(k: int) -> None:
            w = Worker(k, self.args.seed, work)
            w.deadline = time.monotonic() + 120  # imports
            workers[k] = w
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)  # type: ignore[arg-type]

        def stop(w: Worker) -> None:
            sel.unregister(w.proc.stdout)  # type: ignore[arg-type]
            w.kill()

        def feed(w: Worker) -> None:
            if pending:
                req = pending.pop()
                w.send(req, self.args.timeout * (2 if req.get("capture") else 1))
            else:
                w.request = None
                w.deadline = float("inf")

        for k in range(max(1, self.args.jobs)):
            start(k)
        last_report = time.monotonic()
        while any(w.request is not None or not w.ready for w in workers.values()):
            now = time.monotonic()
            timeout = max(0.0, min(w.deadline for w in workers.values()) - now)
            for key, _ in sel.select(timeout=min(timeout, 5.0)):
                w: Worker = key.data
                chunk = os.read(w.proc.stdout.fileno(), 1 << 16).decode()  # type: ignore[union-attr]
                if not chunk:  # the worker died
                    req = w.request
                    stop(w)
                    if req is not None and w.ready:
                        self.failure(w, "crash", case_dir_of(w, req))
                    elif not w.ready:
                        raise SystemExit(f"fuzz worker {w.k} could not start:\n{w.err.read_text()[-3000:]}")
                    start(w.k)
                    continue
                w.buffer += chunk
                while "\n" in w.buffer:
                    line, w.buffer = w.buffer.split("\n", 1)
                    msg = json.loads(line)
                    if "ready" in msg:
                        w.ready = True
                    else:
                        self.record(w, msg, case_dir_of(w, w.request))
                    feed(w)
            now = time.monotonic()
            for w in list(workers.values()):
                if w.request is not None and now > w.deadline:
                    req = w.request
                    stop(w)
                    self.failure(w, "hang", case_dir_of(w, req))
                    start(w.k)
                elif not w.ready and now > w.deadline:
                    stop(w)
                    raise SystemExit(f"fuzz worker {w.k} did not start in time")
            if self.args.progress and time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                t = self.tally
                print(
                    f"  … {t.cases}/{len(requests)} cases, {t.other} other, {t.crash} crashes, {t.hang} hangs",
                    file=sys.stderr,
                    flush=True,
                )
        for w in workers.values():
            w.proc.stdin.close()  # type: ignore[union-attr]
            w.proc.wait(timeout=30)
            w.proc.stdout.close()  # type: ignore[union-attr]
        sel.close()

    def report(self, seconds: float) -> dict[str, object]:
        t = self.tally
        summary = {
            "cases": t.cases,
            "capture_cases": t.capture_cases,
            "seed": self.args.seed,
            "jobs": self.args.jobs,
            "seconds": round(seconds, 1),
            "loaded": t.loaded,
            "capture_ran": t.captured,
            "ok": t.ok,
            "clean_errors": t.clean,
            "other_exceptions": t.other,
            "crashes": t.crash,
            "hangs": t.hang,
            "clean_error_types": dict(t.clean_types.most_common()),
            "signatures": {
                s: {"cases": c, "queries": sorted(t.queries.get(s, ())), "repro": str(self.repros / _slug(s))}
                for s, c in t.signatures.most_common()
            },
            "slowest_case_s": round(t.slowest, 2),
            "clean_error_shapes": dict(t.clean_shapes.most_common(60)),
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def print_summary(s: dict[str, object]) -> None:
    print(
        f"fuzz: {s['cases']} cases ({s['capture_cases']} through capture), seed {s['seed']}, "
        f"{s['jobs']} job(s), {s['seconds']} s (slowest case {s['slowest_case_s']} s)"
    )
    print(f"  loaded                {s['loaded']}  (of which {s['capture_ran']} went on to capture)")
    print(f"  ok (no error)         {s['ok']}")
    print(
        f"  clean errors          {s['clean_errors']}  "
        + ", ".join(f"{k} {v}" for k, v in s["clean_error_types"].items())
    )
    print(f"  other exceptions      {s['other_exceptions']}")
    print(f"  crashes               {s['crashes']}")
    print(f"  hangs                 {s['hangs']}")
    sigs = s["signatures"]
    if sigs:
        print(f"{len(sigs)} distinct signature(s):")
        for sig, d in sigs.items():
            print(f"  {d['cases']:6d}  {sig}  [{', '.join(d['queries'])}]")
            print(f"          repro: {d['repro']}")


def replay(args: argparse.Namespace) -> int:
    """Re-run every saved repro under ``args.replay`` (a campaign's out folder, its repros/ or one repro)."""
    root = Path(args.replay)
    dirs = sorted({p.parent for p in root.rglob("case.json")})
    if not dirs:
        print(f"no repro (case.json) under {root}", file=sys.stderr)
        return 2
    args.out = args.out or tempfile.mkdtemp(prefix="onnxscope-replay-")
    camp = Campaign(args)
    still: list[tuple[Path, list[str]]] = []
    results: dict[Path, list[str]] = {}

    record = camp.record

    def record_and_note(w: Worker, result: dict[str, object], case_dir: Path) -> None:
        results[case_dir] = sorted({e["sig"] for e in result["events"] if e["kind"] == "other"})
        record(w, result, case_dir)

    camp.record = record_and_note  # type: ignore[method-assign]
    requests = []
    for d in dirs:
        meta = json.loads((d / "case.json").read_text())
        requests.append({"replay": str(d), "capture": bool(meta.get("capture"))})
    start = time.perf_counter()
    camp.run(requests, lambda w, req: Path(req["replay"]))
    for d in dirs:
        meta = json.loads((d / "case.json").read_text())
        now = results.get(d)
        status = "crash/hang" if now is None else ("fails: " + ", ".join(now) if now else "fixed")
        if now is None or now:
            still.append((d, now or []))
        print(f"{d.name}: was {meta.get('signature', '?')} -> {status}")
    print_summary(camp.report(time.perf_counter() - start))
    return 1 if still else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000, help="mutated models through the static queries")
    p.add_argument("--capture-cases", type=int, default=200, help="how many of them also go through capture")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per case (doubled for capture cases)")
    p.add_argument("--out", help="where repros and summary.json go")
    p.add_argument("--replay", metavar="DIR", help="re-run the repros saved under DIR instead of fuzzing")
    p.add_argument("--first", type=int, default=0, help="start at this case index (to re-run a slice)")
    p.add_argument("--check-seeds", action="store_true", help="run the unmutated seeds only (all must be ok)")
    p.add_argument("--progress", action="store_true", help="a progress line every 30 s on stderr")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.seed, Path(args.work))
        return 0
    if args.replay:
        return replay(args)
    if args.capture_cases > args.cases:
        p.error("--capture-cases cannot exceed --cases")
    if not args.out:
        p.error("--out DIR is required")
    camp = Campaign(args)
    requests = [{"i": i, "capture": camp.is_capture(i)} for i in range(args.first, args.first + args.cases)]
    if args.check_seeds:
        requests = [{"i": -1, "capture": True, "pristine": name} for name in SEEDS]
    start = time.perf_counter()
    camp.run(requests, lambda w, req: w.folder / "case")
    s = camp.report(time.perf_counter() - start)
    print_summary(s)
    return 0 if not (s["other_exceptions"] or s["crashes"] or s["hangs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
