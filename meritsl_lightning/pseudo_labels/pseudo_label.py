"""`meritsl pseudo-label --input transcripts.jsonl --out silver.jsonl --backend ... --model ...`.

Labels each transcript positive / negative / neutral with an LLM (paper Sec. II) and appends one row per
transcript to the output as soon as it is known. A killed run resumes where it stopped: finished ids are
skipped, a torn last line is repaired, and every outcome already paid for is served from the cache.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meritsl_lightning.errors import UserError
from meritsl_lightning.pseudo_labels.backends import (
    Backend,
    FatalBackendError,
    ItemFailed,
    OpenAIBackend,
    Outcome,
    Redactor,
    TransformersBackend,
)
from meritsl_lightning.pseudo_labels.cache import JsonlAppender, ResponseCache, cache_key, recover_jsonl
from meritsl_lightning.pseudo_labels.inputs import InputRows, read_rows
from meritsl_lightning.pseudo_labels.prompt import DEFAULT_LABELS, Prompt, load_prompt, parse_labels_arg

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SOME_FAILED, EXIT_FATAL = 0, 1, 2
DUMMY_API_KEY = "no-key-needed"  # sent to local servers that want none; not a secret
MAX_FAILURES_LISTED = 100
PROGRESS_EVERY_S = 30.0
ROW_IDENTITY = ("backend", "model", "method", "prompt_version")


class UsageError(UserError):
    """Bad arguments or files; reported without a traceback."""


@dataclass(frozen=True)
class Item:
    """One transcript to label."""

    id: str
    text: str
    gold: Any = None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `meritsl pseudo-label`."""
    p = argparse.ArgumentParser(
        prog="meritsl pseudo-label",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input",
        type=Path,
        required=True,
        help='`meritsl transcribe` output (rows {"id", "text", ...}) or a `meritsl prepare` manifest '
        '(rows {"utt_id", "text", ...})',
    )
    p.add_argument("--out", type=Path, required=True, help="silver-label JSONL, appended to (resumable)")
    p.add_argument(
        "--backend",
        choices=("openai", "transformers"),
        required=True,
        help="openai: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp); "
        "transformers: a local causal LM folder or hub id",
    )
    p.add_argument("--model", required=True, help="model name on the server, or causal LM folder / hub id")
    p.add_argument(
        "--labels", default=",".join(DEFAULT_LABELS), help="comma-separated label set (default: %(default)s)"
    )
    p.add_argument(
        "--prompt",
        type=Path,
        help="prompt template file with a {text} slot (and optionally {labels}); default: the paper's prompt",
    )
    p.add_argument(
        "--gold-field",
        help="a transcript field holding a reference label: copied to the output and "
        "scored against (lower-cased) in the report",
    )
    p.add_argument("--report", type=Path, help="report JSON (default: OUT with suffix .report.json)")
    p.add_argument("--cache", type=Path, help="response cache folder (default: OUT.cache)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    p.add_argument(
        "--parse-retries",
        type=int,
        default=1,
        help="stricter follow-ups after a reply with no label word, before the item is recorded "
        "unlabelled (default: %(default)s)",
    )
    p.add_argument("--max-tokens", type=int, default=16, help="reply length limit (default: %(default)s)")

    server = p.add_argument_group("openai backend")
    server.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed sent with each request, where the server supports one (default: %(default)s)",
    )
    server.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="server URL ending in /v1, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL, "
        "else OpenAI)",
    )
    server.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="name of the environment variable holding the API key (default: %(default)s); the key "
        "is read from there only. With --base-url and the variable unset, a dummy non-secret "
        "key is sent, as local servers (vLLM, Ollama, llama.cpp) need none",
    )
    server.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight (default: %(default)s)"
    )
    server.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)"
    )
    server.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="retries inside the openai client per request (default: %(default)s)",
    )
    server.add_argument(
        "--item-retries",
        type=int,
        default=4,
        help="further retries per request after the client gives up, with exponential backoff, "
        "jitter and Retry-After (default: %(default)s)",
    )
    server.add_argument(
        "--backoff-base", type=float, default=1.0, help="first backoff in seconds (default: %(default)s)"
    )
    server.add_argument(
        "--backoff-max", type=float, default=60.0, help="longest backoff in seconds (default: %(default)s)"
    )

    local = p.add_argument_group("transformers backend")
    local.add_argument(
        "--method",
        choices=("generate", "logprob"),
        default="generate",
        help="generate: greedy reply, parsed; logprob: the label with the highest summed token "
        "log-probability (always a label) (default: %(default)s)",
    )
    local.add_argument(
        "--batch-size", type=int, default=8, help="sentences per forward pass (default: %(default)s)"
    )
    local.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:1, ...")
    local.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), float16, ...")
    local.add_argument("--gguf-file", help="a GGUF file inside the --model folder (needs the gguf package)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run `meritsl pseudo-label`; returns 0, 1 when some items failed (re-run to retry them), 2 on a fatal error."""
    args = build_parser().parse_args(argv)
    secret = os.environ.get(args.api_key_env) if args.backend == "openai" else None
    redact = Redactor([secret] if secret else [])
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request drowns the progress
    for handler in root.handlers:
        handler.addFilter(redact)
    try:
        return run(args, secret, redact)
    except (UsageError, FatalBackendError) as e:
        print(f"meritsl pseudo-label: error: {redact(str(e))}", file=sys.stderr)
        return EXIT_FATAL
    except Exception:  # an unexpected failure still must not print the key
        print(redact(traceback.format_exc()), file=sys.stderr)
        return EXIT_FATAL
    finally:
        for handler in root.handlers:
            handler.removeFilter(redact)


def run(args: argparse.Namespace, secret: str | None, redact: Redactor) -> int:
    """The labelling run: resume, serve the cache, label the rest, write the report."""
    try:
        labels = parse_labels_arg(args.labels)
        prompt = load_prompt(args.prompt)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.backend == "openai" and args.method != "generate":
        raise UsageError(
            "--method logprob needs --backend transformers (servers return text, not label scores)"
        )
    for name in ("concurrency", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("parse_retries", "max_retries", "item_retries"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not args.input.is_file():
        raise UsageError(f"--input {args.input}: no such file")
    if args.backend == "openai" and not secret and not args.base_url:
        raise UsageError(
            f"no API key: set the environment variable {args.api_key_env} (or name another with --api-key-env), "
            "or pass --base-url for a local server that needs none"
        )
    out: Path = args.out
    report_path: Path = args.report or out.with_suffix(".report.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        done = _finished_rows(out, args.backend, args.model, args.method, prompt.version)
        items, skipped, source = read_transcripts(args.input, args.gold_field, set(done))
        backend = make_backend(args, labels, prompt, secret, redact)
        return _label_all(args, labels, prompt, backend, items, skipped, out, report_path, redact, source)
    finally:
        lock.close()


def make_backend(
    args: argparse.Namespace, labels: list[str], prompt: Prompt, secret: str | None, redact: Redactor
) -> Backend:
    """The back-end the arguments ask for."""
    if args.backend == "transformers":
        return TransformersBackend(
            args.model,
            labels,
            prompt,
            method=args.method,
            batch_size=args.batch_size,
            parse_retries=args.parse_retries,
            max_new_tokens=args.max_tokens,
            device=args.device,
            dtype=args.dtype,
            gguf_file=args.gguf_file,
        )
    if not secret:
        log.info("%s is not set: sending a dummy key to %s", args.api_key_env, args.base_url)
    return OpenAIBackend(
        args.model,
        labels,
        prompt,
        api_key=secret or DUMMY_API_KEY,
        base_url=args.base_url,
        concurrency=args.concurrency,
        timeout=args.timeout,
        max_retries=args.max_retries,
        item_retries=args.item_retries,
        parse_retries=args.parse_retries,
        seed=args.seed,
        max_tokens=args.max_tokens,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        redact=redact,
    )


def read_transcripts(path: Path, gold_field: str | None, done: set[str]) -> tuple[list[Item], Counter, InputRows]:
    """Items still to label, counts of the rows left out (done before, error, empty text, duplicate, malformed),
    and the input's rows. Reads ``meritsl transcribe`` output (``id``) and ``meritsl prepare`` manifests
    (``utt_id``); raises UsageError, saying why, when no row is usable."""
    source = read_rows(path)
    items: list[Item] = []
    skipped: Counter = Counter()
    seen: set[str] = set()
    for row in source.rows:
        text = row.row.get("text")
        if text is not None and not isinstance(text, str):
            source.malformed.append((row.line, f"text is a {type(text).__name__}, expected a string"))
            continue
        if row.id in seen:
            log.warning("%s:%d: item %s: duplicate id, skipped (the first row is labelled)", path, row.line, row.id)
            skipped["duplicate_id"] += 1
            continue
        seen.add(row.id)
        if row.id in done:
            skipped["done_before"] += 1
        elif row.row.get("error"):
            skipped["error"] += 1
        elif not (text or "").strip():
            skipped["empty_text"] += 1
        else:
            items.append(Item(row.id, text.strip(), row.row.get(gold_field) if gold_field else None))
    source.malformed.sort()
    for lineno, problem in source.malformed:
        log.warning("%s:%d: skipping a malformed row (%s)", path, lineno, problem)
    skipped["malformed"] = len(source.malformed)
    if not seen:
        raise UsageError(source.why_no_rows())
    if not items and not skipped["done_before"]:
        reasons = {"error": "with a transcription error", "empty_text": "with empty text", "duplicate_id": "duplicates",
                   "malformed": "malformed"}  # fmt: skip
        counts = ", ".join(f"{skipped[k]} {v}" for k, v in reasons.items() if skipped[k])
        raise UsageError(f"--input {path}: no row has text to label ({source.lines} rows: {counts})")
    return items, skipped, source


def _label_all(
    args: argparse.Namespace,
    labels: list[str],
    prompt: Prompt,
    backend: Backend,
    items: list[Item],
    skipped: Counter,
    out: Path,
    report_path: Path,
    redact: Redactor,
    source: InputRows | None = None,
) -> int:
    identity = {
        **backend.identity(),
        "prompt_version": prompt.version,
        "prompt": prompt.template,
        "follow_up": prompt.follow_up,
        "labels": labels,
    }
    cache = None if args.no_cache else ResponseCache(args.cache or out.with_name(out.name + ".cache"))
    writer = JsonlAppender(out)
    by_id = {item.id: item for item in items}
    counts: Counter = Counter()
    failures: list[dict[str, str]] = []
    started = last_progress = time.perf_counter()

    def record(item: Item, outcome: Outcome) -> None:
        row: dict[str, Any] = {
            "id": item.id,
            "text": item.text,
            "label": outcome.label,
            "raw_reply": outcome.raw_reply,
            "backend": backend.name,
            "model": backend.model,
            "method": identity["method"],
            "prompt_version": prompt.version,
        }
        if len(outcome.replies) > 1:
            row["replies"] = outcome.replies
        if outcome.scores is not None:
            row["scores"] = outcome.scores
        if args.gold_field:
            row[args.gold_field] = item.gold
        writer.append(row)
        counts["labelled" if outcome.label is not None else "unlabelled"] += 1

    def sink(item_id: str, result: Outcome | ItemFailed) -> None:
        nonlocal last_progress
        item = by_id[item_id]
        if isinstance(result, ItemFailed):
            failures.append({"id": item_id, "error": redact(str(result))})
            log.error("%s", redact(str(result)))
        else:
            if cache is not None:  # cache first: a kill between the two writes costs nothing on resume
                cache.put(cache_key({**identity, "text": item.text}), result.to_json())
            record(item, result)
            counts["from_backend"] += 1
        now = time.perf_counter()
        if now - last_progress >= PROGRESS_EVERY_S:
            last_progress = now
            done_now = counts["labelled"] + counts["unlabelled"]
            log.info(
                "%d/%d items done (%d unlabelled, %d failed), %.1f items/s",
                done_now,
                len(items),
                counts["unlabelled"],
                len(failures),
                counts["from_backend"] / (now - started),
            )

    pending: list[tuple[str, str]] = []
    aborted = None
    try:
        for item in items:
            hit = cache.get(cache_key({**identity, "text": item.text})) if cache is not None else None
            if hit is not None:
                record(item, Outcome.from_json(hit))
                counts["from_cache"] += 1
            else:
                pending.append((item.id, item.text))
        started = time.perf_counter()
        log.info(
            "%d items to label (%d from the cache, %d done before)",
            len(pending),
            counts["from_cache"],
            skipped["done_before"],
        )
        try:
            backend.run(pending, sink)
        except FatalBackendError as e:
            aborted = redact(str(e))
            log.error("stopping: %s", aborted)
    finally:
        writer.close()
        if cache is not None:
            cache.close()
    elapsed = time.perf_counter() - started

    rows, _ = recover_jsonl(out)
    report = build_report(
        args,
        labels,
        prompt,
        backend,
        rows,
        counts,
        skipped,
        failures,
        elapsed,
        aborted,
        cache_dir=None if cache is None else str(cache.path.parent),
    )
    report["malformed_rows"] = source.malformed_report() if source is not None else []
    tmp = report_path.with_name(f".{report_path.name}.tmp")
    tmp.write_text(redact(json.dumps(report, indent=1, ensure_ascii=False)) + "\n", encoding="utf-8")
    os.replace(tmp, report_path)
    print(
        f"pseudo-label: {len(rows)} rows in {out} ({report['unlabelled']} unlabelled); this run: "
        f"{counts['from_backend']} from {backend.name}, {counts['from_cache']} from cache, {len(failures)} failed; "
        f"report {report_path}",
        file=sys.stderr,
    )
    if aborted:
        print(f"meritsl pseudo-label: error: {aborted}", file=sys.stderr)
        return EXIT_FATAL
    if failures:
        print(
            f"meritsl pseudo-label: {len(failures)} items failed (listed in the report); run again to retry them",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    return EXIT_OK


def build_report(
    args: argparse.Namespace,
    labels: list[str],
    prompt: Prompt,
    backend: Backend,
    rows: list[dict[str, Any]],
    counts: Counter,
    skipped: Counter,
    failures: list[dict[str, str]],
    elapsed: float,
    aborted: str | None,
    cache_dir: str | None,
) -> dict[str, Any]:
    """The report: label counts over the whole output file, this run's work and throughput, gold agreement."""
    label_counts = Counter(row.get("label") for row in rows)
    unlabelled = label_counts.pop(None, 0)
    identity = backend.identity()
    report: dict[str, Any] = {
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": str(args.input),
        "output": str(args.out),
        "cache": cache_dir,
        "backend": backend.name,
        "model": backend.model,
        "method": identity["method"],
        "decoding": identity["decoding"],
        "prompt_version": prompt.version,
        "labels": labels,
        "server": backend.server_info(),
        "rows": len(rows),
        "label_counts": {label: label_counts.get(label, 0) for label in labels},
        "unlabelled": unlabelled,
        "parse_failure_rate": round(unlabelled / len(rows), 4) if rows else 0.0,
        "skipped": {
            key: skipped.get(key, 0)
            for key in ("done_before", "error", "empty_text", "duplicate_id", "malformed")
        },
        "this_run": {
            "labelled": counts["labelled"],
            "unlabelled": counts["unlabelled"],
            "from_backend": counts["from_backend"],
            "from_cache": counts["from_cache"],
            "failed": len(failures),
            "requests": backend.stats["requests"],
            "transport_retries": backend.stats["retries"],
            "parse_follow_ups": backend.stats["follow_ups"],
            "elapsed_s": round(elapsed, 3),
            "items_per_s": round(counts["from_backend"] / elapsed, 3) if elapsed > 0 else None,
        },
        "failures": failures[:MAX_FAILURES_LISTED],
        "aborted": aborted,
    }
    if args.gold_field:
        report["gold"] = gold_agreement(rows, labels, args.gold_field)
    return report


def gold_agreement(rows: list[dict[str, Any]], labels: list[str], gold_field: str) -> dict[str, Any]:
    """Accuracy, weighted F1 and the confusion matrix of the LLM labels against ``row[gold_field]`` (lower-cased).

    ``labelled_only`` scores the rows the LLM labelled (what text pre-training trains on); ``all`` counts an
    unlabelled row as wrong. Rows whose gold value is missing or outside the label set are counted, not scored.
    """
    import torch
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    index = {label.lower(): i for i, label in enumerate(labels)}
    n = len(labels)
    gold, pred = [], []
    missing, outside = 0, Counter()
    for row in rows:
        value = row.get(gold_field)
        if value is None or str(value).strip() == "":
            missing += 1
            continue
        key = str(value).strip().lower()
        if key not in index:
            outside[key] += 1
            continue
        gold.append(index[key])
        pred.append(index[row["label"].lower()] if row.get("label") else n)  # n: "unlabelled"
    result: dict[str, Any] = {
        "field": gold_field,
        "scored": len(gold),
        "missing": missing,
        "outside_labels": sum(outside.values()),
        "outside_values": dict(outside.most_common(10)),
    }
    if not gold:
        return result
    target, preds = torch.tensor(gold), torch.tensor(pred)

    def scores(p: torch.Tensor, t: torch.Tensor, classes: int) -> dict[str, float]:
        return {
            "n": int(t.numel()),
            "accuracy": round(float(multiclass_accuracy(p, t, num_classes=classes, average="micro")), 4),
            "weighted_f1": round(
                float(multiclass_f1_score(p, t, num_classes=classes, average="weighted")), 4
            ),
        }

    labelled = preds < n
    result["labelled_only"] = scores(preds[labelled], target[labelled], n) if labelled.any() else None
    result["all"] = scores(preds, target, n + 1)
    matrix = multiclass_confusion_matrix(preds, target, num_classes=n + 1)[:n]  # no gold row is "unlabelled"
    result["confusion_matrix"] = {
        "rows_gold": labels,
        "columns_predicted": [*labels, "unlabelled"],
        "counts": matrix.tolist(),
    }
    return result


def _lock(out: Path) -> Any:
    """An exclusive lock on the output file for this process's lifetime (two runs would duplicate rows)."""
    import fcntl

    handle = open(out, "a", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(f"{out}: another pseudo-label run is writing this file") from None
    return handle


def _finished_rows(out: Path, backend: str, model: str, method: str, prompt_version: str) -> dict[str, dict]:
    """Rows already in ``out`` by id, after repairing a torn last line; refuses a file from other settings."""
    rows, bad = recover_jsonl(out)
    if bad:
        raise UsageError(
            f"{out}: line {bad[0]} is not a JSON object ({len(bad)} such lines); fix or remove them before resuming"
        )
    done: dict[str, dict] = {}
    expected = {"backend": backend, "model": model, "method": method, "prompt_version": prompt_version}
    for lineno, row in enumerate(rows, 1):
        if "id" not in row:
            raise UsageError(f"{out}: row {lineno} has no id; fix or remove it before resuming")
        found = {key: row.get(key) for key in ROW_IDENTITY}
        if found != expected:
            raise UsageError(
                f"{out}: item {row['id']} was labelled with {found}, this run uses {expected}; "
                "write to another --out to keep silver sets from different settings apart"
            )
        done[str(row["id"])] = row
    return done


if __name__ == "__main__":
    sys.exit(main())
