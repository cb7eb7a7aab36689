"""The LightningModule: a trainable policy, a frozen reference and a preference loss (GPO or another of the field)."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from gpo_lab.data.online_prompts import PromptRows
from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import PreferenceLoss
from gpo_lab.parallel.ranks import gather_rows
from gpo_lab.scoring.batches import PairBatch, PairLogps
from gpo_lab.training.nonfinite import check_finite_gradients, check_finite_loss
from gpo_lab.training.online_pairs import OnlineDraw, OnlinePairs
from gpo_lab.training.optimizer import OptimizerFactory, warmed_up_optimizer
from gpo_lab.training.pair_metrics import preference_metrics, ranking_accuracy

log = logging.getLogger(__name__)
# Training statistics that need the reference: a reference-free loss's training steps do not log them.
REFERENCE_METRICS = (
    *("rho_mean", "rho_std", "offline_reg", "offline_reg_se"),
    *("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"),
)


class GPOModule(pl.LightningModule):
    """Trains pi_theta on E_mu[f(beta * rho)] against a frozen pi_ref.

    The reference is kept out of checkpoints (it is rebuilt from the config, exactly as at the
    start), so a checkpoint holds the policy and optimizer state only. ``beta`` is checked once,
    with the rest of the config, before a run builds anything (:mod:`gpo_lab.run.config_checks`).
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        reference: torch.nn.Module,
        loss: PreferenceLoss,
        beta: float,
        optimizer: OptimizerFactory,
        warmup_steps: int = 0,
        online: OnlinePairs | None = None,
    ):
        super().__init__()
        self.policy = policy
        self.reference = reference
        self.loss = loss
        self.beta = float(beta)
        self.optimizer_factory = optimizer
        self.warmup_steps = warmup_steps
        self.online = online  # draws each step's pairs from the policy (gpo_lab.training.online_pairs)
        self._online_draw: OnlineDraw | None = None
        self._val_outputs: list[tuple[PairLogps, torch.Tensor]] = []
        self.saved_shapes = state_shapes(self, skip="reference.")  # before any strategy wraps the policy
        self.skips_reference = not loss.uses_reference
        if self.skips_reference:
            log.info(
                "loss %s is reference-free: training steps do not score the reference; validation still does, "
                "for R_mu, the rewards and KL",
                loss.name,
            )

    def train(self, mode: bool = True) -> GPOModule:
        """Lightning switches the whole module to train mode; the reference always stays in eval."""
        super().train(mode)
        self.reference.eval()
        return self

    # ----------------------------------------------------------------- log-probs and loss
    def batch_logprobs(self, batch: PairBatch, reference: bool = True) -> PairLogps:
        """Policy and reference log-probs of the batch's pairs, with the responses' token counts.

        The reference's come cached when the batch has them; with ``reference=False`` (a
        reference-free loss in training) it is not scored and its values are NaN.
        """
        policy = batch.score(self.policy)
        if batch.reference_logps is not None:
            reference_logps = batch.reference_logps.to(policy.dtype)
        elif not reference:
            reference_logps = torch.full_like(policy, float("nan")).detach()
        else:
            with torch.no_grad():
                reference_logps = batch.score(self.reference)
        lengths = batch.response_lengths().to(policy.device)
        logps = PairLogps.from_scores(policy, reference_logps, lengths)
        offset = getattr(batch, "offset", None)
        return logps if offset is None else dataclasses.replace(logps, offset=offset)

    def per_example_loss(self, logps: PairLogps) -> torch.Tensor:
        return self.loss.pair_loss(logps, self.beta)

    def online_batch(self, prompts: PromptRows) -> tuple[PairBatch, bool]:
        """This step's fresh pairs on the batch's prompts, batched as the offline ones, and whether any was kept.

        When every pair was dropped (identical or empty responses) the batch is a placeholder, the first
        prompt with EOS as both responses, which the step scores at weight zero: under DDP and FSDP every
        rank must run the step's forward, backward and gathers, or the others wait for it forever.
        """
        if self.online is None:
            raise ConfigError("A batch of prompts without pairs needs online pairs (pairs.online=true).")
        draw = self.online.draw(self.policy, prompts, self.global_step)
        self._online_draw = draw
        datamodule = self.online.datamodule
        if draw.pairs:
            return datamodule.collate(draw.pairs).to(self.device), True
        eos = datamodule.tokenizer.eos_token_id
        placeholder = {"prompt_ids": prompts.prompt_ids[0], "chosen_ids": [eos], "rejected_ids": [eos]}
        return datamodule.collate([placeholder]).to(self.device), False

    def training_step(self, batch: PairBatch | PromptRows, batch_idx: int) -> torch.Tensor:
        kept = True
        if isinstance(batch, PromptRows):
            batch, kept = self.online_batch(batch)
        logps = self.batch_logprobs(batch, reference=not self.skips_reference)
        losses = self.per_example_loss(logps)
        zero = losses.sum() * 0.0  # the placeholder's loss: in the graph, at weight zero
        if not kept:
            logps, losses = no_pairs(logps), losses[:0]
        check_finite_loss(self.global_step, losses, logps.rho)
        world_size = self.trainer.world_size
        if world_size == 1 and not self.writes_step_metrics():
            self.count_online_pairs(losses.numel())
            return losses.mean() if kept else zero
        everyone, global_losses = gathered(logps.detach(), losses.detach())  # the global batch, as one process has it
        self.count_online_pairs(global_losses.numel())
        if self.writes_step_metrics() and global_losses.numel():  # the same answer on every rank
            self.log_training_metrics(everyone, global_losses, batch if kept else None)
        if not kept or not global_losses.numel():
            return zero
        # DDP averages the ranks' gradients: weighing each rank's sum by W / (global batch) makes that
        # average the gradient of the global batch's mean loss, even when the shares differ in size.
        return losses.sum() * (world_size / global_losses.numel()) if world_size > 1 else losses.mean()

    def count_online_pairs(self, count: int) -> None:
        """Add this step's kept pairs, over every rank, to ``data.online_pairs`` (the same count on every rank)."""
        if self.online is not None:
            self.online.drawn += count
            self.online.datamodule.stats["online_pairs"] = self.online.drawn

    def log_training_metrics(self, logps: PairLogps, losses: torch.Tensor, batch: PairBatch | None) -> None:
        """The global batch's statistics; ``batch``, this rank's (None when it kept no pair), adds its data's."""
        metrics = preference_metrics(logps, losses, beta=self.beta)
        if self.skips_reference and (batch is None or batch.reference_logps is None):
            metrics = {k: v for k, v in metrics.items() if k not in REFERENCE_METRICS}
        metrics["lr"] = torch.tensor(self.trainer.optimizers[0].param_groups[0]["lr"])
        metrics |= self.pair_data_metrics(batch) if batch is not None else {}
        loss = metrics.pop("loss")
        count = losses.numel()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=count)
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, on_step=True, on_epoch=False, batch_size=count)

    def pair_data_metrics(self, batch: PairBatch) -> dict[str, torch.Tensor]:
        """What the loss sees: the judge's mean reward of the training pairs' responses (online: this step's;
        offline: the training set's, the same at every step) and their mean length in tokens."""
        out = {"pair_length": batch.response_lengths().double().mean()}
        draw = self._online_draw if self.online is not None else None
        if draw is not None and draw.reward_chosen is not None and draw.reward_rejected is not None:
            out["pair_reward"] = torch.cat([draw.reward_chosen, draw.reward_rejected]).mean()
            out["pair_reward_chosen"] = draw.reward_chosen.mean()
        elif draw is None:
            mean = getattr(getattr(self._trainer, "datamodule", None), "mean_pair_reward", None)
            value = mean() if callable(mean) else None
            if value is not None:
                out["pair_reward"] = torch.tensor(value, dtype=torch.float64)
        if draw is not None:
            out["online_kept_fraction"] = torch.tensor(len(draw.pairs) / max(1, draw.drawn))
        return out

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        total = check_finite_gradients(self.global_step, self.policy.named_parameters())
        if self.writes_step_metrics():
            self.log("train/grad_norm", total, on_step=True, on_epoch=False)

    def writes_step_metrics(self) -> bool:
        """Whether the loggers write this step's training metrics (every ``trainer.log_every_n_steps``).

        Computing and logging them costs more than a small model's whole step, so the steps whose
        values no logger would write skip it; the logged steps get exactly the values they had.
        """
        connector = getattr(self._trainer, "_logger_connector", None)
        return connector is None or bool(connector.should_update_logs)

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: PairBatch, batch_idx: int) -> None:
        logps = self.batch_logprobs(batch)
        self._val_outputs.append((logps, self.per_example_loss(logps)))

    def on_validation_epoch_end(self) -> None:
        """Statistics over the whole held-out set at once (all ranks' shares), so stds and errors are exact."""
        distributed = self.trainer.world_size > 1
        if not self._val_outputs and not distributed:
            return
        if self._val_outputs:
            logps, losses = zip(*self._val_outputs)
            local, local_losses = PairLogps.cat(logps), torch.cat(losses)
        else:  # this rank's share is empty, but the gather below is a collective: it takes part with no rows
            empty = torch.zeros(0, device=self.device)
            local, local_losses = PairLogps(empty, empty, empty, empty), empty
        self._val_outputs.clear()
        everyone, all_losses = gathered(local, local_losses)
        if not all_losses.numel():
            return
        metrics = preference_metrics(everyone, all_losses, beta=self.beta)
        margins = getattr(getattr(self._trainer, "datamodule", None), "golden_margins", None)
        golden = margins("validation") if callable(margins) else None
        if golden is not None and golden.numel() == everyone.rho.numel():
            metrics["ranking_accuracy"] = ranking_accuracy(everyone.rho, golden)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, on_step=False, on_epoch=True)

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self):
        trainable = (p for p in self.policy.parameters() if p.requires_grad)
        return warmed_up_optimizer(self.optimizer_factory, trainable, self.warmup_steps)

    # ----------------------------------------------------------------- checkpoints: no reference, all random state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("reference.")]:
            del state[key]
        checkpoint["random_state"] = capture_random_state()
        if self.online is not None:
            checkpoint["online_pairs"] = self.online.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_checkpoint_fits(self.saved_shapes, checkpoint, getattr(self._trainer, "ckpt_path", None))
        checkpoint["state_dict"].update({f"reference.{k}": v for k, v in self.reference.state_dict().items()})
        if "random_state" in checkpoint:
            restore_random_state(checkpoint["random_state"])
        if self.online is not None and "online_pairs" in checkpoint:
            self.online.load_state_dict(checkpoint["online_pairs"], self.policy)


def state_shapes(module: torch.nn.Module, skip: str | None = None) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor a checkpoint of ``module`` holds (names under ``skip`` left out)."""
    return {
        name: tuple(tensor.shape)
        for name, tensor in module.state_dict().items()
        if not (skip and name.startswith(skip))
    }


def check_checkpoint_fits(expected: Mapping[str, tuple[int, ...]], checkpoint: dict, path=None) -> None:
    """Refuse, before any weight is copied, a checkpoint whose tensors are not this model's.

    A change of code or config that reshapes the model (a layer, a width, a vocabulary) leaves a
    checkpoint the resume cannot use: say what differs and how to start afresh, instead of
    torch's ``size mismatch`` traceback. The checkpoint itself is left in place.
    """
    saved = {name: tuple(t.shape) for name, t in checkpoint.get("state_dict", {}).items() if hasattr(t, "shape")}
    differences = [
        f"{name}: {list(saved[name])} in the checkpoint, {list(shape)} now"
        for name, shape in sorted(expected.items())
        if name in saved and saved[name] != shape
    ]
    for names, where in (
        (saved.keys() - expected.keys(), "only in the checkpoint"),
        (expected.keys() - saved.keys(), "new"),
    ):
        if names:
            listed = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
            differences.append(f"{len(names)} tensor(s) {where}: {listed}")
    if not differences:
        return
    shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
    folder = Path(path).parent if path else Path("<run directory>", "checkpoints")
    raise ConfigError(
        f"This checkpoint{f' ({path})' if path else ''} belongs to another model config: {shown}. "
        f"The code or the config changed the model's shape since it was saved. Move {folder} aside to train "
        "this model from step 0, or use another name= (the old checkpoint is left untouched)."
    )


def no_pairs(logps: PairLogps) -> PairLogps:
    """``logps`` cut to none of its pairs (each field empty, None kept None)."""
    fields = {f.name: getattr(logps, f.name) for f in dataclasses.fields(logps)}
    return dataclasses.replace(logps, **{name: value[:0] for name, value in fields.items() if value is not None})


def gathered(logps: PairLogps, losses: torch.Tensor) -> tuple[PairLogps, torch.Tensor]:
    """The four log-probs and the loss of every rank's pairs, in rank order (the pairs of one process)."""
    rows = torch.stack(
        [logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected, losses], dim=1
    )
    everyone = gather_rows(rows.float() if rows.dtype not in (torch.float32, torch.float64) else rows)
    if everyone is rows:
        return logps, losses
    return PairLogps(*everyone[:, :4].unbind(1)), everyone[:, 4]


def capture_random_state() -> dict:
    """Python, NumPy and torch generator states as plain containers (loadable with weights_only)."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, np.asarray(keys).tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def restore_random_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
