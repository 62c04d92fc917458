"""`POST /v1/embeddings`: the bundled embedder's vectors in OpenAI's shape (floats or base64, as
the official client asks), bounded before any work, behind a token, and computed off the event
loop so that other requests are answered meanwhile."""

import asyncio
import base64
import json
import threading

import numpy as np
import openai
import pytest
from channels.testing import HttpCommunicator
from django.test import Client

from accounts.services import api_token_create
from chat.serving import openai_api
from studio.asgi import application
from studio.llm.numpy_embedder import load_numpy_embedder

pytestmark = pytest.mark.django_db(transaction=True)
TEXTS = ["How do I reset the router?", "Crème brûlée, naïve café — 3 €", ""]


@pytest.fixture
def token(alice):
    return api_token_create(user=alice, name="sdk")[1]


def post(token, body, path="/v1/embeddings"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().post(path, json.dumps(body), content_type="application/json", **headers)


def test_it_answers_the_bundled_embedders_vectors_in_openais_shape(token):
    answer = post(token, {"input": TEXTS, "model": "all-MiniLM-L6-v2"})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["object"] == "list" and body["model"] == "all-MiniLM-L6-v2"
    assert [(item["object"], item["index"]) for item in body["data"]] == [
        ("embedding", 0),
        ("embedding", 1),
        ("embedding", 2),
    ]
    served = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    assert np.abs(served - load_numpy_embedder().embed(TEXTS)).max() < 1e-4
    tokens = sum(sum(e.attention_mask) for e in load_numpy_embedder().tokenizer.encode_batch(TEXTS))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_one_text_and_base64_and_the_hugging_face_id(token):
    floats = post(token, {"input": TEXTS[0], "model": "all-MiniLM-L6-v2"}).json()["data"][0]["embedding"]
    encoded = post(
        token,
        {
            "input": TEXTS[0],
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "encoding_format": "base64",
            "dimensions": 384,
        },
    ).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert decoded.shape == (384,) and np.abs(decoded - np.array(floats, dtype=np.float32)).max() == 0


def test_the_official_client_gets_the_same_vectors(token, live_server):
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=token, max_retries=0, timeout=60)
    answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)  # the client asks for base64
    served = np.array([item.embedding for item in answer.data], dtype=np.float32)
    assert np.abs(served - load_numpy_embedder().embed(TEXTS)).max() < 1e-4
    assert "all-MiniLM-L6-v2" in [model.id for model in client.models.list()]


@pytest.mark.parametrize(
    "body, status, param, said",
    [
        ({"input": ["x"] * 257, "model": "all-MiniLM-L6-v2"}, 400, "input", "holds 257 texts; at most 256"),
        ({"input": ["x", "y" * 8193], "model": "all-MiniLM-L6-v2"}, 400, "input", "input[1] is 8,193 characters long"),
        ({"input": [[101, 2023, 102]], "model": "all-MiniLM-L6-v2"}, 400, "input", "as token ids is not supported"),
        ({"input": [101, 2023, 102], "model": "all-MiniLM-L6-v2"}, 400, "input", "as token ids is not supported"),
        ({"input": [], "model": "all-MiniLM-L6-v2"}, 400, "input", "must be a text or a list of texts"),
        ({"input": [{"text": "x"}], "model": "all-MiniLM-L6-v2"}, 400, "input", "must be a text or a list of texts"),
        ({"input": "x", "model": "all-MiniLM-L6-v2", "dimensions": 256}, 400, "dimensions", "gives 384 numbers"),
        (
            {"input": "x", "model": "all-MiniLM-L6-v2", "encoding_format": "hex"},
            400,
            "encoding_format",
            "float or base64",
        ),
        ({"input": "x"}, 400, "model", "`model` is required"),
        ({"input": "x", "model": "text-embedding-3-small"}, 404, "model", "does not exist or does not embed"),
        ({"input": "\ud800", "model": "all-MiniLM-L6-v2"}, 400, None, "lone surrogate"),  # the JSON parser's
    ],
)
def test_what_it_cannot_do_is_refused_before_any_work(token, monkeypatch, body, status, param, said):
    monkeypatch.setattr(openai_api, "_embedded", lambda texts: pytest.fail("embedded a refused request"))
    answer = post(token, body)
    assert answer.status_code == status, answer.content
    error = answer.json()["error"]
    assert error["param"] == param and said in error["message"], error
    assert error["code"] == ("model_not_found" if status == 404 else error["code"])


def test_it_needs_a_token(token):
    answer = post(None, {"input": "x", "model": "all-MiniLM-L6-v2"})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    assert post("cps_wrong", {"input": "x", "model": "all-MiniLM-L6-v2"}).status_code == 401


def test_the_embedding_model_is_listed_but_does_not_chat(token):
    models = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}").json()["data"]
    assert {"id": "all-MiniLM-L6-v2", "owned_by": "studio"}.items() <= next(
        m for m in models if m["id"] == "all-MiniLM-L6-v2"
    ).items()
    assert models[0]["id"] != "all-MiniLM-L6-v2"  # the first listed stays the chat model (LLM_ENGINE_MODEL's default)
    chat = post(
        token, {"model": "all-MiniLM-L6-v2", "messages": [{"role": "user", "content": "hi"}]}, "/v1/chat/completions"
    )
    assert chat.status_code == 404 and "use POST /v1/embeddings" in chat.json()["error"]["message"]


def request(path: str, token: str, body: dict | None = None) -> HttpCommunicator:
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]
    raw = json.dumps(body).encode() if body is not None else b""
    if body is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    return HttpCommunicator(application, "POST" if body is not None else "GET", path, body=raw, headers=headers)


async def test_other_requests_are_answered_while_texts_are_embedded_and_a_crowd_waits_its_turn(token, monkeypatch):
    started, release = threading.Event(), threading.Event()
    embedded = openai_api._embedded

    def slow_embedded(texts):
        started.set()
        release.wait(timeout=60)
        return embedded(texts)

    monkeypatch.setattr(openai_api, "_embedded", slow_embedded)
    monkeypatch.setattr(openai_api, "MAX_WAITING_EMBEDDING_REQUESTS", 1)
    embedding = asyncio.create_task(
        request("/v1/embeddings", token, {"input": "x", "model": "all-MiniLM-L6-v2"}).get_response(timeout=60)
    )
    assert await asyncio.to_thread(started.wait, 60)
    models = await request("/v1/models", token).get_response(timeout=30)  # answered while the embedding runs
    assert models["status"] == 200 and not embedding.done()
    crowd = await request("/v1/embeddings", token, {"input": "y", "model": "all-MiniLM-L6-v2"}).get_response(timeout=30)
    assert crowd["status"] == 429 and json.loads(crowd["body"])["error"]["code"] == "rate_limit_exceeded"
    release.set()
    answer = await embedding
    assert answer["status"] == 200 and len(json.loads(answer["body"])["data"][0]["embedding"]) == 384
