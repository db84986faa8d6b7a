"""A callback that SIGKILLs its own process at a given optimizer step (the kill-and-resume tests add it)."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class KillAtStep(Callback):
    """Kill the process with SIGKILL in the middle of the training batch that follows optimizer step ``step``
    (after the checkpoint callbacks of that step ran): no clean-up, no flushing, as a crash or an OOM killer."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
