"""The OpenAI-compatible surface, driven by the official ``openai`` client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from serve_support import (
    LABELS,
    Artifacts,
    Server,
    cosine,
    run_server,
    token_counts,
    torch_class_probs,
    torch_embeddings,
)

from modelmora.testing.tiny_models import TINY_SENTENCES


@pytest.fixture(scope="module")
def server(artifacts: Artifacts) -> Iterator[Server]:
    with run_server({"emb": artifacts.emb, "cls": artifacts.cls, "lin": artifacts.lin}) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_embeddings_match_pytorch_reference(client: openai.OpenAI, artifacts: Artifacts) -> None:
    texts = list(TINY_SENTENCES)
    # The client asks for base64 by default and decodes it; float is the other wire format.
    b64 = client.embeddings.create(model="emb", input=texts)
    floats = client.embeddings.create(model="emb", input=texts, encoding_format="float")
    expected = torch_embeddings(artifacts.emb, texts)
    for response in (b64, floats):
        got = np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)])
        assert got.shape == expected.shape
        assert cosine(got, expected).min() >= 0.999
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # Normalize module
    assert b64.model == "emb"
    assert b64.usage.prompt_tokens == sum(token_counts(artifacts.emb, texts))
    assert b64.usage.total_tokens == b64.usage.prompt_tokens


def test_single_string_input_equals_its_row_in_a_batch(client: openai.OpenAI) -> None:
    # Padding to the batch's longest sentence must not change a shorter sentence's vector.
    alone = client.embeddings.create(model="emb", input="hello", encoding_format="float")
    batch = client.embeddings.create(
        model="emb", input=["hello", TINY_SENTENCES[1]], encoding_format="float"
    )
    assert len(alone.data) == 1
    assert cosine(np.array(alone.data[0].embedding), np.array(batch.data[0].embedding)) > 0.9999


def test_list_models(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == ["cls", "emb", "lin"]
    assert client.models.retrieve("emb").id == "emb"


def test_unknown_model_is_404_with_openai_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="nope", input="x")
    assert "nope" in str(err.value) and "served: cls, emb, lin" in str(err.value)


def test_wrong_task_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="cls", input="x")
    assert "/v1/classify" in str(err.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "emb", "input": []}, "input"),
        ({"model": "emb", "input": [1, 2]}, "input"),
        ({"model": "emb", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "x"}, "model"),
        ({"model": "emb", "input": "x", "temperature": 1}, "temperature"),
    ],
)
def test_invalid_embedding_requests_name_the_field(
    server: Server, body: dict[str, object], fragment: str
) -> None:
    r = server.http.post("/v1/embeddings", json=body)
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert fragment in message


def test_dimensions_is_rejected_clearly(server: Server) -> None:
    r = server.http.post("/v1/embeddings", json={"model": "emb", "input": "x", "dimensions": 8})
    assert r.status_code == 400
    assert "dimensions" in r.json()["error"]["message"]


def test_malformed_json_is_422(server: Server) -> None:
    r = server.http.post(
        "/v1/embeddings", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "JSON" in r.json()["error"]["message"] or "json" in r.json()["error"]["message"]


def test_classify_labels_follow_id2label(server: Server, artifacts: Artifacts) -> None:
    texts = list(TINY_SENTENCES)
    r = server.http.post("/v1/classify", json={"model": "cls", "input": texts, "top_k": 2})
    assert r.status_code == 200, r.text
    doc = r.json()
    probs = torch_class_probs(artifacts.cls, texts)
    for row, item in zip(probs, doc["data"], strict=True):
        assert item["label"] == LABELS[int(row.argmax())]
        assert item["score"] == pytest.approx(float(row.max()), abs=1e-4)
        assert len(item["scores"]) == 2
        assert item["scores"][0]["label"] == item["label"]
    assert doc["usage"]["prompt_tokens"] == sum(token_counts(artifacts.cls, texts))


def test_bad_headers_are_400(server: Server) -> None:
    for headers in ({"X-Priority": "high"}, {"X-Timeout-Ms": "-5"}):
        r = server.http.post("/v1/embeddings", json={"model": "emb", "input": "x"}, headers=headers)
        assert r.status_code == 400, headers
        assert next(iter(headers)) in r.json()["error"]["message"]


def test_metrics_count_requests_per_model_and_status(server: Server) -> None:
    before = server.metric("modelmora_request_duration_seconds_count", model="emb", status="200")
    server.http.post("/v1/embeddings", json={"model": "emb", "input": "again"}).raise_for_status()
    after = server.metric("modelmora_request_duration_seconds_count", model="emb", status="200")
    assert after == before + 1
    assert isinstance(server.http, httpx.Client)


def test_fast_lane_and_fastapi_routes_answer_alike(server: Server) -> None:
    """Valid ``application/json`` posts take the app's hot lane; the rest go through FastAPI.

    FastAPI also parses ``application/*+json`` bodies, so the same request must get the same
    answer on both paths; an invalid body gets FastAPI's located 422.
    """
    payload = {"model": "emb", "input": ["hello", "world"], "encoding_format": "float"}
    body = json.dumps(payload).encode()
    lane = httpx.post(
        server.url + "/v1/embeddings",
        content=body,
        headers={"content-type": "application/json; charset=utf-8"},
    )
    routed = httpx.post(
        server.url + "/v1/embeddings",
        content=body,
        headers={"content-type": "application/vnd.api+json"},
    )
    assert lane.status_code == routed.status_code == 200, (lane.text, routed.text)
    assert lane.headers["content-type"] == "application/json"
    a = np.array([d["embedding"] for d in lane.json()["data"]])
    b = np.array([d["embedding"] for d in routed.json()["data"]])
    assert np.allclose(a, b, atol=1e-6)
    assert lane.json()["usage"] == routed.json()["usage"]

    bad = httpx.post(server.url + "/v1/classify", json={"model": "cls", "input": [], "top_k": 0})
    assert bad.status_code == 422
    message = bad.json()["error"]["message"]
    assert "input" in message and "top_k" in message, message

    missing = httpx.post(server.url + "/v1/embeddings", json={"model": "nope", "input": "x"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
