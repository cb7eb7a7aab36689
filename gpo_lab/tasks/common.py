"""What every task shares: building a run's (module, datamodule) from its config, and saying when the
``reference_cache`` setting cannot apply to a task (rather than ignoring it silently)."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import PreferenceLoss
from gpo_lab.models.batch_dependence import batch_dependence
from gpo_lab.models.reference import LazyReference
from gpo_lab.models.reference_cache import SPLITS, ReferenceLogpCache, attach_reference_logps
from gpo_lab.scoring.fast_path_report import check_fast_paths
from gpo_lab.training.online_pairs import OnlinePairs

log = logging.getLogger(__name__)

REFERENCE_LOGPS = "reference_logps"  # the key of summary.json's ``data`` that says why the cache is not used
ONLINE_PAIRS = "online_pairs"  # summary.json's ``data.online_pairs``: training pairs drawn from the policy
FAST_PATHS = "fast_paths"  # summary.json's ``data.fast_paths``: each scoring fast path, on or off and why


def build_task(cfg: DictConfig) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """The loss, then the task named by ``builder`` (a function ``build(cfg, loss, beta)``), seeded by ``seed``.

    ``beta`` and the other values were checked at start-up (:func:`gpo_lab.run.config_checks.validate_run_config`).
    """
    loss: PreferenceLoss = instantiate(cfg.loss)
    log.info("loss %r", loss)
    pl.seed_everything(cfg.seed, workers=True)
    return get_method(cfg.builder)(cfg, loss, float(cfg.beta))


def enabled_reference_cache(cfg: DictConfig) -> DictConfig | None:
    """The ``reference_cache`` block when it is switched on, else None."""
    cache = cfg.get("reference_cache")
    return cache if cache is not None and cache.get("enabled", False) else None


def reference_cache_not_used(cfg: DictConfig, stats: dict[str, Any], why: str) -> None:
    """One warning, and ``reference_logps: "not used: <why>"`` in the data stats (summary.json's ``data``),
    when ``reference_cache.enabled`` is set for a task or a reference it does not apply to."""
    if enabled_reference_cache(cfg) is None:
        return
    log.warning("reference_cache.enabled=true is not used: %s.", why)
    stats[REFERENCE_LOGPS] = f"not used: {why}"


def with_reference_cache(cfg: DictConfig, datamodule, reference: torch.nn.Module) -> torch.nn.Module:
    """The reference a module should hold: with ``reference_cache.enabled``, the data's pairs get their
    cached (or once-computed) reference log-probs and training never runs the reference, which is then
    loaded lazily for the evaluations that still need it.

    Only when the reference's log-probs do not depend on what a pair is batched with (checked now, under
    the run's precision: :func:`batch_dependence`), since otherwise the cached values would not be the
    training batches' and rho would not start at 0; then the reference is scored in each training batch.
    """
    cache = enabled_reference_cache(cfg)
    if cache is None:
        return reference
    precision = cfg.get("trainer", {}).get("precision", "32-true")
    packing = bool(getattr(datamodule, "packing", True))
    splits = (getattr(datamodule, attribute, None) for attribute in SPLITS.values())
    pairs = next((split for split in splits if split is not None and len(split)), None)
    why = batch_dependence(reference, pairs, datamodule.tokenizer.pad_token_id, packing, precision)
    if why is not None:
        reference_cache_not_used(cfg, datamodule.stats, why)
        return reference
    attach_reference_logps(
        datamodule,
        reference,
        ReferenceLogpCache(cache.get("dir")),
        cache.get("batch_size", 16),
        precision=precision,
    )
    return LazyReference(reference)


def record_fast_paths(cfg: DictConfig, datamodule, policy: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Check the scoring fast paths on both models now, under the run's precision, and record in the data
    stats (summary.json's ``data.fast_paths``) which are on and why any is off."""
    precision = cfg.get("trainer", {}).get("precision", "32-true")
    datamodule.stats[FAST_PATHS] = {
        "policy": check_fast_paths(policy, precision),
        "reference": check_fast_paths(reference, precision),
    }


def online_pairs(cfg: DictConfig, datamodule) -> OnlinePairs | None:
    """With ``pairs.online``, the source of each step's fresh pairs (:mod:`gpo_lab.training.online_pairs`),
    labelled by the run's judge at ``pairs.label_temperature``; the data module then batches prompts only.
    Every run records ``data.online_pairs`` (0 for offline pairs)."""
    datamodule.stats[ONLINE_PAIRS] = 0
    settings = cfg.get("pairs")
    if settings is None or not settings.get("online", False):
        return None
    if cfg.get("judge") is None:
        raise ConfigError(
            "pairs.online=true labels the fresh pairs with the task's judge, and this run has none: add "
            "+judge=golden (synthetic task) or +judge=reward_model judge.name=PATH."
        )
    judge = instantiate(cfg.judge, temperature=float(settings.get("label_temperature", 0.0)))
    datamodule.use_online_prompts()
    return OnlinePairs(
        datamodule=datamodule,
        judge=judge,
        seed=int(settings.get("seed", cfg.seed)),
        refresh_every=int(settings.get("refresh_every", 1)),
        max_new_tokens=int(settings.get("max_new_tokens", 64)),
        batch_size=int(settings.get("batch_size", 128)),
    )
