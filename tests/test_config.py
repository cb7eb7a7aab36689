"""The config tree composes for every option of every group, and bad input fails clearly."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.helpers import CONF_DIR
from tests.helpers.cli import run_cli
from tests.helpers.runs import compose_config

GROUPS = ["model", "data", "loss", "reference", "optim", "trainer", "logger", "callbacks"]
# Options whose required values (???) name a user's own model, data or function.
REQUIRED = {
    ("model", "hf"): ["model.name=some/model"],
    ("data", "hf"): ["data.dataset.path=some/dataset"],
    ("loss", "custom"): ["loss.fn=tests.test_losses.scaled_logistic"],
    ("reference", "model"): ["reference.model.name=some/model"],
    ("model", "lora"): ["model.name=some/model"],
    ("model", "t5"): ["model.name=some/model"],
    ("data", "instruction"): ["data.dataset.path=pairs.json"],
    ("data", "sharegpt"): ["data.dataset.path=pairs.json"],
}


def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}", *REQUIRED.get((group, option), [])], run_dir=tmp_path)
    assert cfg[group] is not None
    from omegaconf import OmegaConf
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_config([f"+experiment={experiment}"], run_dir=tmp_path)
    assert cfg.name == experiment


@pytest.mark.parametrize("option", options("loss"))
def test_every_loss_option_instantiates(option):
    cfg = compose_config([f"loss={option}", *REQUIRED.get(("loss", option), [])])
    loss = instantiate(cfg.loss)
    assert loss.derivatives.d1 < 0


def test_aliases_map_to_the_table_names():
    assert {alias: compose_config([f"loss={alias}"]).loss.fn for alias in ("dpo", "ipo", "slic")} == {
        "dpo": "logistic", "ipo": "squared", "slic": "hinge"}


def test_every_object_is_built_from_a_target():
    cfg = compose_config([])
    for node in (cfg.model.tokenizer, cfg.model.policy, cfg.data, cfg.loss, cfg.reference, cfg.optim.optimizer,
                 cfg.trainer, *cfg.callbacks.values()):
        assert "_target_" in node


@pytest.mark.slow
def test_unknown_loss_lists_the_valid_ones(tmp_path):
    result = run_cli(["+experiment=smoke", "loss=logistc", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode != 0
    for name in ("logistic", "hinge", "squared", "exponential", "truncated_quadratic", "savage", "dpo", "ipo", "slic"):
        assert name in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("beta", ["0", "-1"])
def test_non_positive_beta_is_refused(beta, tmp_path):
    result = run_cli(["+experiment=smoke", f"beta={beta}", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "beta must be a finite number > 0" in result.stderr
    assert '"status": "failed"' in (tmp_path / "summary.json").read_text()


@pytest.mark.slow
def test_dataset_without_the_mapped_columns(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"question": "q", "good": "a", "bad": "b"}\n' * 4)
    result = run_cli(["+experiment=smoke", "data=hf", f"data.dataset.path={data}", "data.dataset.split=train",
                      f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "lacks the mapped columns" in result.stderr and "'question'" in result.stderr


@pytest.mark.slow
def test_non_convex_user_loss_is_refused_at_start_up(tmp_path):
    result = run_cli(["+experiment=smoke", "loss=custom", "loss.fn=tests.test_losses.not_convex",
                      f"hydra.run.dir={tmp_path}"], cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2
    assert "is not convex" in result.stderr
