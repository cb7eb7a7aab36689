"""The report's wandb side: read a sweep back from a wandb project, attach the report to it.

Both need the network and an API key; nothing else in the report does. Local files stay the
reference: a sweep directory holds everything the report draws. wandb itself is imported inside
the functions that use it: it is optional and slow to load, and ``python -m gpo_lab.report`` on a
local sweep without wandb in its config never needs it.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import pandas as pd

from gpo_lab.report.analysis import Report
from gpo_lab.report.collect import COMPLETED, FAILED, RUNNING, Sweep, canonical_loss, config_key
from gpo_lab.report.loss_shapes import member_ratio
from gpo_lab.run.wandb_mode import resolve_mode
from gpo_lab.store.config_file import read_config_file
from gpo_lab.store.run_files import RunFiles

log = logging.getLogger(__name__)

_STATES = {
    "finished": COMPLETED,
    "running": RUNNING,
    "pending": RUNNING,
    "crashed": FAILED,
    "failed": FAILED,
    "killed": FAILED,
}


def wandb_target(sweep: Sweep) -> dict[str, Any] | None:
    """project, entity, group and mode of the wandb logger the sweep's jobs used, if any."""
    for path in sweep.jobs.get("path", pd.Series(dtype=str)):
        node = (read_config_file(RunFiles(path).config).get("logger") or {}).get("wandb")
        if node:
            return {key: node.get(key) for key in ("project", "entity", "group", "mode")}
    return None


def attach_to_wandb(report: Report) -> bool:
    """Log the report's figures and tables to a ``report`` run in the sweep's wandb group.

    Best-effort: a sweep that did not log to wandb, offline mode, or any wandb error only logs
    a line; the local report is already written.
    """
    target = wandb_target(report.sweep)
    if target is None:
        log.info("The sweep's jobs did not log to wandb; the report is local only.")
        return False
    try:
        mode = resolve_mode(target["mode"])
    except ValueError as error:
        log.warning("Report not attached to wandb: %s", error)
        return False
    if mode != "online":
        log.info(
            "wandb is %s (no API key configured): the report is local only. After `wandb login`, "
            "run the report again to attach its figures to group %r.",
            mode,
            target["group"],
        )
        return False
    try:
        import wandb  # slow to import, and only the --wandb path needs it

        with tempfile.TemporaryDirectory() as directory:
            run = wandb.init(
                project=target["project"],
                entity=target["entity"],
                group=target["group"],
                job_type="report",
                name=f"report: {target['group']}",
                dir=directory,
                mode="online",
                reinit="finish_previous",
            )
            run.log({f"report/{key}": wandb.Image(str(path)) for key, path in report.figures.items()})
            run.log(
                {
                    "report/best_beta": wandb.Table(dataframe=report.best.astype(str)),
                    "report/jobs": wandb.Table(dataframe=report.sweep.jobs.astype(str)),
                }
            )
            run.summary["report/partial"] = report.sweep.partial
            url = run.url
            run.finish()
        log.info("Report attached to wandb: %s", url)
        return True
    except Exception as error:  # the network, the server, permissions: the local report stands
        log.warning(
            "Could not attach the report to wandb (%s: %s); the local report stands.", type(error).__name__, error
        )
        return False


def load_wandb_sweep(project: str, group: str | None = None) -> Sweep:
    """The runs of a wandb project (``entity/project``), optionally one sweep's group, as a Sweep.

    Needs the network and a key. Rows have the columns of :func:`gpo_lab.report.collect.read_job`.
    """
    import wandb  # slow to import, and only the --wandb path needs it

    api = wandb.Api()
    runs = [run for run in api.runs(project, filters={"group": group} if group else None) if run.job_type != "report"]
    rows = [_row(run) for run in runs]
    if not rows:
        raise ValueError(f"No runs in wandb project {project!r}" + (f" group {group!r}" if group else ""))
    by_name = {run.name: run for run in runs}
    return Sweep(
        name=group or project,
        source=f"wandb:{project}",
        jobs=pd.DataFrame(rows),
        read_history=lambda job: _history(by_name[job]),
    )


def _row(run: Any) -> dict[str, Any]:
    config, summary = run.config, dict(run.summary)
    status = _STATES.get(run.state, run.state)
    loss = canonical_loss(config.get("loss"))
    row = {
        "job": run.name,
        "path": run.url,
        "status": status,
        "partial": status == RUNNING,
        "name": run.group,
        "loss": loss,
        "beta": config.get("beta"),
        "lr": config.get("lr"),
        "seed": config.get("seed"),
        "config": config_key(run.name),
        "steps": summary.get("trainer/global_step"),
        "wall_time_s": summary.get("_runtime"),
        "error": None,
        "ratio": member_ratio(loss) if loss else float("nan"),  # no loss_function record on wandb: members only
    }
    for name, value in summary.items():
        if not name.startswith("val/"):
            continue
        if isinstance(value, dict):  # define_metric(summary="max,last") keeps both
            row[f"final/{name}"] = value.get("last")
            best = value.get("max", value.get("min"))
            if best is not None:
                row[f"best/{name}"] = best
        else:
            row[f"final/{name}"] = value
    return row


def _history(run: Any) -> pd.DataFrame:
    rows = [
        {"step": r["trainer/global_step"], **{k: v for k, v in r.items() if k.startswith("val/")}}
        for r in run.scan_history()
        if r.get("trainer/global_step") is not None
        and any(k.startswith("val/") and v is not None for k, v in r.items())
    ]
    frame = pd.DataFrame(rows)
    return frame.groupby("step", as_index=False).last() if not frame.empty else pd.DataFrame({"step": []})
