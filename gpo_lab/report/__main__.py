"""``python -m gpo_lab.report SWEEP_DIR``: write report.md and its figures into the sweep directory.

python -m gpo_lab.report multirun/tldr
python -m gpo_lab.report multirun/tldr --y val/reward --x val/kl_seq --out /tmp/report
python -m gpo_lab.report multirun/synthetic_small --calibrate   # claim 1's error rates on this design
"""

from __future__ import annotations

import argparse
import logging
import sys

from gpo_lab.errors import ConfigError
from gpo_lab.report.axes import KL_CANDIDATES, QUALITY_CANDIDATES
from gpo_lab.report.build import make_report
from gpo_lab.report.calibration import SHIFT, calibrate, plan_of
from gpo_lab.report.frontier_test import MARGIN
from gpo_lab.report.verdict import verdict
from gpo_lab.report.wandb_io import attach_to_wandb

log = logging.getLogger("gpo_lab.report")
EXIT_INCOMPLETE = 3  # the report is written, but of a sweep not complete or whose every job failed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpo_lab.report",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a multirun directory, e.g. multirun/<name>")
    parser.add_argument(
        "--x", default=None, help=f"divergence metric (default: the first logged of {', '.join(KL_CANDIDATES)})"
    )
    parser.add_argument(
        "--y",
        default=None,
        help=f"quality metric; a leading '-' negates it (default: the first logged of {', '.join(QUALITY_CANDIDATES)})",
    )
    parser.add_argument(
        "--value",
        choices=("final", "best"),
        default="final",
        help="each job's last validation value, or its best one during training",
    )
    parser.add_argument(
        "--jobs",
        default=None,
        help="comma-separated job directory names for the dynamics figure "
        "(default: the best configuration of each loss)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=MARGIN,
        help="claim 1: frontiers are 'similar' when every gap stays within ± this, in the quality's units",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help=f"also simulate sweeps of this design (identical trade-offs, and one loss {SHIFT:g} lower) and print "
        "claim 1's false-alarm rate and power",
    )
    parser.add_argument("--simulations", type=int, default=200, help="simulated sweeps per truth for --calibrate")
    parser.add_argument("--out", default=None, help="where to write report.md and the PNGs (default: SWEEP_DIR)")
    parser.add_argument(
        "--wandb",
        choices=("auto", "off"),
        nargs="?",
        const="auto",
        default="auto",
        help="auto (also a bare --wandb): a sweep-summary run in the sweep's wandb group when its jobs logged to "
        "wandb (charts, tables, figures; online with a key, else offline with the wandb sync command)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    jobs = [job.strip() for job in args.jobs.split(",")] if args.jobs else None
    try:
        report = make_report(
            args.sweep_dir, out=args.out, x=args.x, y=args.y, value=args.value, jobs=jobs, margin=args.margin
        )
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the sweep directory itself cannot be listed
        print(f"error: cannot read {error.filename or args.sweep_dir}: {error.strerror or error}", file=sys.stderr)
        return 2
    state = report.sweep.state
    label = "FAILED" if state.all_failed else "complete" if state.complete else "PARTIAL"
    figures = ", ".join(p.name for p in report.figures.values()) or "none"
    print(f"{report.path} ({label}: {state.describe()}); figures: {figures}")
    for note in report.notes:
        print(f"note: {note}")
    if report.claims is not None:
        print(verdict(report.claims).replace("**", ""))
    if args.calibrate:
        design = report.claims.design if report.claims is not None else None
        if design is None:
            print("calibrate: no quality and KL to simulate from", file=sys.stderr)
        else:
            plan = plan_of(design)
            n = plan.noise
            print(
                f"calibrate: {len(plan.losses)} losses x {plan.kl.shape[1]} configurations x {plan.seeds} seeds, "
                f"{plan.prompts} prompts; measured noise: {n.describe(plan.prompts)}; margin {args.margin:g}"
            )
            print("calibrate: " + calibrate(plan, sweeps=args.simulations, margin=args.margin).text())
    if args.wandb == "auto":
        attach_to_wandb(report)
    if state.complete:
        return 0
    why = "every job failed" if state.all_failed else f"{state.unfinished} of {state.total} jobs have not ended"
    print(
        f"warning: {label} sweep ({why}): the report covers what has ended; python -m gpo_lab.status "
        f"{args.sweep_dir} lists every job, and the same sweep command resumes it. Exit code {EXIT_INCOMPLETE}.",
        file=sys.stderr,
    )
    return EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
