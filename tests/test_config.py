"""The config tree composes for every option of every group, and bad input fails clearly."""

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gpo_lab.losses.catalog import FIELD_LOSSES
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.losses.named_losses import needs_nonconvex_switch
from gpo_lab.run.train import describe_run
from tests.helpers import CONF_DIR, ROOT
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
    """A group's yaml files and the nodes gpo_lab stores in Hydra's ConfigStore (the loss aliases)."""
    stored = ConfigStore.instance().repo.get(group, {})
    return sorted({p.stem for p in (CONF_DIR / group).glob("*.yaml")} | {name.removesuffix(".yaml") for name in stored})


def test_the_loss_aliases_are_options():
    assert {"dpo", "ipo", "slic"} <= set(options("loss"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}", *REQUIRED.get((group, option), [])], run_dir=tmp_path)
    assert cfg[group] is not None
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_config([f"+experiment={experiment}"], run_dir=tmp_path)
    assert cfg.name == experiment


@pytest.mark.parametrize("option", [o for o in options("loss") if o not in FIELD_LOSSES])
def test_every_loss_option_instantiates(option):
    cfg = compose_config([f"loss={option}", *REQUIRED.get(("loss", option), [])])
    loss = instantiate(cfg.loss)
    assert loss.derivatives.d1 < 0


@pytest.mark.parametrize("option", sorted(FIELD_LOSSES))
def test_every_field_loss_option_instantiates(option):
    """The rest of the field: built from its yaml; a non-convex f only with loss.allow_nonconvex=true."""
    extra = ["loss.allow_nonconvex=true"] if needs_nonconvex_switch(option) else []
    loss = instantiate(compose_config([f"loss={option}", *extra]).loss)
    assert loss.name == option
    assert (loss.derivatives is not None) == loss.on_rho  # f''(0) exactly when it is a function of beta * rho


@pytest.mark.parametrize("alias,table_name", [("dpo", "logistic"), ("ipo", "squared"), ("slic", "hinge")])
def test_alias_options_build_their_table_loss(alias, table_name, tmp_path):
    """An alias trains the table's loss, and its run is recorded (summary.json, report) under the table name."""
    cfg = compose_config([f"loss={alias}"], run_dir=tmp_path)
    assert describe_run(cfg)["loss"] == table_name
    aliased, named = instantiate(cfg.loss), instantiate(compose_config([f"loss={table_name}"]).loss)
    assert aliased.name == named.name == table_name
    rho = torch.linspace(-4, 4, 33, dtype=torch.float64)
    for beta in (0.1, 1.0, 3.0):
        assert torch.equal(aliased.per_example(rho, beta), named.per_example(rho, beta))
    other = instantiate(compose_config(["loss=exponential"]).loss)
    assert not torch.equal(aliased.per_example(rho, 1.0), other.per_example(rho, 1.0))


def test_default_config_builds_every_object(tmp_path):
    """Each object of a run is built from the config (a ``_target_`` a user can point at their own class)."""
    cfg = compose_config([], run_dir=tmp_path)
    tokenizer = instantiate(cfg.model.tokenizer)
    assert tokenizer("1+1=").input_ids
    policy = instantiate(cfg.model.policy, tokenizer=tokenizer)
    assert isinstance(policy, torch.nn.Module) and any(p.requires_grad for p in policy.parameters())
    reference = instantiate(cfg.reference, policy=policy, tokenizer=tokenizer)
    assert isinstance(reference, torch.nn.Module) and reference is not policy
    assert not any(p.requires_grad for p in reference.parameters())
    assert isinstance(instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed), pl.LightningDataModule)
    assert isinstance(instantiate(cfg.loss), GPOLoss)
    assert isinstance(instantiate(cfg.optim.optimizer)(params=policy.parameters()), torch.optim.Optimizer)
    assert isinstance(instantiate(cfg.trainer), pl.Trainer)
    callbacks = [instantiate(node) for node in cfg.callbacks.values()]
    assert callbacks and all(isinstance(callback, pl.Callback) for callback in callbacks)


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
    result = run_cli(
        [
            "+experiment=smoke",
            "data=hf",
            f"data.dataset.path={data}",
            "data.dataset.split=train",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "lacks the mapped columns" in result.stderr and "'question'" in result.stderr


@pytest.mark.slow
def test_non_convex_user_loss_is_refused_at_start_up(tmp_path):
    result = run_cli(
        ["+experiment=smoke", "loss=custom", "loss.fn=tests.test_losses.not_convex", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "is not convex" in result.stderr
