"""Writing a generated corpus: reuse one made with the same parameters, else build it atomically."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def existing_parameters(root: Path) -> dict[str, Any] | None:
    """The parameters recorded in ``root/generated.json``, or None when there is no readable one."""
    try:
        return json.loads((root / "generated.json").read_text(encoding="utf-8"))["parameters"]
    except (OSError, ValueError, KeyError):
        return None


def build_corpus(out_dir: str | Path, folder: str, parameters: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return ``out_dir/folder``, (re)building it with ``build(partial_folder)`` unless it already holds a corpus
    generated with ``parameters``.

    A corpus with other parameters from the same generator is replaced; a folder that is not ours is never
    touched. Without espeak-ng (``parameters["espeak"]`` None) a corpus matching every other parameter is
    reused; building one then fails with the install hint. ``build`` writes into a hidden ``.partial`` folder renamed at the end, so a crash never leaves a
    half-written corpus; it must write ``generated.json`` last.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    root = out_dir / folder
    if root.exists():
        existing = existing_parameters(root)
        if existing == parameters:
            return root
        if parameters.get("espeak", "") is None and existing is not None and {**existing, "espeak": None} == parameters:
            return root
        if existing is None or existing.get("generator") != parameters["generator"]:
            raise FileExistsError(
                f"{root} exists and is not a corpus written by {parameters['generator']} (no generated.json of ours); "
                "refusing to overwrite it. Choose another output folder."
            )
    if parameters.get("espeak", "") is None:
        from data_modules.generated.speech import espeak_executable

        espeak_executable()  # raises the install hint
    partial = out_dir / f".{folder}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        build(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    return root
