"""Every validation metric the code logs has a direction in gpo_lab.store.directions' table, checked on real runs."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from gpo_lab.eval import KLCallback, SampleBankCallback, WinRateCallback
from gpo_lab.eval.judges import Judge, RewardJudge
from gpo_lab.store.directions import METRIC_DIRECTIONS, MODES, metric_mode
from gpo_lab.store.records import read_metrics
from tests.helpers import ROOT
from tests.helpers.runs import TINY_STUDY, run_training


class FakeBank:
    """What the sample bank hands its users: two prompts, their samples and scores."""

    prompts = ("about apple :", "about river :")
    policy_texts, reference_texts = ("apple", "river river"), ("the", "river")
    policy_logps, reference_logps = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.5])
    token_kl = torch.tensor([0.1, 0.2])
    policy_lengths = torch.tensor([2.0, 3.0], dtype=torch.float64)
    policy_ids = ((1, 2), (3, 4, 5))
    reference_ids = ((1, 2), (3,))

    def __len__(self) -> int:
        return 2


class LengthJudge(RewardJudge):
    def rewards(self, prompts, responses):
        return torch.tensor([float(len(r)) for r in responses], dtype=torch.float64)


class CoinJudge(Judge):
    def compare(self, prompts, responses_a, responses_b):
        return torch.full((len(prompts),), 0.5, dtype=torch.float64)


def callback_metrics(run_dir) -> set[str]:
    """The names the sample-bank, KL and win-rate callbacks log (with each kind of judge)."""
    bank = SampleBankCallback(num_prompts=2)
    bank._due, bank.bank = True, FakeBank()
    logged = set()
    module = SimpleNamespace(device="cpu", log=lambda name, *args, **kwargs: logged.add(name))
    trainer = SimpleNamespace(callbacks=[bank], default_root_dir=str(run_dir), global_step=0)
    for callback in (bank, KLCallback(), WinRateCallback(LengthJudge()), WinRateCallback(CoinJudge())):
        callback.on_validation_epoch_end(trainer, module)
    return logged


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> dict[str, set[str]]:
    """The ``val/`` names of a smoke, a bandit and a tiny synthetic run (whose held-out pairs carry golden margins:
    ``val/ranking_accuracy``) with those in their summaries' best, and the callbacks'."""
    names, best = set(), set()
    for overrides in (["+experiment=smoke"], ["+experiment=bandit"], TINY_STUDY):
        run_dir = tmp_path_factory.mktemp(overrides[0].split("=")[1])
        summary = run_training([*overrides, "trainer.max_steps=2", "trainer.val_check_interval=2"], run_dir)
        names |= {k for r in read_metrics(run_dir / "metrics.jsonl") for k in r if k.startswith("val/")}
        best |= set(summary["best"])
    return {"runs": names, "best": best, "callbacks": callback_metrics(tmp_path_factory.mktemp("callbacks"))}


@pytest.mark.slow
def test_every_logged_metric_has_a_direction_and_every_entry_is_logged(logged):
    names, declared = logged["runs"] | logged["callbacks"], METRIC_DIRECTIONS
    assert {
        "val/loss",
        "val/logps/chosen",
        "val/off_support_mass",
        "val/kl_token",
        "val/judge_reward",
        "val/response_length_reference_se",
        "val/ranking_accuracy",
    } <= names  # every producer was reached
    undeclared = {n for n in names - declared.keys() if not (n.endswith("_se") and n[: -len("_se")] in declared)}
    assert undeclared == set()
    assert set(declared) - names == set()  # no entry for a metric that nothing logs any more
    assert logged["best"] == {n for n in logged["runs"] if metric_mode(n) is not None}  # those with a direction


def test_directions_say_what_better_means():
    assert metric_mode("val/logps/chosen") == "max" and metric_mode("val/rewards/rejected") == "min"
    assert metric_mode("val/win_rate") == "max" and metric_mode("val/kl_token") == "min"
    for undirected in ("val/rho_std", "val/response_length", "val/judge_reward_reference", "val/win_rate_se"):
        assert metric_mode(undirected) is None


def test_every_direction_is_max_min_or_none():
    assert all(name.startswith("val/") and mode in MODES for name, mode in METRIC_DIRECTIONS.items())


def test_report_and_status_read_directions_without_lightning():
    code = (
        "import sys, gpo_lab.report.collect, gpo_lab.status\n"
        "from gpo_lab.store.records import metric_mode\n"
        "assert metric_mode('val/kl_token') == 'min'\n"
        "assert 'pytorch_lightning' not in sys.modules and 'lightning_fabric' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
