"""``report.md``: the state of the sweep, the best beta of each loss, the claims, the figures, every job."""

from __future__ import annotations

import time

from gpo_lab.report.analysis import Report
from gpo_lab.report.axes import REGULARIZER, Metric
from gpo_lab.report.cells import cell_text, integer, mean_and_error, number, present, table
from gpo_lab.report.claim_two import CAPTION as CLAIM_TWO_CAPTION
from gpo_lab.report.collect import DAMAGED, FAILED, INTERRUPTED, RUNNING
from gpo_lab.report.verdict import claims_section
from gpo_lab.status import NOT_STARTED

CAPTIONS = {
    "tradeoff": (
        "Quality against KL",
        "One point per configuration (mean over seeds), one colour per loss; the line "
        "of each loss joins its points that no other point of that loss beats (lower KL and higher "
        "quality): the trade-off frontier the loss reaches. Labels give β.",
    ),
    "beta": (
        "Quality against β",
        "Left: against β. Right: against β·f''(0)/|f'(0)|, the weight of the offline "
        "regularizer E_μ[ρ²]/2 in the second-order expansion of the loss; where this theory holds, the losses' "
        "curves line up on the right. The hinge loss has f''(0) = 0 and is left out on the right, as are "
        "losses that are not f(β·ρ) (SimPO, the length-normalized and two-argument losses): no f''(0).",
    ),
    "kl_beta": (
        "KL against β",
        "The divergence at the end of training (mean over seeds) against β and against β·f''(0)/|f'(0)|; "
        "where the second-order theory holds, the losses' curves line up on the right.",
    ),
    "beta_theory": CLAIM_TWO_CAPTION,
    "regularizer_kl": (
        "The offline regularizer against KL over training",
        "R_mu = E_μ[ρ²]/2 on held-out pairs against the KL from the reference at every validation, one "
        "line per completed job (one colour per loss), in step order. Near the reference both grow as the "
        "square of the policy's change, so R_mu/KL starts out steady; an × marks the first validation where "
        "it has moved by more than 2× from its first value: from there the offline regularizer no longer "
        "tracks the KL (mass moves where μ does not look).",
    ),
    "dynamics": (
        "Regularization during training",
        "KL from the reference and the offline regularizer "
        "E_μ[ρ²]/2 on held-out pairs at every validation, for the jobs listed in the legend (by default the "
        "best configuration of each loss). Bands: ±1 standard error of the evaluation.",
    ),
    "loss_functions": (
        "The loss functions",
        "Left: f(z). Right: rescaled to f(0) = 0 and f'(0) = −1, so the "
        "curvature at 0 is f''(0)/|f'(0)|, the regularization each loss applies per unit of β.",
    ),
}


def render(report: Report, extra: list[str] | None = None) -> str:
    """``report.md``; ``extra``: the lines of a further section (online against offline), before the figures."""
    sweep = report.sweep
    lines = [
        f"# Sweep report: {sweep.name}",
        "",
        f"Source: `{sweep.source}`; written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        "",
    ]
    lines += _status(report) + [""]
    lines += _metrics(report) + [""]
    if report.notes:
        lines += ["**Missing or substituted:**", ""] + [f"- {cell_text(note)}" for note in report.notes] + [""]
    lines += _best(report) + [""]
    if report.claims is not None:
        lines += claims_section(report.claims, report.y, report.x, report.sweep.partial) + [""]
    lines += extra or []
    lines += ["## Figures", ""]
    for index, (key, (title, caption)) in enumerate(CAPTIONS.items(), start=1):
        lines.append(f"### {index}. {title}")
        lines.append("")
        if key in report.figures:
            lines += [f"![{title}]({report.figures[key].name})", "", caption]
        else:
            lines.append("_Not drawn: the metrics it needs were not logged (see above)._")
        lines.append("")
    lines += _all_jobs(report) + [""]
    lines += _failed(report)
    return "\n".join(lines).rstrip() + "\n"


def _status(report: Report) -> list[str]:
    """Complete, PARTIAL or FAILED, with the count of each job state (the status command's states)."""
    state = report.sweep.state
    total, failed = state.total, state.counts.get(FAILED, 0)
    if state.all_failed:
        head = f"**Status: FAILED.** All {total} jobs failed: there is no result to report (their errors are below)."
    elif state.complete:
        head = f"**Status: complete.** All {total} jobs have ended."
        head += f" {failed} failed (errors below); the rest count." if failed else ""
    else:
        unfinished = ", ".join(
            f"{state.counts[s]} {s}" for s in (RUNNING, INTERRUPTED, NOT_STARTED, DAMAGED) if state.counts.get(s)
        )
        head = (
            f"**Status: PARTIAL.** {state.unfinished} of {total} jobs have not ended ({unfinished}"
            f"{f'; {failed} failed' if failed else ''}). Running and interrupted jobs show their latest values, "
            "marked *partial* (hollow markers in the figures); the same sweep command resumes the interrupted jobs "
            "and starts those not started. Every number may still change; the best β below counts completed jobs only."
        )
    return [head, "", f"Jobs: {total} ({state.describe()})."]


def _metrics(report: Report) -> list[str]:
    value = "last validation" if report.value == "final" else "best validation value during training"
    lines = [
        f"- Quality: `{report.y.spec}` ({value} of each job)." if report.y else "- Quality: none logged.",
        f"- Divergence: `{report.x.spec}`." if report.x else "- Divergence (KL): none logged.",
        "- Seeds of one configuration are averaged: mean ± standard deviation over seeds (n − 1); a "
        "configuration with one seed shows ± the evaluation's standard error where the metric logs one.",
    ]
    return ["**Metrics**", ""] + lines


def _best(report: Report) -> list[str]:
    lines = ["## Best β per loss", ""]
    if report.sweep.state.all_failed:
        return lines + ["_Every job failed, so no β can be called best._"]
    if report.y is None:
        return lines + ["_No quality metric was logged, so no β can be called best._"]
    if report.best.empty:
        return lines + ["_No job has a value of the quality metric yet._"]
    direction = "highest" if report.y.higher_is_better else "lowest"
    lines += [
        f"The configuration with the {direction} mean `{report.y.spec}` over its seeds, among completed "
        "jobs. Theory: losses regularize alike at equal β·f''(0)/|f'(0)|.",
        "",
    ]
    rows = []
    edges = {b.loss: b.note.split(";")[0] for b in report.claims.bests if not b.claimable} if report.claims else {}
    for _, row in report.best.iterrows():
        pending = int(row["pending"]) if present(row["pending"]) else 0
        note = "; ".join(n for n in (edges.get(row["loss"], ""), f"{pending} unfinished" if pending else "") if n)
        rows.append(
            [
                row["loss"],
                number(row["beta"]),
                number(row["lr"]),
                mean_and_error(row["mean"], row["err"], row["err_kind"]),
                integer(row["n"]),
                number(row["ratio"]),
                number(row["scaled_beta"]),
                note,
            ]
        )
    return lines + table(
        [
            "loss",
            "best β",
            "lr",
            f"{report.y.spec} (mean ± err)",
            "seeds",
            "f''(0)/|f'(0)|",
            "β·f''(0)/|f'(0)|",
            "note",
        ],
        rows,
    )


def _all_jobs(report: Report) -> list[str]:
    jobs = report.sweep.jobs.sort_values(["loss", "lr", "beta", "seed", "job"], na_position="last")
    metrics = [m for m in (report.y, report.x, Metric(REGULARIZER)) if m is not None]
    metrics = list(dict.fromkeys(metrics))
    header = ["job", "status", "loss", "β", "lr", "seed", "steps"] + [f"`{m.spec}`" for m in metrics]
    rows = []
    for index, job in jobs.iterrows():
        status = job["status"] + (" (partial)" if job["partial"] else "")
        rows.append(
            [
                f"`{job['job']}`",
                status,
                job["loss"] or "",
                number(job["beta"]),
                number(job["lr"]),
                integer(job["seed"]),
                integer(job["steps"]),
            ]
            + [number(m.values(jobs.loc[[index]], report.value).iloc[0]) for m in metrics]
        )
    title = "final" if report.value == "final" else "best"
    return [f"## All jobs ({title} values)", ""] + table(header, rows)


def _failed(report: Report) -> list[str]:
    """The failed jobs with their errors, then the damaged ones with the file that could not be read."""
    jobs, lines = report.sweep.jobs, []
    failed, damaged = jobs[jobs["status"] == FAILED], jobs[jobs["status"] == DAMAGED]
    if not failed.empty:
        lines += ["## Failed jobs", ""]
        for _, job in failed.iterrows():
            error = job["error"] if present(job["error"]) else "no error recorded"
            lines.append(f"- `{job['job']}` (after {integer(job['steps'])} steps): {cell_text(error)}")
        lines += ["", "Their directories hold the full traceback in `summary.json`."]
    if not damaged.empty:
        lines += ["", "## Damaged jobs", "", "Their files could not be read; the best-beta table leaves them out.", ""]
        lines += [f"- `{job['job']}`: {cell_text(job['error'])}" for _, job in damaged.iterrows()]
    return lines
