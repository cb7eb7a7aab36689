"""The training path end to end: first loss equals f(0), a step raises rho, outputs are complete."""

import json
import math
from functools import partial

import pytest
import torch

from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.models.reference import frozen_copy
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import byte_tokenizer
from gpo_lab.scoring.batches import PairLogps, PlainPairs
from gpo_lab.store.records import read_metrics
from gpo_lab.training.gpo_module import GPOModule
from gpo_lab.training.nonfinite import NonFiniteError, check_finite_gradients
from gpo_lab.training.pair_metrics import preference_metrics
from tests.helpers.cli import run_cli
from tests.helpers.runs import run_training

F_AT_ZERO = {
    "logistic": math.log(2),
    "hinge": 1.0,
    "squared": 1.0,
    "exponential": 1.0,
    "truncated_quadratic": 1.0,
    "savage": 0.25,
}


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(F_AT_ZERO))
def test_first_logged_loss_is_f_of_zero(loss, tmp_path):
    summary = run_training(
        ["+experiment=smoke", f"loss={loss}", "trainer.max_steps=2", "trainer.val_check_interval=2"], tmp_path
    )
    first = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert first["step"] == 0
    assert first["train/loss"] == pytest.approx(F_AT_ZERO[loss], abs=1e-6)
    assert first["train/rho_mean"] == 0.0
    assert summary["status"] == "completed" and summary["loss"] == loss


def rho_of(module, batch):
    logps = module.batch_logprobs(batch)
    rho = (logps.policy_chosen - logps.reference_chosen) - (logps.policy_rejected - logps.reference_rejected)
    assert torch.equal(logps.rho, rho)
    return rho


@pytest.mark.parametrize("loss", sorted(F_AT_ZERO))
def test_one_step_moves_rho_up(loss):
    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    policy = tiny_causal_lm(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    module = GPOModule(
        policy, frozen_copy(policy), GPOLoss(loss), beta=0.5, optimizer=partial(torch.optim.SGD, lr=1e-2)
    )
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    rows = [(encode("2+2="), encode("4")), (encode("3+1="), encode("4"))]
    rows += [(encode("2+2="), encode("five")), (encode("3+1="), encode("three"))]
    batch = PlainPairs.from_rows(rows, tokenizer.pad_token_id)
    assert torch.all(rho_of(module, batch) == 0)
    optimizer = module.configure_optimizers()["optimizer"]
    module.per_example_loss(module.batch_logprobs(batch)).mean().backward()
    optimizer.step()
    with torch.no_grad():
        assert torch.all(rho_of(module, batch) > 0)


def test_pair_logps_and_their_metrics_by_hand():
    logps = PairLogps.from_scores(torch.tensor([-1.0, -2.0, -4.0, -3.0]), torch.tensor([-2.0, -2.0, -3.0, -3.0]))
    assert logps.policy_chosen.tolist() == [-1.0, -2.0] and logps.reference_rejected.tolist() == [-3.0, -3.0]
    assert logps.chosen_log_ratio.tolist() == [1.0, 0.0] and logps.rejected_log_ratio.tolist() == [-1.0, 0.0]
    assert logps.rho.tolist() == [2.0, 0.0]
    joined = PairLogps.cat([logps, logps.detach()])
    assert joined.rho.tolist() == [2.0, 0.0, 2.0, 0.0] and joined.policy_rejected.tolist() == [-4.0, -3.0] * 2
    metrics = preference_metrics(joined, torch.tensor([1.0, 2.0, 3.0, 6.0]), beta=0.5)
    expected = {
        "loss": 3.0,
        "rho_mean": 1.0,
        "rho_std": 1.0,
        "offline_reg": 1.0,
        "offline_reg_se": 2 / math.sqrt(3) / 2,
        "rewards/chosen": 0.25,
        "rewards/rejected": -0.25,
        "rewards/margins": 0.5,
        "rewards/accuracies": 0.5,
        "logps/chosen": -1.5,
        "logps/rejected": -3.5,
    }
    assert {k: pytest.approx(v) for k, v in expected.items()} == {k: v.item() for k, v in metrics.items()}


@pytest.mark.slow
def test_reference_is_frozen_and_left_out_of_checkpoints(tmp_path):
    run_training(["+experiment=smoke", "trainer.max_steps=3", "trainer.val_check_interval=3"], tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3
    assert checkpoint["state_dict"] and not any(k.startswith("reference.") for k in checkpoint["state_dict"])


@pytest.mark.slow
def test_summary_schema(tmp_path):
    summary = run_training(["+experiment=smoke", "loss=squared", "beta=0.5", "optim.lr=0.002"], tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert summary["status"] == "completed"
    assert (summary["loss"], summary["beta"], summary["lr"], summary["seed"]) == ("squared", 0.5, 0.002, 0)
    assert summary["steps"] == 10 and summary["wall_time_s"] > 0
    for key in ("val/loss", "val/rho_mean", "val/rewards/accuracies", "val/offline_reg", "val/offline_reg_se"):
        assert key in summary["final"]
    best = summary["best"]["val/loss"]
    assert best["mode"] == "min" and best["step"] in (5, 10)
    losses = [r["val/loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if "val/loss" in r]
    assert best["value"] == pytest.approx(min(losses))
    assert summary["final"]["val/loss"] == pytest.approx(losses[-1])
    assert (tmp_path / "config.yaml").is_file()
    logged = read_metrics(tmp_path / "metrics.jsonl")
    train_keys = {
        "train/loss",
        "train/rho_mean",
        "train/rho_std",
        "train/rewards/chosen",
        "train/rewards/rejected",
        "train/rewards/margins",
        "train/rewards/accuracies",
        "train/logps/chosen",
        "train/logps/rejected",
        "train/grad_norm",
        "train/lr",
    }
    assert train_keys <= set(logged[0])
    assert [r["step"] for r in logged if "train/loss" in r] == list(range(10))
    assert [r["step"] for r in logged if "val/loss" in r] == [5, 10]


@pytest.mark.slow
def test_completed_run_is_skipped_on_rerun(tmp_path):
    first = run_training(["+experiment=smoke", "trainer.max_steps=2", "trainer.val_check_interval=2"], tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text()
    again = run_training(["+experiment=smoke", "trainer.max_steps=2", "trainer.val_check_interval=2"], tmp_path)
    assert again == first and (tmp_path / "metrics.jsonl").read_text() == lines


@pytest.mark.slow
def test_warmup_then_constant_learning_rate(tmp_path):
    run_training(["+experiment=smoke", "optim.warmup_steps=4", "optim.lr=0.001"], tmp_path)
    lrs = [r["train/lr"] for r in read_metrics(tmp_path / "metrics.jsonl") if "train/lr" in r]
    assert lrs == pytest.approx([0.00025, 0.0005, 0.00075, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001])


@pytest.mark.slow
def test_adafactor(tmp_path):
    summary = run_training(["+experiment=smoke", "optim=adafactor", "optim.lr=0.001"], tmp_path)
    assert summary["status"] == "completed" and summary["final"]["val/rho_mean"] > 0


@pytest.mark.slow
def test_cli_multirun_gives_four_complete_runs(tmp_path):
    result = run_cli(
        ["-m", "+experiment=smoke", "loss=logistic,hinge", "beta=0.1,1", f"hydra.sweep.dir={tmp_path}"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert [p.parent.name for p in summaries] == [
        "beta=0.1,loss=hinge",
        "beta=0.1,loss=logistic",
        "beta=1,loss=hinge",
        "beta=1,loss=logistic",
    ]
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["status"] == "completed" and summary["steps"] == 10 and "val/loss" in summary["final"]
        assert (path.parent / "metrics.jsonl").is_file() and (path.parent / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_steps_between_logged_ones_skip_their_metrics_and_change_nothing(tmp_path):
    """With trainer.log_every_n_steps=3 the logged steps carry the values they have when every step is logged."""
    base = ["+experiment=smoke", "trainer.max_steps=7", "trainer.val_check_interval=7", "callbacks.progress=null"]
    run_training(base, tmp_path / "every")
    run_training([*base, "trainer.log_every_n_steps=3"], tmp_path / "third")
    every = read_metrics(tmp_path / "every" / "metrics.jsonl")
    third = read_metrics(tmp_path / "third" / "metrics.jsonl")
    train_every = {r["step"]: r for r in every if "train/loss" in r}
    train_third = [r for r in third if "train/loss" in r]
    assert sorted(train_every) == list(range(7)) and [r["step"] for r in train_third] == [2, 5]
    assert all(r == train_every[r["step"]] for r in train_third)
    assert [r for r in third if "val/loss" in r] == [r for r in every if "val/loss" in r]


def test_gradient_check_gives_the_global_norm_and_names_a_non_finite_parameter():
    a, b, frozen = (torch.nn.Parameter(torch.zeros(n)) for n in (2, 3, 1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0, 12.0])
    named = [("a", a), ("b", b), ("frozen", frozen)]  # frozen: no gradient
    assert check_finite_gradients(0, named).item() == pytest.approx(13.0)  # sqrt(9 + 16 + 144)
    b.grad[1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 7 in 1 parameters, e\.g\. b\."):
        check_finite_gradients(7, named)
    assert check_finite_gradients(0, [("frozen", frozen)]).item() == 0.0
