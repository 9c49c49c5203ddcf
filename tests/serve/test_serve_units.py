"""Pure functions of the serve package: pooling, v2 tensor codec, task detection (and the
app's choice of lane, in process)."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serve_support import Artifacts

from modelmora.serve.config import detect_task
from modelmora.serve.errors import BadRequest
from modelmora.serve.pooling import PoolingConfig, pool, read_pooling_config
from modelmora.serve.v2codec import InferRequest, decode_request, encode_response

RNG = np.random.default_rng(3)
HIDDEN = RNG.normal(size=(3, 5, 4)).astype(np.float32)
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])


def _rows(fn: object) -> np.ndarray:
    """Apply ``fn`` to each sentence's unpadded token states, one row at a time."""
    return np.stack([fn(HIDDEN[i, : MASK[i].sum()]) for i in range(3)])  # type: ignore[operator]


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("mean", lambda t: t.mean(0)),
        ("max", lambda t: t.max(0)),
        ("cls", lambda t: t[0]),
        ("lasttoken", lambda t: t[-1]),
        ("mean_sqrt_len", lambda t: t.sum(0) / np.sqrt(len(t))),
    ],
)
def test_pooling_ignores_padding(mode: str, reference: object) -> None:
    got = pool(HIDDEN, MASK, PoolingConfig((mode,)))
    np.testing.assert_allclose(got, _rows(reference), rtol=1e-5, atol=1e-6)


def test_pooling_concatenates_and_normalizes() -> None:
    got = pool(HIDDEN, MASK, PoolingConfig(("cls", "mean"), normalize=True))
    raw = np.concatenate([_rows(lambda t: t[0]), _rows(lambda t: t.mean(0))], axis=1)
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_pooling_config_from_sentence_transformers_files(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    assert read_pooling_config(artifacts.emb) == PoolingConfig(("mean",), normalize=True)
    assert read_pooling_config(tmp_path) == PoolingConfig(("mean",), normalize=False)
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "p", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": False}))
    with pytest.raises(ValueError, match="no pooling mode"):
        read_pooling_config(tmp_path)


def test_detect_task(artifacts: Artifacts) -> None:
    assert detect_task(artifacts.emb) == "feature-extraction"
    assert detect_task(artifacts.cls) == "text-classification"
    assert detect_task(artifacts.lin) == "tensor"


def test_binary_tensors_round_trip() -> None:
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    words = [b"hello", b"", "wörld".encode()]
    text_blob = b"".join(len(w).to_bytes(4, "little") + w for w in words)
    head = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32",
                 "parameters": {"binary_data_size": x.nbytes}},
                {"name": "t", "shape": [3], "datatype": "BYTES",
                 "parameters": {"binary_data_size": len(text_blob)}},
            ],
            "outputs": [{"name": "x", "parameters": {"binary_data": True}}, {"name": "t"}],
        }
    ).encode()  # fmt: skip
    request, tensors = decode_request(head + x.tobytes() + text_blob, len(head))
    np.testing.assert_array_equal(tensors["x"], x)
    assert list(tensors["t"]) == words
    body, headers = encode_response(model_name="m", request=request, outputs=tensors)
    n = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(body[:n])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == x.nbytes
    np.testing.assert_array_equal(np.frombuffer(body[n:], dtype=np.float32).reshape(2, 3), x)
    assert doc["outputs"][1]["data"] == ["hello", "", "wörld"]


@pytest.mark.parametrize(
    ("inputs", "header", "fragment"),
    [
        ([{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 300]}], None, "fit in INT8"),
        ([{"name": "x", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}], None, "integers"),
        ([{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}], None, "negative"),
        ([{"name": "x", "shape": [1], "datatype": "FP32"}], None, "neither data"),
        ([{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}], None, "strings"),
        ([{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}], None, "regular"),
        ([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], 10_000, "outside"),
    ],
)
def test_decode_errors_say_what_is_wrong(
    inputs: list[dict[str, object]], header: int | None, fragment: str
) -> None:
    with pytest.raises(BadRequest, match=fragment):
        decode_request(json.dumps({"inputs": inputs}).encode(), header)


def test_unknown_requested_output_is_400() -> None:
    request = InferRequest.model_validate(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
         "outputs": [{"name": "nope"}]}
    )  # fmt: skip
    with pytest.raises(BadRequest, match="unknown output 'nope'"):
        encode_response(model_name="m", request=request, outputs={"y": np.zeros(1, np.float32)})


def test_set_spin_reaches_the_worker_spec(artifacts: Artifacts) -> None:
    """`--set NAME.spin=false` turns ORT thread spinning off for that model's worker only."""
    from modelmora.cli.serve import _models
    from modelmora.errors import UserInputError
    from modelmora.serve.pool import worker_spec

    models = _models((f"a={artifacts.emb}", f"b={artifacts.emb}"), ("a.spin=false", "b.threads=1"))
    specs = {m.name: worker_spec(m) for m in models}
    assert specs["a"].spin is False
    assert specs["b"].spin is None  # the task's default (the runner decides)
    assert specs["b"].threads == 1
    with pytest.raises(UserInputError, match="spin"):
        _models((f"a={artifacts.emb}",), ("a.spin=sometimes",))


def test_pipe_messages_keep_small_arrays_in_band_and_large_ones_raw() -> None:
    """One frame for an embedding-sized answer; raw out-of-band frames for big tensors."""
    from multiprocessing import Pipe

    from modelmora.serve.ipc import Output, recv_msg, send_msg

    small = np.arange(384, dtype=np.float32)[None, :]
    large = np.random.default_rng(0).random((64, 1024), dtype=np.float32)  # 256 KiB
    a, b = Pipe()

    def send(arrays: dict[str, np.ndarray]) -> threading.Thread:
        # A big message outgrows the pipe's buffer: the writer needs a reader meanwhile.
        t = threading.Thread(target=send_msg, args=(a, Output(arrays, np.array([3]))))
        t.start()
        return t

    for arrays, frames in (({"embedding": small}, 0), ({"big": large, "e": small}, 1)):
        sender = send(arrays)
        raw = b.recv_bytes()
        assert int.from_bytes(raw[:4], "little") == frames
        extra = [b.recv_bytes() for _ in range(frames)]
        sender.join()
        assert all(len(f) == large.nbytes for f in extra)
        sender = send(arrays)
        got = recv_msg(b)
        sender.join()
        assert isinstance(got, Output)
        for name, arr in arrays.items():
            assert np.array_equal(got.arrays[name], arr) and got.arrays[name].dtype == arr.dtype


def test_a_steps_replies_cross_the_pipe_as_columns_of_plain_data() -> None:
    """One message per step whatever the number of streams, and no object per reply in it
    (pickle handles lists and dicts at C speed, a dataclass per reply cost ~3 µs each)."""
    import pickle
    from multiprocessing import Pipe

    from modelmora.serve.ipc import Output, Replies, StepStats, recv_msg, send_msg

    step = Replies(stats=StepStats((32,), 32, 4096))
    for i in range(32):
        step.add(i, {"text": f"piece {i}"}, last=i == 7)
    step.add(40, Output({"count": np.array([1])}), last=True)
    assert b"Reply" not in pickle.dumps(step, protocol=5)
    a, b = Pipe()
    send_msg(a, step)
    got = recv_msg(b)
    assert isinstance(got, Replies) and got.stats == step.stats
    assert got.ids == [*range(32), 40] and got.last == [i == 7 for i in range(32)] + [True]
    assert got.bodies[:32] == [{"text": f"piece {i}"} for i in range(32)]
    assert isinstance(got.bodies[32], Output) and got.bodies[32].arrays["count"].tolist() == [1]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":'
            + b"[" * 1000
            + b'"a"'
            + b"]" * 1000
            + b"}]}",
            "nested deeper than 17",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":'
            + b"[" * 2000
            + b"1"
            + b"]" * 2000
            + b"}]}",
            "not valid JSON",
        ),
        (b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["\\ud800"]}]}', "JSON"),
        (
            b'{"id":"\\udc00","inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}',
            "JSON",
        ),
    ],
)
def test_deep_json_and_lone_surrogates_are_400_not_500(body: bytes, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        decode_request(body, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_v2_body_decodes_or_is_a_bad_request(body: bytes) -> None:
    with contextlib.suppress(BadRequest):
        decode_request(body, None)


_tensor = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=5),
        "shape": st.lists(st.integers(-2, 4), max_size=4),
        "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "UINT8", "nope"]),
    },
    optional={
        "data": st.recursive(
            st.integers(-300, 300)
            | st.floats(allow_nan=False)
            | st.text(max_size=3)
            | st.booleans(),
            lambda inner: st.lists(inner, max_size=4),
            max_leaves=20,
        ),
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-1, 40)}),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_tensor, max_size=3), st.binary(max_size=40))
def test_any_v2_request_shape_decodes_or_is_a_bad_request(
    inputs: list[dict[str, object]], tail: bytes
) -> None:
    head = json.dumps({"inputs": inputs}).encode()
    with contextlib.suppress(BadRequest):
        decode_request(head + tail, len(head) if tail else None)


def test_text_batches_over_the_token_budget_run_in_parts_with_the_same_vectors(
    artifacts: Artifacts,
) -> None:
    """The worker's token budget splits a batch by length; vectors do not change."""
    from dataclasses import replace

    from modelmora.serve.ipc import WorkerSpec
    from modelmora.serve.runners.text import EmbeddingRunner

    spec = WorkerSpec(
        name="emb",
        artifact_dir=str(artifacts.emb),
        onnx_file="model.onnx",
        task="feature-extraction",
        provider="CPUExecutionProvider",
    )
    texts = ["short", "a somewhat longer sentence with more words in it", "mid length one", "x"]
    whole = EmbeddingRunner(spec).run_text(texts)
    calls: list[tuple[int, int]] = []
    tight = EmbeddingRunner(replace(spec, max_batch_tokens=12))
    run = tight.session.run

    def recording_run(names: list[str], feed: dict[str, np.ndarray], *rest: object) -> object:
        calls.append(feed["input_ids"].shape)
        return run(names, feed, *rest)  # type: ignore[arg-type]

    tight.session.run = recording_run  # type: ignore[method-assign]
    parts = tight.run_text(texts)
    assert len(calls) > 1 and all(rows * width <= 12 or rows == 1 for rows, width in calls)
    np.testing.assert_allclose(parts.arrays["embedding"], whole.arrays["embedding"], atol=1e-5)
    assert list(parts.tokens) == list(whole.tokens)


def test_budgeted_parts_keep_the_padding_of_fixed_length_texts() -> None:
    """Parts are cut to their longest row, except for models whose padding is part of the
    input (texts padded to a fixed length): those keep the batch's width. Either way the
    outputs come back in the rows' order."""
    from modelmora.serve.runners.text import run_within_budget

    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
    feed = {"input_ids": np.array([[10, 11, 12, 0], [20, 0, 0, 0], [30, 31, 0, 0]])}
    for keep_width, shapes in ((False, [(2, 2), (1, 3)]), (True, [(1, 4)] * 3)):
        calls: list[tuple[int, ...]] = []

        def first_ids(
            part: dict[str, np.ndarray], _: np.ndarray, calls: list[tuple[int, ...]] = calls
        ) -> dict[str, np.ndarray]:
            calls.append(part["input_ids"].shape)
            return {"first": part["input_ids"][:, 0]}

        out = run_within_budget(feed, mask, 4, first_ids, keep_width=keep_width)
        assert calls == shapes
        assert out["first"].tolist() == [10, 20, 30]


@pytest.mark.parametrize(
    ("requested", "vocab", "expected"),
    [
        (512, 8192, 512),  # small vocabulary: the whole chunk (16 MiB of logits)
        (512, 32_000, 512),  # Llama 2: 62.5 MiB
        (512, 128_256, 130),  # Llama 3: 512 tokens would be 250 MiB
        (64, 128_256, 64),  # a smaller chunk asked for stays
        (512, 10**9, 1),  # never zero
        (512, None, 512),  # vocabulary unknown: as asked
    ],
)
def test_prompt_chunks_keep_their_logits_within_the_budget(
    requested: int, vocab: int | None, expected: int
) -> None:
    from modelmora.serve.runners.generation import LOGITS_BUDGET_BYTES, prefill_budget

    chunk = prefill_budget(requested, vocab)
    assert chunk == expected
    assert vocab is None or chunk == 1 or chunk * vocab * 4 <= LOGITS_BUDGET_BYTES


def test_priority_ages_so_a_low_priority_waits_a_bounded_time() -> None:
    from modelmora.serve.scheduler import _Item

    def item(priority: int, enqueued: float, seq: int) -> _Item:
        return _Item(1, priority, None, "s", None, seq, enqueued, None, aging_s=1.0)  # type: ignore[arg-type]

    old_low = item(0, enqueued=0.0, seq=0)
    assert item(1, enqueued=0.5, seq=1).key() < old_low.key()  # priority still overtakes …
    assert old_low.key() < item(1, enqueued=1.5, seq=2).key()  # … but not forever
    assert old_low.key() < item(5, enqueued=5.5, seq=3).key()


def test_the_hot_lane_takes_json_whatever_the_case_of_its_media_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Media types are case-insensitive (RFC 9110): ``Application/JSON`` is answered by the
    hot lane, not handed to FastAPI. Both lanes give the same answer, so the test counts the
    requests that reach FastAPI (a spy on its ``__call__``, the real one still runs); a
    ``text/plain`` body is the control that must reach it."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from modelmora.serve.app import create_app
    from modelmora.serve.config import ServerSettings

    reached: list[str] = []
    real = FastAPI.__call__

    async def spy(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reached.append(scope["path"])
        await real(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", spy)
    body = json.dumps({"model": "absent", "input": "hi"})
    with TestClient(create_app(ServerSettings(port=0), {})) as client:
        for media_type in ("Application/JSON; charset=UTF-8", "application/json"):
            r = client.post("/v1/embeddings", content=body, headers={"content-type": media_type})
            assert r.status_code == 404 and "absent" in r.text, r.text
        assert reached == []
        r = client.post("/v1/embeddings", content=body, headers={"content-type": "text/plain"})
        assert reached == ["/v1/embeddings"], r.text
