"""LLM back-ends that label sentences: any OpenAI-compatible server, or a local transformers causal LM."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from meritsl_lightning.pseudo_labels.prompt import Prompt, parse_label

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every status >= 500
RETRY_AFTER_CEILING_S = 600.0  # a Retry-After beyond this is taken as a server bug, not a request
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass
class Outcome:
    """What a back-end made of one sentence: the label (None when no reply named one) and every reply."""

    label: str | None
    replies: list[str]
    scores: dict[str, float] | None = None

    @property
    def raw_reply(self) -> str:
        """The last reply (the one the label came from, when there is one)."""
        return self.replies[-1] if self.replies else ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the cache value)."""
        return {"label": self.label, "replies": self.replies, "scores": self.scores}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Outcome:
        """Inverse of :meth:`to_json`."""
        return cls(obj.get("label"), list(obj.get("replies") or []), obj.get("scores"))


class ItemFailed(Exception):
    """A back-end gave up on one item (its message is already free of secrets and names the item)."""


class FatalBackendError(Exception):
    """No item can succeed (wrong key, unknown model or endpoint): the run stops."""


Sink = Callable[[str, "Outcome | ItemFailed"], None]


class Backend(Protocol):
    """Labels (id, text) items and hands each result to a sink as soon as it is known."""

    name: str
    model: str
    stats: Counter

    def identity(self) -> dict[str, Any]: ...
    def server_info(self) -> dict[str, Any]: ...
    def run(self, items: Sequence[tuple[str, str]], sink: Sink) -> None: ...


class Redactor:
    """Replaces each secret by ``***`` in any text; also a logging filter for handlers."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the record's message with secrets removed (logging.Filter protocol)."""
        if self.secrets:
            message = self(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


def public_url(url: str | None) -> str | None:
    """``url`` without user:password (a base URL is reported, its credentials never)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp) through ``openai``.

    Requests run ``concurrency`` at a time. The client itself retries ``max_retries`` times; beyond
    that this back-end retries ``item_retries`` more times with exponential backoff and jitter, honouring
    ``Retry-After`` (and pausing every worker when the server asks for it), on 408/409/429/5xx,
    timeouts, lost connections and malformed bodies. A wrong key, a refused model or an unknown
    endpoint stops the run.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        labels: Sequence[str],
        prompt: Prompt,
        *,
        api_key: str,
        base_url: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 2,
        item_retries: int = 4,
        parse_retries: int = 1,
        temperature: float = 0.0,
        seed: int | None = 0,
        max_tokens: int = 16,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        redact: Redactor | None = None,
        http_client: Any = None,
    ) -> None:
        """``http_client``: an ``httpx2.AsyncClient`` for the openai client (e.g. with a mock transport in tests)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.model = model
        self.labels = list(labels)
        self.prompt = prompt
        self.base_url = base_url
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.item_retries = item_retries
        self.parse_retries = parse_retries
        self.temperature = temperature
        self.seed = seed
        self.max_tokens = max_tokens
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._api_key = api_key
        self.redact = redact or Redactor([api_key])
        self.stats: Counter = Counter()
        self._server: dict[str, Any] = {}
        self._pause_until = 0.0
        self._http_client = http_client

    def identity(self) -> dict[str, Any]:
        """What decides a reply (the cache key and the report record it)."""
        return {
            "backend": self.name,
            "model": self.model,
            "method": "generate",
            "decoding": {
                "temperature": self.temperature,
                "seed": self.seed,
                "max_tokens": self.max_tokens,
                "parse_retries": self.parse_retries,
            },
        }

    def server_info(self) -> dict[str, Any]:
        """The base URL (without credentials) and what the server said about itself."""
        info: dict[str, Any] = {"base_url": public_url(self.base_url) or "https://api.openai.com/v1"}
        for key, value in self._server.items():
            info[key] = sorted(value) if isinstance(value, set) else value
        return info

    def run(self, items: Sequence[tuple[str, str]], sink: Sink) -> None:
        """Label ``items``, calling ``sink(id, Outcome | ItemFailed)`` as each finishes."""
        if items:
            asyncio.run(self._run(items, sink))

    async def _run(self, items: Sequence[tuple[str, str]], sink: Sink) -> None:
        from openai import AsyncOpenAI

        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)
        async with AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            http_client=self._http_client,
        ) as client:
            if self.base_url:
                await self._probe_version()

            async def worker() -> None:
                while not queue.empty():
                    item_id, text = queue.get_nowait()
                    try:
                        result: Outcome | ItemFailed = await self._label(client, item_id, text)
                    except ItemFailed as e:
                        result = e
                    sink(item_id, result)

            workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, len(items)))]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in workers:  # after a fatal error, stop the others before the client closes
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _probe_version(self) -> None:
        """Note a local server's version (vLLM ``/version``, Ollama ``/api/version``); silent when it has none."""
        import httpx2  # the openai client's own HTTP library

        root = self.base_url.rstrip("/").removesuffix("/v1") if self.base_url else ""
        async with httpx2.AsyncClient(timeout=min(self.timeout, 5.0)) as http:
            for path in ("/version", "/api/version"):
                try:
                    response = await http.get(root + path)
                    version = response.json().get("version") if response.status_code == 200 else None
                except (httpx2.HTTPError, ValueError, AttributeError):
                    continue
                if isinstance(version, str):
                    self._server["version"] = version
                    return

    async def _label(self, client: Any, item_id: str, text: str) -> Outcome:
        replies: list[str] = []
        for _ in range(1 + self.parse_retries):
            if replies:
                self.stats["follow_ups"] += 1
            replies.append(
                await self._complete(client, item_id, self.prompt.messages(text, self.labels, replies))
            )
            label = parse_label(replies[-1], self.labels)
            if label is not None:
                return Outcome(label, replies)
        return Outcome(None, replies)

    async def _complete(self, client: Any, item_id: str, messages: list[dict[str, str]]) -> str:
        import openai

        kwargs: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            kwargs["seed"] = self.seed
        last_error = ""
        for attempt in range(self.item_retries + 1):
            await self._wait_for_pause()
            retry_after: float | None = None
            try:
                self.stats["requests"] += 1
                raw = await client.chat.completions.with_raw_response.create(
                    model=self.model, messages=messages, **kwargs
                )
                return self._reply_text(raw)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
                raise FatalBackendError(
                    self.redact(
                        f"item {item_id}: {self.server_info()['base_url']} refused model {self.model!r} "
                        f"(HTTP {e.status_code}): {_server_message(e)}"
                    )
                ) from None
            except openai.APIStatusError as e:
                if e.status_code not in RETRYABLE_STATUS and e.status_code < 500:
                    raise ItemFailed(
                        self.redact(f"item {item_id}: HTTP {e.status_code}: {_server_message(e)}")
                    ) from None
                last_error = f"HTTP {e.status_code}: {_server_message(e)}"
                retry_after = parse_retry_after(e.response.headers)
            except openai.APITimeoutError:
                last_error = f"no reply within {self.timeout:g} s"
            except openai.APIConnectionError as e:
                last_error = f"connection failed: {e}"
            except (json.JSONDecodeError, openai.APIResponseValidationError, MalformedReply) as e:
                last_error = f"malformed response: {e}"
            if attempt == self.item_retries:
                break
            delay = self._delay(attempt, retry_after)
            self.stats["retries"] += 1
            log.warning(
                "%s",
                self.redact(
                    f"item {item_id}: {last_error}; retry {attempt + 1}/{self.item_retries} in {delay:.2f} s"
                ),
            )
            await asyncio.sleep(delay)
        raise ItemFailed(
            self.redact(f"item {item_id}: gave up after {self.item_retries + 1} attempts; last: {last_error}")
        )

    def _reply_text(self, raw: Any) -> str:
        completion = raw.parse()
        choices = getattr(completion, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise MalformedReply("the response has no choices[0].message")
        if "server" in raw.headers and "server" not in self._server:
            self._server["server"] = raw.headers["server"]
        if getattr(completion, "model", None):
            self._server.setdefault("served_models", set()).add(completion.model)
        if getattr(completion, "system_fingerprint", None):
            self._server.setdefault("system_fingerprints", set()).add(completion.system_fingerprint)
        message = choices[0].message
        return self.redact(message.content or getattr(message, "refusal", None) or "")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            delay = min(retry_after, RETRY_AFTER_CEILING_S) * random.uniform(1.0, 1.1)
            # every worker waits: the server asked this client, not this request, to slow down
            self._pause_until = max(self._pause_until, time.monotonic() + delay)
            return delay
        return min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)

    async def _wait_for_pause(self) -> None:
        pause = self._pause_until - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)


def _server_message(e: Any) -> str:
    """The server's own error message (the openai client prefixes its ``message`` with "Error code: N - ")."""
    body = getattr(e, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip():
        return body["message"]
    return str(e.message)


class MalformedReply(ValueError):
    """A 200 response whose body is JSON but not a chat completion."""


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None if absent."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class TransformersBackend:
    """A local causal LM (folder, hub id, or GGUF file) prompted through its chat template, in batches.

    ``method="generate"``: greedy decoding, the reply parsed like a server's (with follow-ups).
    ``method="logprob"``: each label scored by the sum of its token log-probabilities as the start
    of the assistant's reply; the best-scoring label is taken, so every item gets one.
    """

    name = "transformers"

    def __init__(
        self,
        model: str,
        labels: Sequence[str],
        prompt: Prompt,
        *,
        method: str = "generate",
        batch_size: int = 8,
        parse_retries: int = 1,
        max_new_tokens: int = 16,
        device: str = "auto",
        dtype: str = "auto",
        gguf_file: str | None = None,
    ) -> None:
        if method not in ("generate", "logprob"):
            raise ValueError(f"method must be 'generate' or 'logprob', got {method!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.labels = list(labels)
        self.prompt = prompt
        self.method = method
        self.batch_size = batch_size
        self.parse_retries = parse_retries
        self.max_new_tokens = max_new_tokens
        self.gguf_file = gguf_file
        self.device = torch.device(
            "cuda"
            if device == "auto" and torch.cuda.is_available()
            else ("cpu" if device == "auto" else device)
        )
        if dtype == "auto":
            use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            self.dtype = torch.bfloat16 if use_bf16 else torch.float32
        else:
            self.dtype = getattr(torch, dtype)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, **extra)
            self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=self.dtype, **extra)
        except (OSError, ValueError) as e:
            raise FatalBackendError(f"cannot load causal LM {model!r}: {e}") from e
        self.lm.to(self.device).eval()
        self.pad_id = self._pad_id()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        if not self.has_chat_template:
            log.warning("%s has no chat template: prompts are fed as plain text", model)
        self.stats: Counter = Counter()

    def identity(self) -> dict[str, Any]:
        """What decides a reply (the cache key and the report record it)."""
        decoding: dict[str, Any] = {"greedy": True, "dtype": str(self.dtype).removeprefix("torch.")}
        if self.method == "generate":
            decoding |= {"max_new_tokens": self.max_new_tokens, "parse_retries": self.parse_retries}
        return {
            "backend": self.name,
            "model": self.model,
            "model_fingerprint": model_fingerprint(self.model, self.gguf_file),
            "method": self.method,
            "decoding": decoding,
        }

    def server_info(self) -> dict[str, Any]:
        """Where the model ran and with which library versions."""
        import torch
        import transformers

        return {
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "chat_template": self.has_chat_template,
            "gguf_file": self.gguf_file,
        }

    def run(self, items: Sequence[tuple[str, str]], sink: Sink) -> None:
        """Label ``items`` in batches, calling ``sink(id, Outcome | ItemFailed)`` per item."""
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            try:
                outcomes = self.label_batch([text for _, text in batch])
            except RuntimeError as e:  # e.g. out of memory on one long batch: the other batches go on
                ids = ", ".join(item_id for item_id, _ in batch)
                for item_id, _ in batch:
                    sink(item_id, ItemFailed(f"item {item_id}: batch [{ids}] failed: {e}"))
                continue
            for (item_id, _), outcome in zip(batch, outcomes, strict=True):
                sink(item_id, outcome)

    def label_batch(self, texts: Sequence[str]) -> list[Outcome]:
        """One outcome per text."""
        if self.method == "logprob":
            outcomes = []
            for scores in self.score(texts):
                best = max(scores, key=scores.__getitem__)  # ties go to the earlier label
                outcomes.append(Outcome(best, [best], scores))
            return outcomes
        replies: list[list[str]] = [[] for _ in texts]
        labels: list[str | None] = [None] * len(texts)
        todo = list(range(len(texts)))
        for ask in range(1 + self.parse_retries):
            if not todo:
                break
            if ask:
                self.stats["follow_ups"] += len(todo)
            chats = [self.prompt.messages(texts[i], self.labels, replies[i]) for i in todo]
            for i, reply in zip(todo, self.generate(chats), strict=True):
                replies[i].append(reply)
                labels[i] = parse_label(reply, self.labels)
            todo = [i for i in todo if labels[i] is None]
        return [Outcome(label, reply_list) for label, reply_list in zip(labels, replies, strict=True)]

    def generate(self, chats: Sequence[list[dict[str, str]]]) -> list[str]:
        """Greedy replies to ``chats`` (left-padded into one batch)."""
        import torch
        from transformers import GenerationConfig

        encoded = [self._encode(self._render(chat)) for chat in chats]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor(
            [[self.pad_id] * (width - len(ids)) + ids for ids in encoded], device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=self.device
        )
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.pad_id,
            eos_token_id=self._eos_ids(),
        )
        self.stats["requests"] += len(chats)
        with torch.inference_mode():
            out = self.lm.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
        return [
            reply.strip() for reply in self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        ]

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Per text, each label's summed token log-probability as the assistant's reply."""
        import torch

        rows: list[tuple[list[int], list[int]]] = []  # (context ids, label ids) per (text, label)
        for text in texts:
            context = self._render(self.prompt.messages(text, self.labels))
            context_ids = self._encode(context)
            for label in self.labels:
                rows.append((context_ids, self._continuation_ids(context, context_ids, label)))
        width = max(len(c) + len(t) for c, t in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (context_ids, label_ids) in enumerate(rows):  # right-padded: positions match an unpadded run
            ids = context_ids + label_ids
            input_ids[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
        self.stats["requests"] += len(texts)
        with torch.inference_mode():
            logits = self.lm(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
            sums = []
            for r, (context_ids, label_ids) in enumerate(rows):
                start = len(context_ids) - 1  # the logits at position p predict token p + 1
                step = logits[r, start : start + len(label_ids)].float().log_softmax(-1)
                picked = step.gather(-1, torch.tensor(label_ids, device=step.device)[:, None])
                sums.append(float(picked.sum()))
        n = len(self.labels)
        return [dict(zip(self.labels, sums[i * n : (i + 1) * n], strict=True)) for i in range(len(texts))]

    def _render(self, chat: list[dict[str, str]]) -> str:
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return "\n\n".join(m["content"] for m in chat) + "\n"

    def _encode(self, text: str) -> list[int]:
        # the chat template already carries any special tokens the model expects
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _continuation_ids(self, context: str, context_ids: list[int], label: str) -> list[int]:
        # tokenising context + label together keeps the merges the model would see at the boundary
        joint = self._encode(context + label)
        if joint[: len(context_ids)] == context_ids and len(joint) > len(context_ids):
            return joint[len(context_ids) :]
        return self._encode(label)

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, getattr(self.lm.config, "eos_token_id", None)):
            if isinstance(candidate, list):
                candidate = candidate[0] if candidate else None
            if candidate is not None:
                return int(candidate)
        return 0

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        for value in (self.lm.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        # a converted tokenizer may name the wrong end token (SmolLM2 GGUF); stop at any end-of-turn token too
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
        return sorted(ids)


def model_fingerprint(model: str, gguf_file: str | None = None) -> str:
    """A short hash of a local model folder (small files' bytes, large files' size and mtime); the id otherwise."""
    folder = Path(model)
    if not folder.is_dir():
        return f"id:{model}"
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(path.name.encode() + b"\0")
        if stat.st_size < 1 << 20:
            digest.update(path.read_bytes())
        else:  # reading gigabytes of weights for a cache key is too slow; a rewrite changes mtime
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    if gguf_file:
        digest.update(os.fsencode(gguf_file))
    return digest.hexdigest()[:16]
