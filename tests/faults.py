"""Faults injected through the config, as a user's own callback would be: no test hook in gpo_lab."""

import os
import signal

import pytorch_lightning as pl
import torch


class KillAtStep(pl.Callback):
    """SIGKILL this process right after optimizer step ``step`` (no cleanup, no atexit)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonWeightsAtStep(pl.Callback):
    """Put a NaN into the policy before batch ``step``, as a numerical blow-up would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(module.policy.parameters()).view(-1)[0] = float("nan")
