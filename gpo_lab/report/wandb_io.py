"""The report's wandb side: read a sweep back from a wandb project, attach the report to it.

Reading needs the network and an API key; attaching logs online with a key, offline without one
(uploaded later with ``wandb sync``); nothing else in the report needs wandb. Local files stay the
reference: a sweep directory holds everything the report draws. wandb itself is imported inside
the functions that use it: it is optional and slow to load, and ``python -m gpo_lab.report`` on a
local sweep without wandb in its config never needs it.
"""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from gpo_lab.report.analysis import Report
from gpo_lab.report.axes import Metric
from gpo_lab.report.claims_file import claims_record
from gpo_lab.report.collect import COMPLETED, FAILED, RUNNING, Sweep, canonical_loss, config_key
from gpo_lab.report.loss_shapes import member_ratio
from gpo_lab.run.wandb_mode import reachable_mode, resolve_mode
from gpo_lab.run.wandb_names import GROUP_FILE
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
    """project, entity, group and mode of the wandb logger the sweep's jobs used, if any.

    The group is the one the jobs logged to (``<job>/wandb/group``; a job that names none: its config's).
    """
    for path in sweep.jobs.get("path", pd.Series(dtype=str)):
        node = (read_config_file(RunFiles(path).config).get("logger") or {}).get("wandb")
        if node:
            target = {key: node.get(key) for key in ("project", "entity", "group", "mode")}
            group_file = Path(path) / "wandb" / GROUP_FILE
            if group_file.is_file():
                target["group"] = group_file.read_text().strip()
            return target
    return None


def _why_mode(configured: str | None) -> str:
    if configured:
        return f"logger.wandb.mode={configured}"
    if os.environ.get("WANDB_MODE"):
        return f"WANDB_MODE={os.environ['WANDB_MODE']}"
    return "no API key configured"


def _column(metric: Metric | None, frame: pd.DataFrame, stat: str = "mean") -> str | None:
    for name in (f"{metric.spec} {stat}", f"{metric.name} {stat}") if metric is not None else ():
        if name in frame.columns:
            return name
    return None


def short_column(metric: Metric) -> str:
    """A chart field name: ``val/kl_token`` -> ``kl_token`` (chart specs read plain field names)."""
    name = metric.name.split("/", 1)[-1].replace("/", "_")
    return f"neg_{name}" if metric.negate else name


def typed_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column a plain type: numbers stay numbers, lists become text, NaN stays empty."""
    out = pd.DataFrame(index=frame.index)
    for name, values in frame.items():
        if pd.api.types.is_bool_dtype(values):
            out[str(name)] = values.astype(bool)
        elif pd.api.types.is_numeric_dtype(values):
            out[str(name)] = values.astype(float) if pd.api.types.is_float_dtype(values) else values.astype("int64")
        else:
            out[str(name)] = [", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in values]
    return out.reset_index(drop=True)


def configuration_points(report: Report) -> pd.DataFrame:
    """One row per configuration: loss, beta, lr, seeds, and the mean and error of KL and quality."""
    configs = report.configs
    points = pd.DataFrame(
        {
            "loss": configs["loss"].astype(str),
            "beta": configs["beta"].astype(float),
            "lr": configs["lr"].astype(float),
            "seeds": configs["n"].astype("int64"),
        }
    )
    for metric in (report.x, report.y):
        mean, err = _column(metric, configs), _column(metric, configs, "err")
        if metric is not None and mean is not None:
            points[short_column(metric)] = configs[mean].astype(float)
            if err is not None:
                points[f"{short_column(metric)}_err"] = configs[err].astype(float)
    return points.sort_values(["loss", "beta"]).reset_index(drop=True)


def claims_rows(report: Report) -> pd.DataFrame:
    """claims.json as rows: claim, subject, verdict, value, low, high, note (typed columns)."""
    columns = ["claim", "subject", "verdict", "value", "low", "high", "note"]
    if report.claims is None:
        return pd.DataFrame(columns=columns)
    record = claims_record(report.claims)
    nan = float("nan")

    def number(value: Any) -> float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else nan

    def interval(value: Any) -> tuple[float, float]:
        return (
            (number(value[0]), number(value[1])) if isinstance(value, (list, tuple)) and len(value) == 2 else (nan, nan)
        )

    one, two = record["claim_1"], record["claim_2"]
    rows = [
        [
            "claim_1",
            " vs ".join(one.get("pair") or []),
            str(one.get("verdict")),
            number(one.get("largest_gap")),
            *interval(one.get("interval")),
            f"largest frontier gap, at KL {one.get('at_kl')}",
        ],
        [
            "claim_2",
            "best-beta ratio",
            str(two.get("verdict")),
            number(two.get("ratio")),
            *interval(two.get("interval")),
            f"theory {two.get('theory')}; slope {two.get('slope')}",
        ],
    ]
    for loss, best in record["best_beta"].items():
        rows.append(
            [
                "best_beta",
                loss,
                "",
                number(best.get("best_beta")),
                *interval(best.get("interval")),
                str(best.get("note") or ""),
            ]
        )
    return pd.DataFrame(rows, columns=columns)


def log_summary(run: Any, report: Report) -> None:
    """The report's charts (native: drawn by wandb from the logged tables), tables and figures."""
    import wandb  # slow to import, and only the --wandb path needs it

    points = configuration_points(report)
    table = wandb.Table(dataframe=points)
    logged: dict[str, Any] = {"report/configurations": table}
    x = short_column(report.x) if report.x is not None else None
    y = short_column(report.y) if report.y is not None else None
    if x in points and y in points:
        by_kl = wandb.Table(dataframe=points.sort_values(["loss", x]).reset_index(drop=True))
        logged["report/tradeoff"] = wandb.plot.line(
            by_kl, x, y, stroke="loss", title=f"{report.y.spec} against {report.x.spec}: one line per loss"
        )
    if y in points:
        logged["report/beta"] = wandb.plot.line(table, "beta", y, stroke="loss", title=f"{report.y.spec} against beta")
    if x in points:
        logged["report/kl_beta"] = wandb.plot.line(
            table, "beta", x, stroke="loss", title=f"{report.x.spec} against beta"
        )
    logged["report/best_beta"] = wandb.Table(dataframe=typed_table(report.best))
    logged["report/claims"] = wandb.Table(dataframe=claims_rows(report))
    logged["report/jobs"] = wandb.Table(dataframe=typed_table(report.sweep.jobs))
    logged.update({f"report/figures/{key}": wandb.Image(str(path)) for key, path in report.figures.items()})
    run.log(logged)
    run.summary["report/partial"] = report.sweep.partial


def attach_to_wandb(report: Report) -> bool:
    """Log a sweep-summary run (``job_type=report``) into the sweep's wandb group: native charts of the
    trade-off and of quality and KL against beta, the best-beta, claims and jobs tables, the figures.

    Online where the jobs' logger would be online; offline otherwise, into ``wandb/`` beside the
    report, with the ``wandb sync`` command to upload it. Best-effort: a sweep that did not log to
    wandb, a disabled logger, or any wandb error only logs a line; the local report is already written.
    """
    target = wandb_target(report.sweep)
    if target is None:
        log.info("The sweep's jobs did not log to wandb; the report is local only.")
        return False
    try:
        mode, unreachable = reachable_mode(resolve_mode(target["mode"]))
    except ValueError as error:
        log.warning("Report not attached to wandb: %s", error)
        return False
    if mode == "disabled":
        log.info("wandb is disabled (%s): the report is local only.", _why_mode(target["mode"]))
        return False
    out = report.path.parent if report.path is not None else Path(tempfile.mkdtemp())
    group = target["group"] or report.sweep.name
    try:
        import wandb  # slow to import, and only the --wandb path needs it

        run = wandb.init(
            project=target["project"] or "gpo_lab",
            entity=target["entity"],
            group=group,
            job_type="report",
            name=f"sweep-summary: {group}",
            dir=str(out),
            mode=mode,
            reinit="finish_previous",
        )
        log_summary(run, report)
        url, sync_dir = run.url, run.settings.sync_dir
        run.finish()
    except Exception as error:  # the network, the server, permissions: the local report stands
        log.warning(
            "Could not attach the report to wandb (%s: %s); the local report stands.", type(error).__name__, error
        )
        return False
    if mode == "offline":
        log.info(
            "wandb is offline (%s): the sweep summary is saved in %s; upload it with: wandb sync %s",
            unreachable or _why_mode(target["mode"]),
            sync_dir,
            shlex.quote(sync_dir),
        )
    else:
        log.info("Report attached to wandb: %s", url)
    return True


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
