"""The OpenAI back-end when the server fails: retries run out, the connection is refused, 403 and 404, a reply
without choices. The openai client speaks httpx2, so its transport is an ``httpx2.MockTransport``."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from meritsl_lightning.pseudo_labels.backends import FatalBackendError, ItemFailed, OpenAIBackend, Outcome
from meritsl_lightning.pseudo_labels.prompt import paper_prompt
from meritsl_lightning.pseudo_labels.pseudo_label import main

LABELS = ["positive", "negative", "neutral"]
KEY = "sk-mock-ONLY-FOR-TESTS-1234"


def completion(content: str) -> dict:
    return {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "mock-llm",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }  # fmt: skip


def run_backend(handler: Callable[[httpx2.Request], httpx2.Response], items: int = 1, **options) -> tuple[dict, Counter]:
    """Label ``items`` sentences through a mocked server; (id -> Outcome or ItemFailed, requests per path)."""
    requests: Counter = Counter()

    def counting(request: httpx2.Request) -> httpx2.Response:
        requests[request.url.path] += 1
        assert request.headers["authorization"] == f"Bearer {KEY}"
        return handler(request)

    backend = OpenAIBackend(
        "mock-llm", LABELS, paper_prompt(), api_key=KEY, max_retries=0, item_retries=2, backoff_base=0.001,
        backoff_max=0.002, timeout=5.0, concurrency=1,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(counting)), **options,
    )  # fmt: skip
    results: dict = {}
    backend.run([(f"u{i}", f"sentence {i} is great") for i in range(items)], lambda i, r: results.__setitem__(i, r))
    return results, requests


def test_a_good_reply_is_labelled() -> None:
    results, requests = run_backend(lambda r: httpx2.Response(200, json=completion("Positive.")))
    assert isinstance(results["u0"], Outcome) and results["u0"].label == "positive"
    assert requests == {"/v1/chat/completions": 1}


def test_retries_run_out() -> None:
    results, requests = run_backend(lambda r: httpx2.Response(503, json={"error": {"message": "overloaded"}}), items=2)
    for item in ("u0", "u1"):
        assert isinstance(results[item], ItemFailed)
        assert str(results[item]) == f"item {item}: gave up after 3 attempts; last: HTTP 503: overloaded"
    assert requests["/v1/chat/completions"] == 6  # 1 + item_retries, per item


def test_connection_refused() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    results, requests = run_backend(refuse)
    assert isinstance(results["u0"], ItemFailed)
    assert str(results["u0"]).startswith("item u0: gave up after 3 attempts; last: connection failed")
    assert requests["/v1/chat/completions"] == 3


@pytest.mark.parametrize("status", [403, 404])
def test_forbidden_or_unknown_model_stops_the_run(status: int) -> None:
    message = {403: "this key may not use mock-llm", 404: "The model mock-llm does not exist"}[status]
    with pytest.raises(FatalBackendError) as info:
        run_backend(lambda r: httpx2.Response(status, json={"error": {"message": message}}), items=3)
    assert str(info.value) == (
        f"item u0: https://api.openai.com/v1 refused model 'mock-llm' (HTTP {status}): {message}"
    )


def test_reply_without_choices_is_malformed_and_retried() -> None:
    empty = {**completion(""), "choices": []}
    results, requests = run_backend(lambda r: httpx2.Response(200, json=empty))
    assert isinstance(results["u0"], ItemFailed)
    assert str(results["u0"]) == (
        "item u0: gave up after 3 attempts; last: malformed response: the response has no choices[0].message"
    )
    answers = iter([empty, completion("negative")])
    results, _ = run_backend(lambda r: httpx2.Response(200, json=next(answers)))
    assert results["u0"].label == "negative"  # a malformed reply is retried, not recorded


def test_refused_connection_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`meritsl pseudo-label` against a port nobody listens on: every item fails, exit 1, the report says why."""
    with socket.socket() as s:  # a free port, closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transcripts = tmp_path / "t.jsonl"
    transcripts.write_text("".join(json.dumps({"id": f"u{i}", "text": f"line {i}"}) + "\n" for i in range(2)))
    monkeypatch.setenv("MOCK_KEY", KEY)
    args = ["--input", str(transcripts), "--out", str(tmp_path / "s.jsonl"), "--backend", "openai", "--model", "m",
            "--base-url", f"http://127.0.0.1:{port}/v1", "--api-key-env", "MOCK_KEY", "--max-retries", "0",
            "--item-retries", "1", "--backoff-base", "0.01", "--backoff-max", "0.02", "--timeout", "2"]  # fmt: skip
    assert main(args) == 1
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert [f["id"] for f in report["failures"]] == ["u0", "u1"]
    assert all("gave up after 2 attempts; last: connection failed" in f["error"] for f in report["failures"])
    assert report["rows"] == 0
    assert "2 items failed" in capsys.readouterr().err
