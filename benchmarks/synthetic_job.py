"""Where one job of the synthetic study spends its CPU time: set-up, training steps, evaluations.

Runs the same job (``+experiment=synthetic`` at 300 steps of 32 pairs, Adam at 1e-3, an evaluation
every 100 steps) on one or more source trees, each in its own process, side by side in one
invocation, and prints a table and one JSON line. Each process runs the job twice through
``gpo_lab.run.train.train`` (the function every launcher calls): the first fills the caches (SFT
policy, offline pairs, reference log-probs) and is not counted; the second is measured, as a job of
a sweep that follows others in the same process. Times are CPU seconds of that process
(``time.process_time``), so other work on the machine changes them less than wall time.

    python benchmarks/synthetic_job.py                       # this checkout
    python benchmarks/synthetic_job.py --baseline OLD_TREE   # and another checkout of gpo_lab, side by side
    ... --cache DIR                                          # keep the caches for the next invocation
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parent.parent
JOB = [
    "+experiment=synthetic",
    "loss=squared",
    "beta=0.5",
    "optim.lr=1e-3",
    "trainer.max_steps=300",
    "trainer.val_check_interval=100",
    "callbacks.progress=null",
    "callbacks.sample_bank.progress=false",
    "logger=none",
]


class PhaseTimer(pl.Callback):
    """Sums the CPU time of the fit and of its validations; the last one made is ``PhaseTimer.last``."""

    last: PhaseTimer | None = None

    def __init__(self):
        self.fit_start = self.validation_start = 0.0
        self.fit = self.validation = 0.0
        self.evaluations = 0
        PhaseTimer.last = self

    def on_fit_start(self, trainer, pl_module):
        self.fit_start = time.process_time()

    def on_fit_end(self, trainer, pl_module):
        self.fit = time.process_time() - self.fit_start

    def on_validation_start(self, trainer, pl_module):
        self.validation_start = time.process_time()

    def on_validation_end(self, trainer, pl_module):
        self.validation += time.process_time() - self.validation_start
        self.evaluations += 1


def child(overrides: list[str], work: Path) -> dict:
    """Run the job twice in this process; measure the second."""
    import synthetic_job  # this file under the name the callback's _target_ uses
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    import gpo_lab.__main__  # noqa: F401  (config resolvers, registered losses)
    from gpo_lab.run.train import train

    conf = Path(gpo_lab.__main__.__file__).resolve().parent.parent / "conf"
    results = []
    for attempt in ("warm-up", "measured"):
        run_dir = work / attempt
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(
                config_name="config",
                overrides=[*overrides, "+callbacks.phase_timer._target_=synthetic_job.PhaseTimer"],
                return_hydra_config=True,
            )
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        started = time.process_time()
        summary = train(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), run_dir)
        total = time.process_time() - started
        phases = synthetic_job.PhaseTimer.last
        results.append(
            {
                "status": summary["status"],
                "setup_s": total - phases.fit,
                "train_s": phases.fit - phases.validation,
                "evaluation_s": phases.validation,
                "evaluations": phases.evaluations,
                "total_s": total,
                "steps": summary.get("steps"),
                "val/win_rate": summary["final"].get("val/win_rate"),
            }
        )
    return results[-1]


def measure(tree: Path, cache: Path, work: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), str(tree)]),
        "GPO_LAB_CACHE": str(cache),
    }
    out = work / "result.json"
    command = [sys.executable, __file__, "--child", str(out), str(work)]
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def table(results: dict[str, dict]) -> str:
    lines = [
        "| tree | set-up (s) | training (s) | ms per step | evaluations (s) | s per evaluation | job total (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['setup_s']:.1f} | {r['train_s']:.1f} | {1000 * r['train_s'] / r['steps']:.0f} | "
            f"{r['evaluation_s']:.1f} | {r['evaluation_s'] / max(r['evaluations'], 1):.2f} | {r['total_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout of gpo_lab to measure the same job on")
    parser.add_argument("--cache", type=Path, help="keep each tree's SFT policy, pairs and reference log-probs here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out, work = args.child
        Path(out).write_text(json.dumps(child(JOB, Path(work))))
        return
    trees = {"this checkout": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    with tempfile.TemporaryDirectory(prefix="gpo_lab-bench-") as base:
        results = {}
        for name, tree in trees.items():
            work = Path(base) / name.replace(" ", "_")
            work.mkdir()
            cache = (args.cache / work.name) if args.cache else work / "cache"
            results[name] = measure(tree, cache, work)
    print(table(results))
    if args.baseline:
        ours, theirs = results["this checkout"], results["baseline"]
        print(f"\njob total: {theirs['total_s'] / ours['total_s']:.2f}x less CPU than the baseline")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
