"""Input rows of `transcribe` and `pseudo-label`: their own transcripts (rows keyed ``id``) or a
`meritsl prepare` manifest (rows keyed ``utt_id``), one JSON object a line."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ID_FIELDS = ("id", "utt_id")  # transcripts, manifest
NO_ID = "no `id` or `utt_id` field"
MALFORMED_LISTED = 20


@dataclass
class InputRow:
    """One usable row: its line number, its id and the whole object."""

    line: int
    id: str
    row: dict[str, Any]


@dataclass
class InputRows:
    """The rows of an input file, and its lines that are not rows (line number, problem)."""

    path: Path
    rows: list[InputRow] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)
    first_keys: tuple[str, ...] = ()  # the fields of the first row without an id (for the message)

    @property
    def lines(self) -> int:
        return len(self.rows) + len(self.malformed)

    def malformed_report(self) -> list[dict[str, Any]]:
        """The first malformed lines, for a report."""
        return [{"line": line, "problem": problem} for line, problem in self.malformed[:MALFORMED_LISTED]]

    def why_no_rows(self) -> str:
        """Why the file has no usable row at all (call when ``rows`` is empty)."""
        if not self.malformed:
            return f"--input {self.path}: the file has no rows"
        problems = Counter(problem.split(" (")[0] for _, problem in self.malformed)
        first_line, first_problem = self.malformed[0]
        if problems[NO_ID] == len(self.malformed):
            found = ", ".join(sorted(self.first_keys)) or "none"
            return (
                f"--input {self.path}: no row has an `id` or `utt_id` field ({len(self.malformed)} rows; line "
                f"{first_line} has the fields {found}); expected `meritsl transcribe` output or a "
                "`meritsl prepare` manifest"
            )
        return f"--input {self.path}: no usable row in {len(self.malformed)} lines (line {first_line}: {first_problem})"


def read_rows(path: str | os.PathLike) -> InputRows:
    """Every non-blank line of ``path`` as a row with an id, or as a malformed line (never an exception)."""
    path = Path(path)
    result = InputRows(path)
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                result.malformed.append((lineno, f"not valid JSON ({e.msg})"))
                continue
            if not isinstance(obj, dict):
                result.malformed.append((lineno, f"not a JSON object (a {type(obj).__name__})"))
                continue
            item_id = next((obj[k] for k in ID_FIELDS if isinstance(obj.get(k), (str, int)) and str(obj[k]).strip()), None)
            if item_id is None:
                if not result.first_keys:
                    result.first_keys = tuple(obj)
                result.malformed.append((lineno, NO_ID))
                continue
            result.rows.append(InputRow(lineno, str(item_id), obj))
    return result
