"""`meritsl pseudo-label`: real OpenAI-protocol exchanges over loopback HTTP, resume after SIGKILL, the cache,
secrets, and the transformers back-end on a tiny random causal LM."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meritsl_lightning.pseudo_labels.backends import TransformersBackend, parse_retry_after
from meritsl_lightning.pseudo_labels.cache import recover_jsonl
from meritsl_lightning.pseudo_labels.prompt import load_prompt, paper_prompt, parse_label
from meritsl_lightning.pseudo_labels.pseudo_label import main

KEY = "sk-test-DISTINCTIVE-7f3a9c41e2"
KEY_ENV = "MERITSL_TEST_LLM_KEY"
LABELS = ["positive", "negative", "neutral"]
REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------------------
# a scripted OpenAI-compatible server


class ScriptedServer:
    """`POST /v1/chat/completions` on 127.0.0.1; the answer depends on the sentence and how often it was asked.

    ``script[sentence]`` is a list of actions, one per request for that sentence (the last one repeats):
    ``ok`` (a reply naming the sentence's sentiment word), ``say:<text>``, ``429`` (with Retry-After: 1),
    ``500``, ``500-echo`` (a 500 whose body repeats the bearer token), ``400-echo``, ``401``, ``hang``
    (longer than the client timeout), ``malformed`` (a 200 with a cut-off JSON body).
    """

    def __init__(
        self, script: dict[str, list[str]] | None = None, delay: float = 0.0, hang_s: float = 2.0
    ) -> None:
        self.script = script or {}
        self.delay = delay
        self.hang_s = hang_s
        self.requests: Counter = Counter()  # sentence -> requests
        self.times: dict[str, list[float]] = defaultdict(list)
        self.follow_ups: Counter = Counter()
        self.params: set[tuple] = set()  # (path, model, temperature, seed) seen
        self.hits = 0  # every HTTP request, GET or POST
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.hits += 1
                if self.path == "/version":  # as vLLM answers
                    self._send(200, b'{"version": "scripted-0.1"}')
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:
                with server.lock:
                    server.hits += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.params.add((self.path, body["model"], body["temperature"], body.get("seed")))
                sentence = body["messages"][0]["content"].rsplit("Sentence: ", 1)[1]
                with server.lock:
                    n = server.requests[sentence]
                    server.requests[sentence] += 1
                    server.times[sentence].append(time.monotonic())
                    server.follow_ups[sentence] += len(body["messages"]) > 1
                actions = server.script.get(sentence, ["ok"])
                action = actions[min(n, len(actions) - 1)]
                if server.delay:
                    time.sleep(server.delay)
                token = self.headers.get("Authorization", "")
                if action == "ok":
                    word = next((w for w in ("great", "awful", "okay") if w in sentence), "okay")
                    reply = {"great": "Positive.", "awful": "The sentiment is NEGATIVE", "okay": "neutral"}[
                        word
                    ]
                    self._completion(reply)
                elif action.startswith("say:"):
                    self._completion(action[4:])
                elif action == "429":
                    self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "1"})
                elif action == "500":
                    self._send(500, b'{"error": {"message": "overloaded"}}')
                elif action in ("500-echo", "400-echo", "401"):
                    status = int(action[:3])
                    message = json.dumps({"error": {"message": f"bad credentials {token}"}}).encode()
                    self._send(status, message)
                elif action == "hang":
                    time.sleep(server.hang_s)
                    self._completion("neutral")  # too late: the client has hung up
                elif action == "malformed":
                    self._send(200, b'{"id": "x", "choices": [{"mess')
                else:
                    raise AssertionError(action)

            def _completion(self, reply: str) -> None:
                body = {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "scripted-llm-1",
                    "system_fingerprint": "fp_test",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                }
                self._send(200, json.dumps(body).encode())

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_transcripts(path: Path, rows: list[dict[str, Any]], extra_lines: tuple[str, ...] = ()) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_no_secret(root: Path, *texts: str) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    for text in texts:
        assert KEY not in text


def server_args(server: ScriptedServer, transcripts: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--input", str(transcripts), "--out", str(out), "--backend", "openai", "--model", "scripted-llm",
        "--base-url", server.url, "--api-key-env", KEY_ENV, "--timeout", "0.5", "--max-retries", "1",
        "--backoff-base", "0.05", "--backoff-max", "0.2", *extra,
    ]  # fmt: skip


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


# ---------------------------------------------------------------------------------------------------------
# prompt, parsing, files


def test_paper_prompt_and_parsing() -> None:
    prompt = paper_prompt()
    assert prompt.render("I love it", LABELS) == (
        "You are a sentiment classification bot. Given the sentence, classify as positive, negative or neutral "
        "sentiment. Please give the sentiment and no extra text as output.\n\nSentence: I love it"
    )
    chat = prompt.messages("I love it", LABELS, ["hmm"])
    assert [m["role"] for m in chat] == ["user", "assistant", "user"]
    assert chat[2]["content"] == "Answer with exactly one word: positive, negative or neutral."
    assert parse_label("Sentiment: NEGATIVE.", LABELS) == "negative"
    assert parse_label("neutral, maybe positive", LABELS) == "neutral"
    assert parse_label("It is positively charming", LABELS) is None  # whole words only
    assert parse_label("I cannot tell", LABELS) is None
    assert parse_label("", LABELS) is None
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None


def test_prompt_file_needs_a_text_slot(tmp_path: Path) -> None:
    bad = tmp_path / "p.txt"
    bad.write_text("Classify the sentiment.")
    with pytest.raises(ValueError, match=r"p.txt: expected a \{text\} placeholder"):
        load_prompt(bad)
    good = tmp_path / "q.txt"
    good.write_text('Reply {"label": ...} with one of {labels}.\nText: {text}')
    prompt = load_prompt(good)
    assert prompt.version.startswith("file:q.txt:")
    assert prompt.render("hi", LABELS).endswith("with one of positive, negative or neutral.\nText: hi")


def test_registered_as_a_pipeline_command() -> None:
    from meritsl_lightning.cli import PIPELINE_COMMANDS

    module, _, func = PIPELINE_COMMANDS["pseudo-label"][0].partition(":")
    assert getattr(importlib.import_module(module), func) is main


def test_torn_last_line_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "1"}\n{"id": "2"}\n{"id": "3", "te')
    rows, bad = recover_jsonl(path)
    assert [r["id"] for r in rows] == ["1", "2"] and not bad
    assert path.read_text() == '{"id": "1"}\n{"id": "2"}\n'
    path.write_text('{"id": "1"}')  # whole but without its newline: kept
    assert recover_jsonl(path)[0] == [{"id": "1"}] and path.read_text() == '{"id": "1"}\n'


# ---------------------------------------------------------------------------------------------------------
# the OpenAI back-end against a loopback server


def test_openai_backend_retries_and_records_every_item(
    tmp_path: Path, key_env: None, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    script = {
        "rate limited great": ["429", "ok"],
        "flaky awful": ["500", "500", "500", "ok"],  # beats the client's own retry: ours takes over
        "slow okay": ["hang", "ok"],
        "garbled great": ["malformed", "ok"],
        "leaky awful": ["500-echo", "ok"],
        "mumbles": ["say:I am not sure."],  # never names a label: unlabelled, not guessed
        "hesitant okay": ["say:Hard to say.", "say:Neutral"],  # labelled by the follow-up
        "rejected great": ["400-echo", "ok"],  # not retried: fails this run, labelled by the next
    }
    plain = [f"plain {i} {w}" for i, w in enumerate(["great", "awful", "okay"] * 3)]
    texts = [*script, *plain]
    gold = {"great": "Positive", "awful": "Negative", "okay": "Neutral"}
    rows = [{"id": f"u{i}", "text": t, "Sentiment": next((g for w, g in gold.items() if w in t), "Neutral")}
            for i, t in enumerate(texts)]  # fmt: skip
    transcripts = write_transcripts(
        tmp_path / "transcripts.jsonl",
        [*rows, {"id": "e1", "text": "", "error": "audio unreadable"}, {"id": "e2", "text": "  "}, rows[0]],
        extra_lines=("{not json",),
    )
    out = tmp_path / "silver.jsonl"
    ids = {r["id"] for r in rows}
    by_text = {r["text"]: r["id"] for r in rows}

    with ScriptedServer(script) as server:
        args = server_args(server, transcripts, out, "--gold-field", "Sentiment", "--concurrency", "4")
        assert main(args) == 1  # one item failed: the exit status says so
        first = read_rows(out)
        report = json.loads((tmp_path / "silver.report.json").read_text())
        assert [f["id"] for f in report["failures"]] == [by_text["rejected great"]]
        assert "***" in report["failures"][0]["error"]
        assert {r["id"] for r in first} == ids - {by_text["rejected great"]}

        assert main(args) == 0  # the re-run labels only what is missing
        assert server.requests["rejected great"] == 2 and server.requests["plain 0 great"] == 1
        out_rows = read_rows(out)

    assert sorted(r["id"] for r in out_rows) == sorted(ids)  # none lost, none twice
    by_id = {r["id"]: r for r in out_rows}
    for text, item_id in by_text.items():
        row = by_id[item_id]
        assert row["text"] == text and row["backend"] == "openai" and row["model"] == "scripted-llm"
        assert (
            row["prompt_version"] == "merits-l-paper-v1"
            and row["Sentiment"] == rows[int(item_id[1:])]["Sentiment"]
        )
        if text == "mumbles":
            assert row["label"] is None and row["raw_reply"] == "I am not sure." and len(row["replies"]) == 2
        else:
            assert row["label"] == row["Sentiment"].lower(), row
    assert by_id[by_text["hesitant okay"]]["replies"] == ["Hard to say.", "Neutral"]

    # the retries happened, at the layer meant to handle each
    assert server.requests["rate limited great"] == 2
    gap = server.times["rate limited great"][1] - server.times["rate limited great"][0]
    assert gap >= 0.95, f"Retry-After: 1 not honoured ({gap:.2f} s)"
    assert server.requests["flaky awful"] == 4
    assert server.requests["slow okay"] == 2 and server.requests["garbled great"] == 2
    assert server.follow_ups["mumbles"] == 1 and server.requests["mumbles"] == 2
    assert server.params == {("/v1/chat/completions", "scripted-llm", 0, 0)}

    report = json.loads((tmp_path / "silver.report.json").read_text())
    assert report["rows"] == len(ids) and report["unlabelled"] == 1
    assert report["parse_failure_rate"] == pytest.approx(1 / len(ids), abs=1e-4)
    assert sum(report["label_counts"].values()) == len(ids) - 1
    assert report["skipped"] == {"done_before": len(ids) - 1, "error": 1, "empty_text": 1, "duplicate_id": 1,
                                 "malformed": 1}  # fmt: skip
    assert (
        report["server"]["served_models"] == ["scripted-llm-1"] and report["server"]["base_url"] == server.url
    )
    assert report["server"]["version"] == "scripted-0.1" and report["server"]["system_fingerprints"] == [
        "fp_test"
    ]
    gold_report = report["gold"]
    assert (
        gold_report["labelled_only"]["accuracy"] == 1.0 and gold_report["labelled_only"]["weighted_f1"] == 1.0
    )
    assert gold_report["all"]["accuracy"] == pytest.approx((len(ids) - 1) / len(ids), abs=1e-4)
    assert gold_report["confusion_matrix"]["counts"][2][3] == 1  # gold neutral, unlabelled
    captured = capsys.readouterr()
    assert_no_secret(tmp_path, captured.out, captured.err, caplog.text)


def test_cache_makes_a_rerun_free(tmp_path: Path, key_env: None) -> None:
    transcripts = write_transcripts(
        tmp_path / "t.jsonl", [{"id": str(i), "text": f"line {i} great"} for i in range(6)]
    )
    cache = tmp_path / "cache"
    with ScriptedServer({"line 5 great": ["say:no idea"]}) as server:
        assert main(server_args(server, transcripts, tmp_path / "a.jsonl", "--cache", str(cache))) == 0
        hits = server.hits
        assert main(server_args(server, transcripts, tmp_path / "b.jsonl", "--cache", str(cache))) == 0
        assert server.hits == hits  # zero HTTP requests the second time
    a, b = read_rows(tmp_path / "a.jsonl"), read_rows(tmp_path / "b.jsonl")
    assert sorted(a, key=lambda r: r["id"]) == sorted(b, key=lambda r: r["id"])
    assert json.loads((tmp_path / "b.report.json").read_text())["this_run"]["from_cache"] == 6
    assert_no_secret(tmp_path)


def test_wrong_key_stops_the_run_and_missing_key_is_explained(
    tmp_path: Path, key_env: None, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    transcripts = write_transcripts(
        tmp_path / "t.jsonl", [{"id": str(i), "text": f"x {i}"} for i in range(3)]
    )
    with ScriptedServer({f"x {i}": ["401"] for i in range(3)}) as server:
        assert main(server_args(server, transcripts, tmp_path / "s.jsonl", "--concurrency", "1")) == 2
        assert server.total == 1  # no point asking again with a refused key
    err = capsys.readouterr().err
    assert "refused model 'scripted-llm' (HTTP 401)" in err and "item 0" in err
    assert_no_secret(tmp_path, err)

    monkeypatch.delenv(KEY_ENV)
    args = ["--input", str(transcripts), "--out", str(tmp_path / "n.jsonl"), "--backend", "openai", "--model", "m",
            "--api-key-env", KEY_ENV, "--base-url", ""]  # fmt: skip
    assert main(args) == 2
    assert f"set the environment variable {KEY_ENV}" in capsys.readouterr().err
    assert not (tmp_path / "n.jsonl").exists()


def test_killed_run_resumes_without_losses_or_duplicates(tmp_path: Path, key_env: None) -> None:
    n = 40
    transcripts = write_transcripts(
        tmp_path / "t.jsonl", [{"id": f"k{i}", "text": f"item {i} great"} for i in range(n)]
    )
    with ScriptedServer(delay=0.1) as server:
        out = tmp_path / "killed.jsonl"
        cmd = [sys.executable, "-m", "meritsl_lightning.pseudo_labels.pseudo_label",
               *server_args(server, transcripts, out, "--concurrency", "2", "--cache", str(tmp_path / "cache"))]  # fmt: skip
        with open(tmp_path / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(cmd, cwd=REPO, stderr=err, env={**os.environ, "PYTHONPATH": str(REPO)})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                not out.exists() or len(out.read_bytes().splitlines()) < 8
            ):
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kept = len(read_rows(out))
        assert 8 <= kept < n, f"the kill did not land mid-run ({kept} of {n} rows)"
        with open(out, "a") as f:
            f.write('{"id": "k0", "text": "item 0 gr')  # as if the kill had cut a write short
        before = server.total
        assert main(server_args(server, transcripts, out, "--cache", str(tmp_path / "cache"))) == 0
        assert server.total - before <= n - kept  # finished items are not asked again
        assert (
            main(
                server_args(server, transcripts, tmp_path / "whole.jsonl", "--no-cache", "--concurrency", "8")
            )
            == 0
        )
    resumed = [r["id"] for r in read_rows(out)]
    whole = [r["id"] for r in read_rows(tmp_path / "whole.jsonl")]
    assert len(resumed) == len(set(resumed)) == n
    assert set(resumed) == set(whole) == {f"k{i}" for i in range(n)}
    assert_no_secret(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# the transformers back-end on a tiny random causal LM

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer and a ChatML template, randomly initialised."""
    from meritsl_lightning.tiny_models import build_tiny_causal_lm

    corpus = [paper_prompt().render("what a great awful okay day", LABELS), "Answer with exactly one word"]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), corpus * 3)


def _local_args(model: Path, transcripts: Path, out: Path, method: str) -> list[str]:
    return ["--input", str(transcripts), "--out", str(out), "--backend", "transformers", "--model", str(model),
            "--method", method, "--batch-size", "3", "--max-tokens", "4", "--device", "cpu", "--no-cache"]  # fmt: skip


@pytest.fixture(scope="module")
def local_transcripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = ["what a great day", "awful", "okay I guess it was fine overall", "great great", "day"]
    return write_transcripts(tmp_path_factory.mktemp("local") / "t.jsonl",
                             [{"id": f"l{i}", "text": t} for i, t in enumerate(texts)])  # fmt: skip


@pytest.mark.parametrize("method", ["generate", "logprob"])
def test_transformers_backend_is_deterministic(
    tiny_lm: Path, local_transcripts: Path, tmp_path: Path, method: str
) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        assert main(_local_args(tiny_lm, local_transcripts, out, method)) == 0
        runs.append(sorted(read_rows(out), key=lambda r: r["id"]))
    assert runs[0] == runs[1]
    rows = runs[0]
    assert [r["id"] for r in rows] == [f"l{i}" for i in range(5)]
    for row in rows:
        assert (
            row["backend"] == "transformers" and row["method"] == method and isinstance(row["raw_reply"], str)
        )
        if method == "logprob":  # always a label, the best-scoring one
            assert row["label"] in LABELS and set(row["scores"]) == set(LABELS)
            assert row["label"] == max(row["scores"], key=row["scores"].get)
            assert all(s < 0 for s in row["scores"].values())
        elif row["label"] is None:  # random weights rarely name a label: the follow-up was tried
            assert len(row["replies"]) == 2
        else:
            assert row["label"] in LABELS
    report = json.loads((tmp_path / "a.report.json").read_text())
    assert report["server"]["device"] == "cpu" and report["rows"] == 5
    if method == "logprob":
        assert report["unlabelled"] == 0


def test_logprob_scores_match_an_unbatched_forward(tiny_lm: Path) -> None:
    import torch

    backend = TransformersBackend(str(tiny_lm), LABELS, paper_prompt(), method="logprob", device="cpu")
    texts = ["great", "a much longer sentence that forces padding in the batch"]
    batched = backend.score(texts)
    assert backend.score(texts[:1])[0] == pytest.approx(batched[0], abs=1e-4)  # padding changes nothing
    context = backend._render(paper_prompt().messages(texts[0], LABELS))
    context_ids = backend._encode(context)
    label_ids = backend._continuation_ids(context, context_ids, "negative")
    with torch.inference_mode():
        logp = backend.lm(torch.tensor([context_ids + label_ids])).logits[0].log_softmax(-1)
    manual = sum(float(logp[len(context_ids) - 1 + j, t]) for j, t in enumerate(label_ids))
    assert batched[0]["negative"] == pytest.approx(manual, abs=1e-4)
