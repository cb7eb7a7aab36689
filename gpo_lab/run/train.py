"""One training run: check the config, build its task (:mod:`gpo_lab.tasks`), fit, and record the outcome."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, ListConfig, OmegaConf

from gpo_lab.errors import ConfigError, error_text, user_facing_cause
from gpo_lab.parallel.ranks import (
    announce_decision,
    await_decision,
    clear_failures,
    is_communication_error,
    launched_as_rank_zero,
    launched_rank,
    leave_after_failure,
    peer_failure,
    record_failure,
    started_together,
)
from gpo_lab.run.checkpoints import AtomicCheckpointIO, usable_checkpoint
from gpo_lab.run.config_checks import check_writable, validate_run_config
from gpo_lab.run.fingerprint import RunDirectoryHoldsAnotherRun, check_same_run, fingerprint, identity
from gpo_lab.run.metrics_file import MetricsFileLogger
from gpo_lab.run.resume import archive_previous_run, has_run_files, resume_point, stored_fingerprint
from gpo_lab.run.signals import (
    Interrupted,
    refuse_if_stopping,
    signal_name,
    stop_on_signals,
    stop_signal,
    trainer_running,
)
from gpo_lab.run.summary import RunSummary, ValidationTracker, loss_function_record
from gpo_lab.store.lock import RunLock
from gpo_lab.store.records import atomic_write_text
from gpo_lab.store.redaction import redact_hydra_record, redact_override, redact_secrets
from gpo_lab.store.run_files import RunFiles
from gpo_lab.tasks.common import build_task

log = logging.getLogger(__name__)

# Expected here, not problems: the frozen reference is in eval mode by design, a machine with
# SLURM installed is not necessarily running this job under srun, and validation statistics are
# gathered from every rank before they are logged (the same values on all ranks, no sync_dist).
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*The `srun` command is available.*")
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level in distributed.*")


def typed_overrides(cfg: DictConfig, redact: bool = True) -> list[str]:
    """The command line's overrides as typed (``${oc.env:...}`` unexpanded), secret-looking values redacted."""
    overrides = cfg.get("overrides") or []
    raw = OmegaConf.to_container(overrides, resolve=False) if isinstance(overrides, ListConfig) else list(overrides)
    return [redact_override(str(o)) if redact else str(o) for o in raw]


def describe_run(cfg: DictConfig, config_fingerprint: str | None = None) -> dict[str, Any]:
    """The identifying numbers of a run, as the report and sweep tools read them."""
    described = {
        "name": cfg.get("name"),
        "loss": OmegaConf.select(cfg, "loss.name") or OmegaConf.select(cfg, "loss.fn"),  # a field loss has a name
        "beta": cfg.beta,
        "lr": OmegaConf.select(cfg, "optim.lr"),
        "seed": cfg.seed,
        "overrides": typed_overrides(cfg),
    }
    return {**described, "config_fingerprint": config_fingerprint} if config_fingerprint else described


def saved_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``config.yaml`` holds it: secrets redacted, overrides as typed."""
    config = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    if "overrides" in config:
        config["overrides"] = typed_overrides(cfg)
    return config


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """Every entry of the ``callbacks`` group that is not switched off (set to null)."""
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(node) for node in (cfg.get("logger") or {}).values() if node is not None]


def trainer_plugins() -> list:
    """Atomic checkpoint writes; under SLURM, requeueing is left to submitit alone.

    Lightning would also catch SLURM's signal and requeue the job itself; two mechanisms
    requeueing one job race each other, so Lightning's is switched off.
    """
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train one policy as configured; ``summary.json`` in ``run_dir`` records how it ended.

    The same call on the same directory skips a completed run (unless ``skip_completed`` is
    false, which archives it and starts over) and resumes an unfinished one from its last
    checkpoint, with its data order and random state.
    """
    run_dir = Path(run_dir)
    refuse_if_stopping()  # a worker of a sweep that was told to stop
    check_launch(cfg)
    if not launched_as_rank_zero():
        return _train_other_rank(cfg, run_dir)
    check_writable(run_dir)  # before the lock and summary.json are written there
    with stop_on_signals(), RunLock(run_dir):
        redact_hydra_record(run_dir, typed_overrides(cfg, redact=False))
        config = saved_config(cfg)
        current = identity(config, run_dir)
        if has_run_files(run_dir):
            try:  # a directory never mixes two configs' results: checked before it is skipped or resumed
                check_same_run(run_dir, stored_fingerprint(run_dir), current)
            except RunDirectoryHoldsAnotherRun:
                if cfg.get("skip_completed", True):
                    raise
                log.info("Archived the run of another config to %s; training this one.", archive_previous_run(run_dir))
        if RunSummary.status_of(run_dir) == "completed":
            if cfg.get("skip_completed", True):
                log.info("%s already completed; skipping (skip_completed=false trains it again).", run_dir)
                if started_together():
                    announce_decision(run_dir, train=False)
                return RunSummary.read(run_dir)
            log.info("Archived the completed run to %s; training again.", archive_previous_run(run_dir))
        return _train_locked(cfg, run_dir, config, fingerprint(current))


class RankFailed(RuntimeError):
    """The error that another rank of this run failed with (rank 0 records it in ``summary.json``)."""


def check_launch(cfg: DictConfig) -> None:
    """Refuse a multirun whose jobs Lightning would start more processes for.

    Lightning's launcher re-runs the command line for each extra rank, and the command line of a
    multirun is the whole sweep (or, under submitit, submitit's own entry point).
    """

    if started_together() or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    devices, nodes = OmegaConf.select(cfg, "trainer.devices"), OmegaConf.select(cfg, "trainer.num_nodes") or 1
    several = devices in ("auto", -1, "-1") or (isinstance(devices, int) and devices > 1) or nodes > 1
    if several and OmegaConf.select(cfg, "trainer.strategy") not in (None, "auto", "single_device"):
        raise ConfigError(
            f"trainer.devices={devices} x trainer.num_nodes={nodes} in a multirun (-m): Lightning would start "
            "the extra ranks by re-running the whole sweep. Run each job on its own (without -m), or let SLURM "
            "start the ranks (cluster=local_slurm or your site, hydra.launcher.tasks_per_node=trainer.devices)."
        )


def _train_other_rank(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """A rank > 0: train beside rank 0 in its directory, writing none of the run's files.

    Rank 0 has taken the lock, written the config and the summary, built the caches and chosen
    the checkpoint to resume from (under srun or torchrun this rank waits for it to say so).
    """
    if started_together():
        # Started by srun or torchrun, this rank's Hydra wrote its own record too: redacted as rank 0's is.
        redact_hydra_record(run_dir, typed_overrides(cfg, redact=False))
        if not await_decision(run_dir):
            return RunSummary.read(run_dir) if RunSummary.status_of(run_dir) else {}
    trainer = None
    try:
        module, datamodule = build_task(cfg)
        resume_from, _ = usable_checkpoint(RunFiles(run_dir).checkpoints)
        tracker = ValidationTracker()
        trainer = instantiate(
            cfg.trainer,
            default_root_dir=str(run_dir),
            plugins=trainer_plugins(),
            callbacks=[*build_callbacks(cfg), tracker],
            logger=False,
            use_distributed_sampler=False,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        if tracker.step != trainer.global_step or not tracker.final:  # as rank 0 decides: the same gathered values
            trainer.validate(module, datamodule=datamodule, verbose=False)
        return {}
    except BaseException as error:
        rank = trainer.global_rank if trainer is not None else launched_rank()
        message = error_text(user_facing_cause(error) or error)
        record_failure(run_dir, rank, message)
        if not started_together():
            leave_lightning_launcher(rank, message)
        leave_after_failure(run_dir, RunSummary.status_of)
        raise


def leave_lightning_launcher(rank: int, message: str) -> None:
    """End a failed child of Lightning's launcher at once, with exit code 0, its error left for rank 0.

    Its exit closes its connections, so rank 0's next collective fails at once and rank 0 records
    the error and exits with code 1 (the job's code). A child that exits with an error code
    instead has Lightning SIGKILL rank 0, possibly before rank 0 could record anything; and the
    interpreter's own shutdown may block on the process group, hence ``os._exit``.
    """
    log.error("Rank %d failed: %s (rank 0 records it in summary.json and ends the run).", rank, message)
    logging.shutdown()
    os._exit(0)


def _train_locked(cfg: DictConfig, run_dir: Path, config: dict[str, Any], config_fingerprint: str) -> dict[str, Any]:
    summary = RunSummary(run_dir, describe_run(cfg, config_fingerprint))
    trainer = tracker = None
    announced = not started_together()  # the ranks that srun or torchrun started with this one wait for it
    try:
        clear_failures(run_dir)
        summary.update()
        atomic_write_text(RunFiles(run_dir).config, OmegaConf.to_yaml(OmegaConf.create(config)))
        validate_run_config(cfg)
        module, datamodule = build_task(cfg)  # builds the caches (SFT policy, reference log-probs) for all ranks
        summary.update(loss_function=loss_function_record(getattr(module, "loss", None)))  # for the report

        tracker = ValidationTracker()
        metrics_file = MetricsFileLogger(run_dir)
        resume_from, step = resume_point(run_dir, metrics_file)  # before the loggers: wandb looks for it
        if not announced:
            announce_decision(run_dir, train=True)
            announced = True
        trainer = instantiate(
            cfg.trainer,
            default_root_dir=str(run_dir),
            plugins=trainer_plugins(),
            callbacks=[*build_callbacks(cfg), tracker],
            logger=[metrics_file, *build_loggers(cfg)],
            use_distributed_sampler=False,  # the data modules shard their own (seeded, resumable) order
        )
        metrics_file.trainer = trainer
        with trainer_running():
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
            if tracker.step != trainer.global_step or not tracker.final:
                trainer.validate(module, datamodule=datamodule, verbose=False)
        summary.completed(trainer, tracker, data=getattr(datamodule, "stats", {}))
        log.info("Finished: %s", summary.path)
        return summary.data
    except BaseException as error:
        if not announced:
            announce_decision(run_dir, train=False)
        signum = stop_signal(error)
        if signum is not None:  # stopped from outside: not a failure, and resumable
            try:
                summary.interrupted(signal_name(signum), trainer, tracker)
            except OSError as write_error:
                log.error("Could not record the interruption in %s: %s", summary.path, write_error)
            if isinstance(error, Interrupted):
                raise
            raise Interrupted(signum) from error
        cause = user_facing_cause(error)  # a fixable input error, even when Hydra's instantiate wrapped it
        if cause is None and is_communication_error(error):  # another rank failed first: its error is the one
            peer = peer_failure(run_dir)
            cause = RankFailed(f"rank {peer['rank']}: {peer['error']}") if peer else None
        try:
            summary.failed(cause or error, trainer, tracker)
        except OSError as write_error:  # the error itself is what the user must see, not this one
            log.error("Could not record the failure in %s: %s", summary.path, write_error)
        if cause is not None and cause is not error:
            raise cause from error
        raise
