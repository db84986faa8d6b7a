"""Test-wide settings: offline, quiet, deterministic; shared corpora and trained stage checkpoints."""

from __future__ import annotations

import os
import tempfile

# before anything imports transformers, huggingface_hub or wandb
os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    WANDB_MODE="offline",
    WANDB_SILENT="true",
    TOKENIZERS_PARALLELISM="false",
)
_wandb_home = tempfile.mkdtemp(prefix="meritsl-wandb-")
for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
    os.environ.setdefault(var, _wandb_home)

import pytest  # noqa: E402

from tests.stage_runner import StageChain, train_chain  # noqa: E402


@pytest.fixture(scope="session")
def chain(tmp_path_factory: pytest.TempPathFactory) -> StageChain:
    """All five stage models trained for one epoch on a tiny IEMOCAP-layout corpus (shared by many tests)."""
    return train_chain(tmp_path_factory.mktemp("chain"))
