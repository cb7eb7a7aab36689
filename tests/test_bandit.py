"""The tabular bandit: exact quantities against hand computations, the population minimiser of
every GPO loss against its closed form, the partial-support behaviour, and one real run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from gpo_lab.errors import ConfigError
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.report.bandit import CLAIMS_FILE, KL_FIGURE, TRAINING_FIGURE, draw
from gpo_lab.tasks.bandit import BanditModule, build_problem
from gpo_lab.tasks.bandit.problem import DTYPE
from tests.helpers import CONF_DIR
from tests.helpers.runs import run_training

LOSSES = ["logistic", "hinge", "squared", "exponential", "truncated_quadratic", "savage"]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# The minimiser over z of p f(z) + (1 - p) f(-z), worked out by hand from each f (p > 1/2).
POPULATION_MINIMISER = {
    "logistic": logit,
    "savage": logit,
    "exponential": lambda p: logit(p) / 2,
    "squared": lambda p: 2 * p - 1,
    "truncated_quadratic": lambda p: 2 * p - 1,
    "hinge": lambda p: 1.0,
}


def problem_of(**settings):
    return build_problem(OmegaConf.create(settings), seed=0)


def fast_adam(params):
    """Adam with a short second-moment memory: its step does not shrink with the size of past
    gradients, so it closes in on a minimiser quickly (and on hinge's kink, as the step decays)."""
    return torch.optim.Adam(params, lr=0.05, betas=(0.9, 0.9))


def minimise(
    problem,
    loss: GPOLoss,
    beta: torch.Tensor | float,
    steps: int = 600,
    make_optimizer=fast_adam,
    final_lr_ratio: float = 1e-4,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient descent on the exact population loss, from the reference unless ``logits`` is
    given; the step decays geometrically to ``final_lr_ratio`` times its start (1: constant).

    ``beta`` may be a column of several betas: each row of the logits is then a separate policy.
    """
    start = problem.reference_logits if logits is None else logits
    theta = start.repeat(len(beta), 1) if torch.is_tensor(beta) else start.clone()
    theta.requires_grad_(True)
    opt = make_optimizer([theta])
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=final_lr_ratio ** (1 / steps))
    for _ in range(steps):
        opt.zero_grad()
        problem.population_loss(loss, theta, beta).sum().backward()
        opt.step()
        decay.step()
    return theta.detach()


# ---------------------------------------------------------------------- the loss family, exactly
@pytest.mark.parametrize("name", LOSSES)
def test_population_minimiser_of_every_loss(name):
    """Two actions, P(a0 > a1) = p: training to convergence puts beta * rho at the closed-form
    minimiser of p f(z) + (1 - p) f(-z), for every beta."""
    loss = GPOLoss(name)
    betas = torch.tensor([[0.5], [1.0], [2.0]], dtype=DTYPE)
    for p in (0.6, 0.75, 0.9):
        problem = problem_of(num_actions=2, reward=[logit(p), 0.0], mu="full", labels="bradley_terry")
        assert problem.preference.tolist() == pytest.approx([p], abs=1e-12)
        theta = minimise(problem, loss, betas)
        z = (betas * problem.rho(theta)).flatten()
        expected = POPULATION_MINIMISER[name](p)
        assert z.tolist() == pytest.approx([expected] * 3, abs=1e-4), (name, p)


def test_decaying_losses_keep_pushing_finite_minimum_losses_stop():
    """Deterministic labels (p = 1): rho keeps growing for f decaying to 0; it stops for the others."""
    problem = problem_of(num_actions=2, reward=[1.0, 0.0], mu="full", labels="deterministic")

    def adam(params):  # a constant step, as in a run
        return torch.optim.Adam(params, lr=0.05)

    for name in LOSSES:
        loss = GPOLoss(name)
        after_200 = minimise(problem, loss, 1.0, steps=200, make_optimizer=adam, final_lr_ratio=1.0)
        after_800 = minimise(problem, loss, 1.0, steps=600, make_optimizer=adam, final_lr_ratio=1.0, logits=after_200)
        short, long = float(problem.rho(after_200)[0]), float(problem.rho(after_800)[0])
        if name in ("logistic", "exponential", "savage"):
            assert long > short + 0.5, name
        else:
            assert long == pytest.approx(short, abs=1e-3), name
            assert long >= 1 - 1e-3, name  # z = beta rho reaches the edge of the flat minimum, 1
    squared = problem.rho(minimise(problem, GPOLoss("squared"), 1.0))
    assert float(squared[0]) == pytest.approx(1.0, abs=1e-4)  # the unique minimiser 2p - 1 = 1


# ---------------------------------------------------------------------- exact quantities by hand
def three_actions(mu: str = "full", labels: str = "bradley_terry", reward=(1.0, 0.0, -1.0)):
    return problem_of(num_actions=3, reward=list(reward), mu=mu, support=[0, 1], labels=labels)


HALF_QUARTER_QUARTER = torch.log(torch.tensor([0.5, 0.25, 0.25], dtype=DTYPE))  # pi; pi_ref is uniform


def test_exact_quantities_on_three_actions():
    problem = three_actions("full")
    logits = HALF_QUARTER_QUARTER
    ln2 = math.log(2)
    assert float(problem.kl(logits)) == pytest.approx(0.5 * math.log(9 / 8), abs=1e-14)
    assert float(problem.expected_reward(logits)) == pytest.approx(0.25, abs=1e-14)
    assert float(problem.win_rate(logits)) == pytest.approx(7 / 12, abs=1e-14)
    # rho over the pairs (0,1), (0,2), (1,2): log 2, log 2, 0.
    assert problem.rho(logits).tolist() == pytest.approx([ln2, ln2, 0.0], abs=1e-14)
    assert float(problem.offline_regularizer(logits)) == pytest.approx(ln2**2 / 3, abs=1e-14)
    assert float(problem.off_support_mass(logits)) == 0.0
    s1, s2 = sigmoid(1), sigmoid(2)
    assert float(problem.expected_margin(logits)) == pytest.approx(((2 * s1 - 1) + (2 * s2 - 1)) * ln2 / 3, abs=1e-14)
    # Logistic at beta = 1: f(log 2) = log 1.5 and f(-log 2) = log 3; the pair (1, 2) gives f(0) = log 2.
    expected = (s1 * math.log(1.5) + (1 - s1) * math.log(3) + s2 * math.log(1.5) + (1 - s2) * math.log(3) + ln2) / 3
    assert float(problem.population_loss(GPOLoss("logistic"), logits, 1.0)) == pytest.approx(expected, abs=1e-14)


def test_partial_support_quantities_on_three_actions():
    problem = three_actions("partial")  # mu only ever shows the pair (0, 1)
    assert problem.support.tolist() == [True, True, False]
    logits = HALF_QUARTER_QUARTER
    assert float(problem.offline_regularizer(logits)) == pytest.approx(math.log(2) ** 2 / 2, abs=1e-14)
    assert float(problem.off_support_mass(logits)) == pytest.approx(0.25, abs=1e-14)


def test_labels_and_start_of_training():
    deterministic = three_actions(labels="deterministic", reward=(1.0, 1.0, 0.0))
    assert deterministic.preference.tolist() == [0.5, 1.0, 1.0]  # a tie is a coin flip
    tempered = problem_of(num_actions=2, reward=[1.0, 0.0], mu="full", temperature=2.0)
    assert float(tempered.preference[0]) == pytest.approx(sigmoid(0.5), abs=1e-15)
    problem = three_actions()
    reference = problem.reference_logits
    for name in LOSSES:  # at pi = pi_ref, rho = 0, so the loss is exactly f(0)
        loss = GPOLoss(name)
        assert float(problem.population_loss(loss, reference, 0.7)) == pytest.approx(loss.derivatives.f0, abs=1e-15)
    assert float(problem.kl(reference)) == 0.0
    # pi = pi_ref wins exactly half the time against itself, ties included.
    assert float(problem.win_rate(reference)) == pytest.approx(0.5, abs=1e-15)
    assert float(deterministic.win_rate(deterministic.reference_logits)) == pytest.approx(0.5, abs=1e-15)


def test_population_table_weights_reproduce_the_population_loss():
    """What the Lightning module trains on (the labelled table) is exactly the population loss."""
    problem = three_actions("full")
    logits = torch.tensor([0.3, -1.2, 0.7], dtype=DTYPE)
    for name in LOSSES:
        module = BanditModule(problem, GPOLoss(name), beta=0.8, optimizer=torch.optim.SGD)
        with torch.no_grad():
            module.logits.copy_(logits)
            table_loss = module.batch_loss(problem.labelled_population())
        assert float(table_loss) == pytest.approx(float(problem.population_loss(GPOLoss(name), logits, 0.8)), abs=1e-14)


def test_sampled_objective_converges_to_the_empirical_minimiser():
    """On a finite dataset the logistic loss puts beta * rho at logit of the empirical win rate."""
    problem = problem_of(num_actions=2, reward=[logit(0.7), 0.0], mu="full")
    data = problem.sample_pairs(400, torch.Generator().manual_seed(3))
    wins = float((data["chosen"] == 0).to(DTYPE).mean())
    assert abs(wins - 0.7) < 4 * math.sqrt(0.21 / 400)
    module = BanditModule(problem, GPOLoss("logistic"), beta=0.5, optimizer=fast_adam)
    opt = fast_adam(module.parameters())
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=1e-4 ** (1 / 600))
    for _ in range(600):
        opt.zero_grad()
        module.batch_loss(data).backward()
        opt.step()
        decay.step()
    assert 0.5 * float(problem.rho(module.logits.detach())[0]) == pytest.approx(logit(wins), abs=1e-4)


# ---------------------------------------------------------------------- what R_mu does not see
def experiment_problem(**changes):
    """The problem of conf/experiment/bandit.yaml: 10 actions, mu on actions {0, 1, 2}."""
    settings = OmegaConf.load(CONF_DIR / "experiment" / "bandit.yaml").bandit
    return build_problem(OmegaConf.merge(settings, changes), seed=0)


def test_loss_and_r_mu_are_blind_to_a_shift_of_the_support():
    """Adding c to every on-support logit changes no rho, hence no loss and no R_mu, but moves
    mass on or off the support and so changes KL."""
    problem = experiment_problem()
    logits = problem.reference_logits + torch.tensor([-1.0, 0.5, 1.0] + [0.0] * 7, dtype=DTYPE)
    shifted = logits + 2.0 * problem.support.to(DTYPE)
    loss = GPOLoss("logistic")
    assert float(problem.population_loss(loss, shifted, 0.5)) == pytest.approx(
        float(problem.population_loss(loss, logits, 0.5)), abs=1e-13
    )
    assert float(problem.offline_regularizer(shifted)) == pytest.approx(
        float(problem.offline_regularizer(logits)), abs=1e-12
    )
    assert float(problem.off_support_mass(shifted)) < float(problem.off_support_mass(logits)) - 0.1
    assert abs(float(problem.kl(shifted)) - float(problem.kl(logits))) > 0.1


def test_partial_support_r_mu_bounded_while_kl_and_off_support_mass_grow():
    """The experiment's partial-support mu, Bradley-Terry labels, logistic, beta = 0.5.

    R_mu converges to its closed form E_mu[((r_a - r_b) / beta)^2] / 2 and stays there; KL and
    pi's mass on the 7 actions mu never shows grow, although no term of the loss involves those
    actions. Where that mass ends is set by the optimizer, not by the loss: SGD and Adam reach
    the same loss and R_mu with different KL and off-support mass.
    """
    problem = experiment_problem()
    loss, beta = GPOLoss("logistic"), 0.5
    gaps = problem.reward[problem.pairs[:, 0]] - problem.reward[problem.pairs[:, 1]]
    closed_form = float((problem.pair_weights * (gaps / beta) ** 2).sum() / 2)
    start = problem.reference_logits
    ends = {}
    optimizers = {
        "adam": lambda params: torch.optim.Adam(params, lr=0.1),  # as the experiment trains
        "sgd": lambda params: torch.optim.SGD(params, lr=1.0),
    }
    for optimizer, make in optimizers.items():
        middle = minimise(problem, loss, beta, steps=300, make_optimizer=make, final_lr_ratio=1.0)
        end = minimise(problem, loss, beta, steps=600, make_optimizer=make, final_lr_ratio=1.0, logits=middle)
        for theta in (middle, end):
            assert float(problem.offline_regularizer(theta)) == pytest.approx(closed_form, rel=1e-4)
        assert float(problem.kl(end)) > float(problem.kl(start)) + 0.8
        assert float(problem.off_support_mass(end)) > float(problem.off_support_mass(start)) + 0.08
        ends[optimizer] = end
    adam, sgd = ends["adam"], ends["sgd"]
    assert float(problem.population_loss(loss, adam, beta)) == pytest.approx(
        float(problem.population_loss(loss, sgd, beta)), abs=1e-8
    )
    assert abs(float(problem.off_support_mass(adam)) - float(problem.off_support_mass(sgd))) > 0.05


# ---------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize(
    "settings, words",
    [
        (dict(num_actions=3, mu="partial"), "bandit.support"),
        (dict(num_actions=3, mu="partial", support=[0, 7]), "actions are 0..2"),
        (dict(num_actions=3, mu="pairs"), "bandit.pairs"),
        (dict(num_actions=3, mu="some"), "bandit.mu"),
        (dict(num_actions=3, labels="plackett"), "bandit.labels"),
        (dict(num_actions=3, reward=[1.0, 2.0]), "bandit.reward"),
        (dict(num_actions=1), "bandit.num_actions"),
    ],
)
def test_configuration_errors_name_the_key(settings, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        problem_of(**settings)


def test_explicit_pairs_are_normalized():
    problem = problem_of(num_actions=4, mu="pairs", pairs=[[0, 1, 1.0], [2, 1, 3.0]])
    assert problem.pair_weights.tolist() == [0.25, 0.75]
    assert problem.support.tolist() == [True, True, True, False]


# ---------------------------------------------------------------------- the real run path
@pytest.mark.slow
def test_bandit_experiment_end_to_end(tmp_path):
    """``+experiment=bandit`` through the same path as the command line: the summary holds the
    exact val metrics, and they equal those of the same AdamW steps taken by hand."""
    steps = 40
    run_dir = tmp_path / "sweep" / "loss=squared"
    torch.set_num_threads(2)
    summary = run_training(
        ["+experiment=bandit", "loss=squared", f"trainer.max_steps={steps}", "trainer.val_check_interval=20"], run_dir
    )
    assert summary["status"] == "completed" and summary["steps"] == steps
    assert summary["data"]["reference_logps"].startswith("not used: the bandit's reference is an exact table")
    assert torch.get_num_threads() == 2  # the module trains on one thread and gives the setting back
    names = [
        "val/kl",
        "val/offline_reg",
        "val/reward",
        "val/win_rate",
        "val/off_support_mass",
        "val/loss",
        "val/rho_mean",
    ]
    assert set(names) <= set(summary["final"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(train_losses) == steps
    assert train_losses[0] == pytest.approx(1.0, abs=1e-15)  # rho = 0 at the start: squared f(0) = 1
    assert [r["step"] for r in records if "val/kl" in r] == [20, 40]

    problem = experiment_problem()
    theta = problem.reference_logits.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([theta], lr=0.1, betas=(0.9, 0.999), weight_decay=0.0)
    loss = GPOLoss("squared")
    for _ in range(steps):
        optimizer.zero_grad()
        problem.population_loss(loss, theta, 0.5).backward()
        optimizer.step()
    exact = problem.metrics(theta.detach(), loss, 0.5)
    for name in names:
        assert summary["final"][name] == pytest.approx(float(exact[name.removeprefix("val/")]), abs=1e-9), name

    written = draw(tmp_path / "sweep")
    assert [p.name for p in written] == [TRAINING_FIGURE, KL_FIGURE, CLAIMS_FILE]
    assert all(p.stat().st_size > 10_000 for p in written[:2])
    assert "only 1 β with a value: no fit" in written[2].read_text()
