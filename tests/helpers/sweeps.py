"""Sweep directories written by hand, in the documented schema of summary.json and metrics.jsonl.

Tests of the report and the notebooks read these instead of training: every number in them is
chosen here, so the expected tables can be worked out by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from gpo_lab.store.records import metric_mode

# The GPO members' f and (f(0), f'(0), f''(0)), written out by hand: a hand-written job carries the
# loss_function record of summary.json that a run writes (f on z = -3, -2.9, ..., 3).
MEMBER_FUNCTIONS = {
    "logistic": (lambda z: math.log1p(math.exp(-z)), (math.log(2), -0.5, 0.25)),
    "hinge": (lambda z: max(0.0, 1 - z), (1.0, -1.0, 0.0)),
    "squared": (lambda z: (z - 1) ** 2, (1.0, -2.0, 2.0)),
    "exponential": (lambda z: math.exp(-z), (1.0, -1.0, 1.0)),
    "truncated_quadratic": (lambda z: max(0.0, 1 - z) ** 2, (1.0, -2.0, 2.0)),
    "savage": (lambda z: 1 / (1 + math.exp(z)) ** 2, (0.25, -0.25, 0.125)),
}
CURVE_Z = [round(-3 + 0.1 * k, 6) for k in range(61)]


def loss_function_record(loss: str) -> dict[str, Any] | None:
    """summary.json's ``loss_function`` for a GPO member (None for any other loss)."""
    if loss not in MEMBER_FUNCTIONS:
        return None
    f, (f0, d1, d2) = MEMBER_FUNCTIONS[loss]
    return {
        "f0": f0,
        "d1": d1,
        "d2": d2,
        "regularization_ratio": d2 / abs(d1),
        "z": CURVE_Z,
        "f": [f(z) for z in CURVE_Z],
    }


def job_name(**overrides: Any) -> str:
    """Hydra's override_dirname: key=value items sorted by key, joined by commas."""
    return ",".join(f"{key}={value}" for key, value in sorted(overrides.items()))


def write_job(
    sweep: Path,
    *,
    loss: str,
    beta: float,
    lr: float = 1e-5,
    seed: int = 0,
    seeded: bool = False,
    status: str | None = "completed",
    history: list[tuple[int, dict[str, float]]] = (),
    final: dict[str, float] | None = None,
    error: str | None = None,
    name: str = "synthetic",
    loss_function: bool = True,
) -> Path:
    """One job directory. ``history`` holds (step, val metrics) records; ``final`` defaults to
    the last value of each; ``best`` follows each metric's mode; ``status=None`` writes no summary;
    ``loss_function=False`` leaves out the loss's record, as summaries written before it did."""
    overrides = {"loss": loss, "beta": beta, "optim.lr": lr}
    if seeded:
        overrides["seed"] = seed
    job = sweep / job_name(**overrides)
    job.mkdir(parents=True, exist_ok=True)
    config = {"name": name, "beta": beta, "seed": seed, "loss": {"fn": loss}, "optim": {"lr": lr}}
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    with (job / "metrics.jsonl").open("w") as handle:
        for step, values in history:
            handle.write(json.dumps({"step": step, "train/loss": 0.5}) + "\n")
            handle.write(json.dumps({"step": step, **values}) + "\n")
    if status is None:
        return job
    last: dict[str, float] = {}
    best: dict[str, dict[str, Any]] = {}
    for step, values in history:
        last.update(values)
        for key, value in values.items():
            if key.endswith("_se"):
                continue
            better = max if metric_mode(key) == "max" else min
            if key not in best or better(value, best[key]["value"]) != best[key]["value"]:
                best[key] = {"value": value, "step": step, "mode": metric_mode(key)}
    summary = {
        "schema": 1,
        "status": status,
        "name": name,
        "loss": loss,
        "beta": beta,
        "lr": lr,
        "seed": seed,
        "overrides": [f"{k}={v}" for k, v in overrides.items()],
        "wall_time_s": 1.0,
        "steps": history[-1][0] if history else 0,
        "final": final if final is not None else last,
        "best": best,
        "data": {},
    }
    if loss_function:
        summary["loss_function"] = loss_function_record(loss)
    if status == "running":
        summary.update(final={}, best={})
    if error is not None:
        summary["error"] = error
    (job / "summary.json").write_text(json.dumps(summary, indent=2))
    return job


RATIOS = {"logistic": 0.5, "hinge": 0.0, "squared": 1.0, "exponential": 1.0, "truncated_quadratic": 1.0, "savage": 0.5}


def synthetic_sweep(
    sweep: Path,
    losses=("logistic", "hinge", "squared"),
    betas=(0.03, 0.1, 0.3, 1.0, 3.0),
    seeds=(0, 1),
    steps=(0, 25, 50, 75, 100),
) -> Path:
    """A plausible GPO sweep: stronger regularization (beta·f''(0)/|f'(0)|) keeps the KL small.

    KL at the end shrinks with the effective weight w = beta·ratio (hinge gets a weak one, as its
    margin stops pushing once beta·rho > 1); win rate rises with KL, then falls off.
    """
    for loss in losses:
        for beta in betas:
            for seed in seeds:
                w = beta * (RATIOS.get(loss, 0.5) or 0.15)
                wobble = 1 + 0.08 * math.sin(7 * seed + 3 * beta + len(loss))
                kl_end = 4.0 / (w + 0.15) * wobble
                history = []
                for step in steps:
                    t = step / steps[-1]
                    kl = kl_end * t**1.2
                    win = 0.5 + 0.42 * (1 - math.exp(-kl / 4)) - 0.006 * kl + 0.01 * math.sin(seed + 5 * beta)
                    reg = 0.5 * kl * (1.5 + 0.5 * t) / (1 + w)
                    history.append(
                        (
                            step,
                            {
                                "val/win_rate": round(min(win, 1.0), 6),
                                "val/win_rate_se": 0.02,
                                "val/kl_token": round(kl, 6),
                                "val/kl_token_se": round(0.05 * kl + 0.01, 6),
                                "val/kl_seq": round(1.05 * kl, 6),
                                "val/offline_reg": round(reg, 6),
                                "val/offline_reg_se": round(0.1 * reg, 6),
                                "val/loss": 0.69 - 0.1 * t,
                            },
                        )
                    )
                write_job(sweep, loss=loss, beta=beta, seed=seed, seeded=len(seeds) > 1, history=history)
    return sweep
