"""Faults injected through the config, as a user's own callback would be: no test hook in gpo_lab."""

import os
import signal
import time

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


class SlowDown(pl.Callback):
    """Sleep after every step, so that a test can act while a job is still training."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        import time

        time.sleep(self.seconds)


class FailFor(pl.Callback):
    """Raise in the one job of a grid whose (loss, beta) matches, to show the others go on."""

    def __init__(self, loss: str, beta: float, run_loss: str, run_beta: float):
        self.matches = (loss, float(beta)) == (run_loss, float(run_beta))

    def on_train_start(self, trainer, module):
        if self.matches:
            raise RuntimeError("injected failure for this job")


class InfiniteGradientAtStep(pl.Callback):
    """Make one gradient infinite just before optimizer step ``step`` (callbacks run before the module)."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if trainer.global_step == self.step:
            parameter = next(p for p in module.policy.parameters() if p.grad is not None)
            parameter.grad.view(-1)[0] = float("inf")


class RaiseAtStep(pl.Callback):
    """Crash this run right after optimizer step ``step`` (before a checkpoint of that step), as a bug would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"injected crash after step {self.step}")


class StopAt(pl.Callback):
    """Stop the training as a preemption would: at the start of the batch after step ``step`` (its checkpoint
    written), with an error."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"preempted at step {self.step}")


class OnRank(pl.Callback):
    """Raise, SIGKILL, or poison (a NaN into the policy, so that the next loss is NaN), on one rank only,
    after optimizer step ``step``.

    ``marker``: a file written just before the fault (its content the time), and whose presence
    stops the fault from striking again, so that the same command can be rerun to resume.
    """

    def __init__(self, rank: int, step: int, fault: str = "raise", marker: str | None = None):
        if fault not in ("raise", "kill", "poison"):
            raise ValueError(f"fault must be raise, kill or poison, got {fault!r}")
        self.rank, self.step, self.fault, self.marker = rank, step, fault, marker

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_rank != self.rank or trainer.global_step != self.step:
            return
        if self.marker is not None:
            if os.path.exists(self.marker):
                return
            with open(self.marker, "w") as handle:
                handle.write(repr(time.time()))
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fault == "poison":
            with torch.no_grad():
                next(module.policy.parameters()).view(-1)[0] = float("nan")
            return
        raise RuntimeError(f"injected failure on rank {self.rank} after step {self.step}")
