"""KServe v2 / Open Inference Protocol, driven by ``tritonclient.http``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from serve_support import LABELS, Artifacts, Server, run_server, torch_class_probs
from tritonclient.utils import InferenceServerException

from modelmora.testing.tiny_models import TINY_SENTENCES


@pytest.fixture(scope="module")
def server(artifacts: Artifacts) -> Iterator[Server]:
    with run_server({"emb": artifacts.emb, "cls": artifacts.cls, "lin": artifacts.lin}) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelmora"


def test_load_ready_unload(client: triton.InferenceServerClient, server: Server) -> None:
    client.unload_model("lin")
    assert not client.is_model_ready("lin")
    client.load_model("lin")
    assert client.is_model_ready("lin")
    assert server.metric("modelmora_model_loaded", model="lin") == 1
    client.unload_model("lin")
    assert not client.is_model_ready("lin")
    assert server.metric("modelmora_evictions_total", model="lin", reason="explicit") >= 1


def test_numeric_infer_binary_and_json(
    client: triton.InferenceServerClient, artifacts: Artifacts
) -> None:
    meta = client.get_model_metadata("lin")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    x = np.arange(20, dtype=np.float32).reshape(5, 4) / 7
    expected = x @ artifacts.weight + artifacts.bias
    for binary in (True, False):
        inp = triton.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = triton.InferRequestedOutput("y", binary_data=binary)
        result = client.infer("lin", [inp], outputs=[out])
        y = result.as_numpy("y")
        assert y is not None and y.shape == (5, 3)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_text_embeddings_over_v2_equal_openai_route(
    client: triton.InferenceServerClient, server: Server
) -> None:
    texts = list(TINY_SENTENCES[:3])
    inp = triton.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    got = client.infer("emb", [inp]).as_numpy("embedding")
    r = server.http.post("/v1/embeddings", json={"model": "emb", "input": texts})
    expected = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    assert got is not None
    np.testing.assert_allclose(got, expected, atol=1e-6)
    meta = client.get_model_metadata("emb")
    assert meta["outputs"][0] == {"name": "embedding", "datatype": "FP32", "shape": [-1, 32]}


def test_classifier_labels_over_v2(
    client: triton.InferenceServerClient, artifacts: Artifacts
) -> None:
    texts = list(TINY_SENTENCES)
    inp = triton.InferInput("text", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t] for t in texts], dtype=np.object_), binary_data=False)
    result = client.infer("cls", [inp])
    labels = [x.decode() for x in result.as_numpy("label")]
    probs = torch_class_probs(artifacts.cls, texts)
    assert labels == [LABELS[int(i)] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose(result.as_numpy("scores"), probs, atol=1e-4)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2]}]},
            "needs 8",
        ),
        (
            {"inputs": [{"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]},
            "['x']",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1] * 5}]},
            "shape",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1] * 4}]},
            "FP32",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["a"] * 4}]},
            "numbers",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "F32", "data": [1] * 4}]},
            "datatype",
        ),
        ({"inputs": []}, "inputs"),
    ],
)
def test_bad_infer_requests_are_400(server: Server, body: dict[str, object], fragment: str) -> None:
    r = server.http.post("/v2/models/lin/infer", json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_unknown_model_and_version(client: triton.InferenceServerClient, server: Server) -> None:
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert "nope" in str(err.value)
    assert server.http.get("/v2/models/nope").status_code == 404
    assert server.http.get("/v2/models/lin/versions/7").status_code == 400
    assert server.http.get("/v2/models/lin/versions/1/ready").status_code in (200, 503)


def _texts(rows: list[str]) -> dict[str, object]:
    return {"inputs": [{"name": "text", "shape": [len(rows)], "datatype": "BYTES", "data": rows}]}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (_texts(["a"] * 3000), 413, "at most 2048"),
        (_texts(["a" * 100_001]), 413, "at most 100000 each"),
        (
            b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":'
            + b"[" * 1000
            + b'"a"'
            + b"]" * 1000
            + b"}]}",
            400,
            "nested deeper",
        ),
        (
            b'{"id":"\\ud800","inputs":[{"name":"text","shape":[1],"datatype":"BYTES",'
            b'"data":["a"]}]}',
            400,
            "not valid JSON",
        ),
        (
            b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["\\udc00"]}]}',
            400,
            "not valid JSON",
        ),
    ],
)
def test_oversized_or_hostile_v2_requests_are_4xx_not_500(
    server: Server, body: dict[str, object] | bytes, status: int, fragment: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = server.http.post(
        "/v2/models/emb/infer", content=content, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


def test_the_same_text_limits_hold_for_the_openai_route(server: Server) -> None:
    long = server.http.post("/v1/embeddings", json={"model": "emb", "input": "a" * 100_001})
    assert long.status_code == 422 and "100000" in long.text
    many = server.http.post("/v1/embeddings", json={"model": "emb", "input": ["a"] * 2049})
    assert many.status_code == 422 and "2048" in many.text
