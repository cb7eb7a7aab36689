"""The bandit as a Lightning task: free logits trained on a GPO loss, evaluated exactly.

``build_bandit_task`` is the ``builder`` of ``+experiment=bandit``: it plugs the bandit into the
same run path as the language tasks (callbacks, loggers, checkpoints, metrics.jsonl,
summary.json), so the bandit also tests that path end to end.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, StackDataset

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import PreferenceLoss
from gpo_lab.tasks.bandit.problem import BanditProblem, build_problem
from gpo_lab.tasks.common import reference_cache_not_used
from gpo_lab.training.gpo_module import check_checkpoint_fits, state_shapes
from gpo_lab.training.optimizer import OptimizerFactory, optimization_options, warmed_up_optimizer

OBJECTIVES = ("population", "sampled")


class BanditModule(pl.LightningModule):
    """A softmax policy with one free logit per action, initialised at the reference (rho = 0)."""

    def __init__(
        self,
        problem: BanditProblem,
        loss: PreferenceLoss,
        beta: float,
        optimizer: OptimizerFactory,
        warmup_steps: int = 0,
    ):
        super().__init__()
        self.problem = problem
        self.loss = loss
        self.beta = float(beta)  # checked with the rest of the config (gpo_lab.run.config_checks)
        self.optimizer_factory = optimizer
        self.warmup_steps = warmup_steps
        self.logits = torch.nn.Parameter(problem.reference_logits.clone())
        self._threads: int | None = None
        self.saved_shapes = state_shapes(self)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint of another number of actions is refused with what differs, not torch's size mismatch."""
        check_checkpoint_fits(self.saved_shapes, checkpoint, getattr(self._trainer, "ckpt_path", None))

    def setup(self, stage: str) -> None:
        """One intra-op thread while Lightning runs: the tensors hold a few numbers, and more threads
        only add synchronisation, which on a busy CPU makes every step several times slower."""
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def teardown(self, stage: str) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted mean of f(beta rho(chosen, rejected)); on the population table it is exact."""
        rho = self.problem.rho(self.logits, batch["chosen"], batch["rejected"])
        weight = batch["weight"]
        return (weight * self.loss.per_example(rho, self.beta)).sum() / weight.sum()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.batch_loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch["weight"].numel())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Every quantity is a finite sum over actions and pairs: no held-out data is needed."""
        metrics = self.problem.metrics(self.logits.detach(), self.loss, self.beta)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, on_step=False, on_epoch=True, batch_size=1)

    def configure_optimizers(self):
        return warmed_up_optimizer(self.optimizer_factory, [self.logits], self.warmup_steps)


class _Repeated(Dataset):
    """One batch (the whole labelled population) served ``length`` times."""

    def __init__(self, batch: dict[str, torch.Tensor], length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


class BanditDataModule(pl.LightningDataModule):
    """Training batches of (chosen, rejected, weight).

    ``population``: every step sees the whole labelled distribution, so gradient descent runs on
    the exact expected loss. ``sampled``: a finite dataset of ``num_pairs`` labelled draws from
    mu (drawn with ``seed + 1``, so it does not reuse the stream that drew the rewards), in
    shuffled minibatches of ``batch_size``.
    """

    def __init__(
        self,
        problem: BanditProblem,
        objective: str = "population",
        num_pairs: int = 512,
        batch_size: int = 64,
        seed: int = 0,
        epoch_length: int = 100,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ConfigError(f"bandit.objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}.")
        if objective == "sampled":
            for key, value in (("num_pairs", num_pairs), ("batch_size", batch_size)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(
                        f"bandit.{key} must be a positive integer for the sampled objective, got {value!r}."
                    )
        self.problem = problem
        self.objective = objective
        self.num_pairs = num_pairs
        self.batch_size = batch_size
        self.seed = seed
        self.epoch_length = epoch_length
        self.train_rows: dict[str, torch.Tensor] | None = None
        self.notes: dict[str, Any] = {}  # added to ``stats`` by the builder

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is None:
            if self.objective == "population":
                self.train_rows = self.problem.labelled_population()
            else:
                self.train_rows = self.problem.sample_pairs(
                    self.num_pairs, torch.Generator().manual_seed(self.seed + 1)
                )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if self.objective == "population":
            return DataLoader(_Repeated(self.train_rows, self.epoch_length), batch_size=None)
        return DataLoader(
            StackDataset(**self.train_rows),
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(_Repeated(self.train_rows, 1), batch_size=None)

    @property
    def stats(self) -> dict[str, Any]:
        """What summary.json records under ``data``."""
        problem = self.problem
        return {
            "num_actions": problem.num_actions,
            "support": problem.support.nonzero().flatten().tolist(),
            "num_pairs_of_mu": int((problem.pair_weights > 0).sum()),
            "objective": self.objective,
            "train_rows": int(self.train_rows["chosen"].numel()) if self.train_rows is not None else None,
            "reward": problem.reward.tolist(),
            **self.notes,
        }


def build_bandit_task(cfg: DictConfig, loss: PreferenceLoss, beta: float) -> tuple[BanditModule, BanditDataModule]:
    """The ``builder`` of ``+experiment=bandit``: reads the ``bandit:`` block, ``optim`` and ``seed``."""
    settings = cfg.get("bandit")
    if settings is None:
        raise ConfigError("The bandit builder needs a `bandit:` block in the config; run with +experiment=bandit.")
    if not loss.on_rho:
        raise ConfigError(
            f"The bandit is defined on pairs through rho alone, but loss {loss.name!r} is not a "
            "function of beta * rho (it uses lengths, the reference-free scores, the two log-ratios apart or the "
            "batch). Pick a GPO loss or one of cdpo, robust, exo_pair, discopop."
        )
    problem = build_problem(settings, cfg.seed)
    module = BanditModule(problem, loss, beta, **optimization_options(cfg))
    datamodule = BanditDataModule(
        problem,
        objective=settings.get("objective", "population"),
        num_pairs=settings.get("num_pairs", 512),
        batch_size=settings.get("batch_size", 64),
        seed=cfg.seed,
        epoch_length=settings.get("epoch_length", 100),
    )
    reference_cache_not_used(cfg, datamodule.notes, "the bandit's reference is an exact table, nothing to cache")
    return module, datamodule
