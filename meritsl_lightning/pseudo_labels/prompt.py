"""The labelling prompt (the paper's by default, or a user template), its version, and reply parsing."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LABELS = ("positive", "negative", "neutral")
# The paper's instruction (method.md §2) with its "[sentence]" read as a slot name: the instruction is kept
# word for word and the sentence follows it on its own line, so every chat template (some have no system
# role) receives one user message.
PAPER_TEMPLATE = (
    "You are a sentiment classification bot. Given the sentence, classify as {labels} sentiment. "
    "Please give the sentiment and no extra text as output.\n\nSentence: {text}"
)
PAPER_VERSION = "merits-l-paper-v1"
FOLLOW_UP_TEMPLATE = "Answer with exactly one word: {labels}."
TEXT_SLOT = "{text}"
LABELS_SLOT = "{labels}"


def join_labels(labels: Sequence[str]) -> str:
    """``positive, negative or neutral`` (the paper's wording for its label set)."""
    labels = list(labels)
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


@dataclass(frozen=True)
class Prompt:
    """A prompt template with ``{text}`` (required) and ``{labels}`` (optional) slots, and its version tag.

    Slots are replaced literally (not with ``str.format``), so a template may contain other braces, e.g. JSON.
    """

    template: str
    version: str
    follow_up: str = FOLLOW_UP_TEMPLATE

    def render(self, text: str, labels: Sequence[str]) -> str:
        """The first user message for one sentence."""
        return self.template.replace(LABELS_SLOT, join_labels(labels)).replace(TEXT_SLOT, text)

    def render_follow_up(self, labels: Sequence[str]) -> str:
        """The stricter follow-up sent after a reply without a label word."""
        return self.follow_up.replace(LABELS_SLOT, join_labels(labels))

    def messages(
        self, text: str, labels: Sequence[str], earlier_replies: Sequence[str] = ()
    ) -> list[dict[str, str]]:
        """The chat for one sentence: the prompt, then one (reply, follow-up) pair per earlier unparsable reply."""
        chat = [{"role": "user", "content": self.render(text, labels)}]
        for reply in earlier_replies:
            chat.append({"role": "assistant", "content": reply})
            chat.append({"role": "user", "content": self.render_follow_up(labels)})
        return chat


def paper_prompt() -> Prompt:
    """The paper's prompt (method.md §2)."""
    return Prompt(PAPER_TEMPLATE, PAPER_VERSION)


def load_prompt(path: str | Path | None) -> Prompt:
    """The paper's prompt, or the template in ``path`` versioned as ``file:<name>:<sha256 prefix>``."""
    if path is None:
        return paper_prompt()
    path = Path(path)
    try:
        template = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(f"prompt file {path}: cannot be read ({e.strerror})") from e
    if TEXT_SLOT not in template:
        raise ValueError(
            f"prompt file {path}: expected a {TEXT_SLOT} placeholder where the sentence goes; none found"
        )
    digest = hashlib.sha256(template.encode()).hexdigest()[:12]
    return Prompt(template, f"file:{path.name}:{digest}")


def parse_label(reply: str | None, labels: Sequence[str]) -> str | None:
    """The first label word in ``reply`` (case-insensitive, whole words), spelled as in ``labels``; None if none."""
    if not reply or not labels:
        return None
    # longest first, so that with labels like "very positive" and "positive" the longer one wins at a position
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    match = re.search(rf"(?<!\w)({alternatives})(?!\w)", reply, flags=re.IGNORECASE)
    if match is None:
        return None
    found = match.group(1).lower()
    return next(label for label in labels if label.lower() == found)


def parse_labels_arg(value: str) -> list[str]:
    """``--labels positive,negative,neutral`` -> a list of distinct, non-empty labels."""
    labels = [part.strip() for part in value.split(",") if part.strip()]
    if len(labels) < 2:
        raise ValueError(f"--labels: expected at least two comma-separated labels, got {value!r}")
    if len({label.lower() for label in labels}) != len(labels):
        raise ValueError(f"--labels: labels must differ (case-insensitively), got {value!r}")
    return labels
