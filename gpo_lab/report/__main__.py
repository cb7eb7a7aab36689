"""``python -m gpo_lab.report SWEEP_DIR``: write report.md and its figures into the sweep directory.

python -m gpo_lab.report multirun/tldr
python -m gpo_lab.report multirun/tldr --y val/reward --x val/kl_seq --out /tmp/report
"""

from __future__ import annotations

import argparse
import logging
import sys

from gpo_lab.errors import ConfigError
from gpo_lab.report.axes import KL_CANDIDATES, QUALITY_CANDIDATES
from gpo_lab.report.build import make_report
from gpo_lab.report.verdict import verdict
from gpo_lab.report.wandb_io import attach_to_wandb

log = logging.getLogger("gpo_lab.report")


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
    parser.add_argument("--out", default=None, help="where to write report.md and the PNGs (default: SWEEP_DIR)")
    parser.add_argument(
        "--wandb",
        choices=("auto", "off"),
        default="auto",
        help="auto: attach the figures to the sweep's wandb group when its jobs logged to wandb "
        "and a key is configured",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    jobs = [job.strip() for job in args.jobs.split(",")] if args.jobs else None
    try:
        report = make_report(args.sweep_dir, out=args.out, x=args.x, y=args.y, value=args.value, jobs=jobs)
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the sweep directory itself cannot be listed
        print(f"error: cannot read {error.filename or args.sweep_dir}: {error.strerror or error}", file=sys.stderr)
        return 2
    state = "PARTIAL (jobs still running)" if report.sweep.partial else "complete"
    counts = ", ".join(f"{n} {status}" for status, n in report.sweep.status_counts.items())
    print(f"{report.path} ({state}: {counts}); figures: {', '.join(p.name for p in report.figures.values()) or 'none'}")
    for note in report.notes:
        print(f"note: {note}")
    if report.claims is not None:
        print(verdict(report.claims).replace("**", ""))
    if args.wandb == "auto":
        attach_to_wandb(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
