"""The run-file mechanisms: atomic writes (with the team's permissions), the locked content cache,
the logger step convention and the best/last tracker that the run and the report share."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

from gpo_lab.models.reference_cache import ReferenceLogpCache
from gpo_lab.report.collect import _from_records
from gpo_lab.run.checkpoints import AtomicCheckpointIO
from gpo_lab.run.logger_steps import UpdateStepLogging
from gpo_lab.run.metrics_file import MetricsFileLogger
from gpo_lab.run.summary import ValidationTracker
from gpo_lab.run.wandb_logging import WandbLogger
from gpo_lab.store.atomic import atomic_path, atomic_write_text
from gpo_lab.store.best_and_last import BestAndLast
from gpo_lab.store.cache import ContentCache, spec_key
from gpo_lab.store.records import read_metrics, write_json
from tests.helpers.runs import run_training


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


# ----------------------------------------------------------------------------------- atomic writes
def build_entry(directory: Path) -> None:
    """Files as the SFT stage writes them: by a plain write, and by safetensors (which makes its own private file)."""
    (directory / "v.txt").write_text("1")
    save_file({"x": torch.zeros(1)}, str(directory / "w.safetensors"))


def test_every_run_file_gets_the_permissions_of_a_plain_open(tmp_path, umask):
    with open(tmp_path / "plain", "w"):
        pass
    (tmp_path / "plain_dir").mkdir()
    file_mode, dir_mode = mode_of(tmp_path / "plain"), mode_of(tmp_path / "plain_dir")
    assert file_mode == 0o666 & ~umask and dir_mode == 0o777 & ~umask

    atomic_write_text(tmp_path / "text.txt", "x")
    write_json(tmp_path / "summary.json", {"status": "running"})
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(2)}, tmp_path / "checkpoints" / "last.ckpt")
    WandbLogger._run_id(tmp_path)  # a fresh run id, read by the resumed job
    entry, _ = ContentCache(tmp_path / "cache").get_or_build("thing", {"a": 1}, build_entry)
    cache = ReferenceLogpCache(tmp_path / "reference")
    spec = {"num_pairs": 1}
    cache.get_or_compute(spec, lambda: torch.zeros(1, 2))
    files = [
        tmp_path / "text.txt",
        tmp_path / "summary.json",
        tmp_path / "checkpoints" / "last.ckpt",
        tmp_path / "wandb" / "run_id",
        entry / "v.txt",
        entry / "w.safetensors",
        entry / "spec.json",
        cache.path(spec_key(spec)),
    ]
    assert {str(f.relative_to(tmp_path)): mode_of(f) for f in files} == {
        str(f.relative_to(tmp_path)): file_mode for f in files
    }
    assert mode_of(entry) == mode_of(cache.path(spec_key(spec)).parent) == dir_mode


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "entry", directory=True) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def _killed_mid_write(target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    child = multiprocessing.get_context("fork").Process(target=_killed_mid_write, args=(target,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    assert target.read_text() == "old"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".summary.json.") and leftovers[0].endswith(".tmp")


# ----------------------------------------------------------------------------------- the content cache
def test_one_key_for_every_cache_and_entries_are_checked_against_their_spec(tmp_path):
    spec = {"stage": "sft", "sizes": (1, 2), "path": tmp_path}
    assert spec_key(spec) == spec_key({"path": str(tmp_path), "sizes": [1, 2], "stage": "sft"})
    assert len(spec_key(spec)) == 16 and spec_key(spec) != spec_key({**spec, "stage": "pairs"})
    cache = ContentCache(tmp_path / "cache")
    entry, built = cache.get_or_build("sft", spec, lambda d: None)
    assert built and cache.find("sft", spec) == entry
    assert json.loads((entry / "spec.json").read_text())["stage"] == "sft"
    assert ReferenceLogpCache(tmp_path / "cache").store.entry("sft", spec_key(spec)) == entry  # one layout
    (entry / "spec.json").write_text(json.dumps({"stage": "edited"}))
    assert cache.find("sft", spec) is None  # an edited spec is damage: moved aside and built again
    assert cache.get_or_build("sft", spec, lambda d: None) == (entry, True)
    assert len(list(entry.parent.glob(f"{entry.name}.damaged-*"))) == 1


def test_a_stale_entry_without_its_spec_is_rebuilt(tmp_path):
    cache = ContentCache(tmp_path)
    stale = cache.entry("pairs", spec_key({"a": 1}))
    stale.mkdir()
    (stale / "pairs.json").write_text("half")
    entry, built = cache.get_or_build("pairs", {"a": 1}, lambda d: (d / "pairs.json").write_text("whole"))
    assert built and entry == stale and (entry / "pairs.json").read_text() == "whole"


# ----------------------------------------------------------------------------------- logger steps
class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        loss = (self.w - batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", (self.w - batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(16, 1)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)


def test_loggers_date_validation_by_the_updates_applied_without_being_told_the_trainer(tmp_path):
    logger = MetricsFileLogger(tmp_path)
    trainer = pl.Trainer(
        max_steps=4,
        val_check_interval=2,
        logger=[logger],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(Tiny())
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "val/loss" in r] == [2, 4]  # Lightning itself says 1 and 3
    assert [r["step"] for r in records if "train/loss" in r] == [0, 1, 2, 3]
    assert issubclass(WandbLogger, UpdateStepLogging)  # the same piece; test_loggers checks its steps


# ----------------------------------------------------------------------------------- best and last
def test_best_and_last_by_hand():
    values = BestAndLast().replay(
        [
            {"step": 0, "train/loss": 9.0},
            {"step": 2, "val/win_rate": 0.6, "val/win_rate_se": 0.1, "val/loss": 0.5, "val/rho_std": 1.0},
            {"step": 4, "val/win_rate": 0.7, "val/loss": 0.5, "val/rho_std": 2.0, "val/kl_token": None},
            {"step": 6, "val/win_rate": 0.7, "val/win_rate_se": 0.3, "val/loss": 0.4},
        ]
    )
    assert values.final == {"val/win_rate": 0.7, "val/win_rate_se": 0.3, "val/loss": 0.4, "val/rho_std": 2.0}
    assert values.best == {
        "val/win_rate": {"value": 0.7, "step": 4, "mode": "max"},  # a tie keeps the first
        "val/loss": {"value": 0.4, "step": 6, "mode": "min"},
    }  # rho_std: no better direction
    values.update(8, {"val/win_rate": 0.9, "val/win_rate_se": 0.05})
    assert values.best["val/win_rate"] == {"value": 0.9, "step": 8, "mode": "max", "se": 0.05}


def test_the_tracker_keeps_no_best_for_an_undeclared_metric_and_says_so_once(caplog):
    tracker = ValidationTracker()
    for step, value in ((2, 0.5), (4, 0.4)):
        trainer = SimpleNamespace(
            sanity_checking=False,
            global_step=step,
            callback_metrics={
                "val/loss": torch.tensor(value),
                "val/custom": torch.tensor(1.0),
                "val/custom_se": torch.tensor(0.1),
                "train/loss": torch.tensor(9.0),
            },
        )
        tracker.on_validation_end(trainer, None)
    assert tracker.best == {"val/loss": {"value": pytest.approx(0.4), "step": 4, "mode": "min"}}
    assert set(tracker.final) == {"val/loss", "val/custom", "val/custom_se"}
    assert [r.getMessage().split()[0] for r in caplog.records if r.levelname == "WARNING"] == ["val/custom"]
    resumed = ValidationTracker()
    resumed.load_state_dict(tracker.state_dict())
    assert (resumed.final, resumed.best, resumed.step) == (tracker.final, tracker.best, 4)


@pytest.mark.slow
def test_the_report_reads_a_running_job_as_the_run_summarises_it(tmp_path):
    summary = run_training(["+experiment=smoke", "trainer.max_steps=4", "trainer.val_check_interval=2"], tmp_path)
    final, best = _from_records(read_metrics(tmp_path / "metrics.jsonl"))
    assert summary["best"]["val/loss"]["step"] in (2, 4) and "val/rho_std" not in summary["best"]
    assert (final, best) == (summary["final"], summary["best"])
