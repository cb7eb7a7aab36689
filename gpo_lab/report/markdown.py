"""``report.md``: the state of the sweep, the best beta of each loss, the figures, every job."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from gpo_lab.report.aggregate import EVAL_SE, SEED_SD
from gpo_lab.report.axes import REGULARIZER, Metric
from gpo_lab.report.claims import Claims
from gpo_lab.report.collect import DAMAGED, FAILED, RUNNING

if TYPE_CHECKING:
    from gpo_lab.report.build import Report

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


def render(report: Report) -> str:
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
        lines += ["**Missing or substituted:**", ""] + [f"- {_text(note)}" for note in report.notes] + [""]
    lines += _best(report) + [""]
    if report.claims is not None:
        lines += claims_section(report.claims, report.y, report.x, report.sweep.partial) + [""]
    lines += ["## Figures", ""]
    for number, (key, (title, caption)) in enumerate(CAPTIONS.items(), start=1):
        lines.append(f"### {number}. {title}")
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
    sweep = report.sweep
    counts = sweep.status_counts
    total = sum(counts.values())
    by_status = ", ".join(f"{n} {status}" for status, n in counts.items())
    if sweep.partial:
        running = counts.get(RUNNING, 0)
        head = (
            f"**Status: PARTIAL.** {running} of {total} jobs {'is' if running == 1 else 'are'} still running; "
            "their latest values are shown and marked *partial* (hollow markers in the figures). Every number may "
            "still change; the best β below counts completed jobs only."
        )
    else:
        head = f"**Status: complete.** All {total} jobs have ended."
    return [head, "", f"Jobs: {total} ({by_status})."]


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
        pending = int(row["pending"]) if _present(row["pending"]) else 0
        note = "; ".join(n for n in (edges.get(row["loss"], ""), f"{pending} still running" if pending else "") if n)
        rows.append(
            [
                row["loss"],
                _num(row["beta"]),
                _num(row["lr"]),
                _mean_err(row["mean"], row["err"], row["err_kind"]),
                _int(row["n"]),
                _num(row["ratio"]),
                _num(row["scaled_beta"]),
                note,
            ]
        )
    return lines + _table(
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


def verdict(claims: Claims) -> str:
    """What the sweep shows on the paper's two claims, whichever way it falls."""
    gap, k = claims.gap, claims.overlap_se
    if gap is None:
        one = "cannot be judged: no two losses' frontiers share a range of KL (or no KL was logged)."
    elif gap.z <= k:
        one = (
            f"the frontiers overlap within {k:g} SE: the largest gap between two losses' frontiers is "
            f"{gap.z:.2f} SE ({gap.higher} above {gap.lower} by {gap.gap:.3g} at KL {gap.kl:.3g})."
        )
    else:
        one = (
            f"the frontiers do not overlap within {k:g} SE: {gap.higher}'s frontier lies {gap.z:.2f} SE above "
            f"{gap.lower}'s (by {gap.gap:.3g} at KL {gap.kl:.3g})."
        )
    edges = [b.loss for b in claims.bests if not b.claimable]
    tail = f" No β shift is claimed for {', '.join(edges)} (see the notes below)." if edges else ""
    return (
        f"**Verdict.** Claim 1 (similar trade-offs): {one} Claim 2 (best β moves as f''(0)/|f'(0)|): "
        f"{claim_two(claims)}{tail}"
    )


def claim_two(claims: Claims) -> str:
    """What the sweep shows on the best-β shift: consistent with theory or not, or why it cannot tell."""
    ratio = claims.ratio
    if ratio is None:
        two = "cannot be judged: the sweep has no losses of two different f''(0)/|f'(0)| groups."
    elif not ratio.judged:
        two = f"cannot be judged: {ratio.problem}; extend the grid."
    else:
        measured = (
            f"the best β of {', '.join(ratio.low_group[1])} is {ratio.measured:.3g}× that of "
            f"{', '.join(ratio.high_group[1])}"
        )
        if ratio.contains_theory is None:
            two = f"{measured} (exact values, no interval); theory predicts {ratio.theory:.3g}."
        elif ratio.contains_theory:
            two = (
                f"consistent with theory: {measured} ({claims.level:.0%} interval {ratio.low:.3g}–{ratio.high:.3g}), "
                f"which contains theory's {ratio.theory:.3g}."
            )
            if ratio.low <= 1 <= ratio.high:
                two += " It also contains 1 (no shift): the sweep does not resolve the shift."
        else:
            two = (
                f"not consistent with theory: {measured} ({claims.level:.0%} interval "
                f"{ratio.low:.3g}–{ratio.high:.3g}), which excludes theory's {ratio.theory:.3g}."
            )
            if ratio.low <= 1 <= ratio.high:
                two += " It contains 1: no shift at all."
    return two


def claims_section(claims: Claims, y: Metric | None, x: Metric | None, partial: bool = False) -> list[str]:
    """The claims section of report.md: verdict, fitted best β, the ratio, the frontiers' gap."""
    lines = ["## The paper's claims", ""]
    if partial:
        lines += ["_The sweep is still running: the claims count completed jobs only and may change._", ""]
    quality = f"`{y.spec}`" if y is not None else "the quality metric"
    lines += [verdict(claims), ""] + edge_warnings(claims) + best_beta_lines(claims, quality)
    lines += ["", "### Best-β ratio between the f''(0)/|f'(0)| groups", ""] + ratio_lines(claims)
    if claims.replicates or claims.gap is not None:
        lines += ["", "### Do the frontiers overlap?", ""] + gap_lines(claims, quality, x)
    lines += [f"- {note}" for note in claims.notes]
    return lines


def edge_warnings(claims: Claims) -> list[str]:
    """One loud line per loss whose best β is at an edge of its grid (or that has too few β)."""
    lines = [f"> **⚠ {b.loss}: {b.note}.**" for b in claims.bests if b.note and not b.claimable]
    return lines + [""] if lines else []


def best_beta_lines(claims: Claims, quality: str) -> list[str]:
    """The fitted best β of each loss, with its interval and note."""
    if claims.replicates:
        how = (
            f"Interval: {claims.level:.0%} bootstrap ({claims.replicates} replicates) over the seeds of each "
            f"configuration and the evaluation prompts ({claims.bootstrap}), the fit redone per replicate."
        )
    else:
        how = "Exact values: no interval."
    lines = [
        "### Best β per loss, fitted",
        "",
        f"Fit: a quadratic in log β through the highest mean {quality} over seeds and its two neighbours on "
        f"the grid; its vertex (clamped to the neighbours' range) is the fitted best β. {how}",
        "",
    ]
    rows = []
    for b in claims.bests:
        interval = f"{_num(b.low)} – {_num(b.high)}" if math.isfinite(b.low) and b.claimable else "—"
        rows.append(
            [
                b.loss,
                _num(b.lr),
                ", ".join(f"{v:g}" for v in b.betas),
                str(b.seeds),
                _num(b.grid_best),
                _num(b.best) if b.claimable else "—" if len(b.betas) < 3 or b.flat else f"({_num(b.best)}: edge)",
                interval,
                _num(b.ratio),
                _num(b.best * b.ratio) if b.claimable else "—",
                b.note,
            ]
        )
    lines += _table(
        [
            "loss",
            "lr",
            "β run",
            "seeds",
            "highest mean at β",
            "fitted best β",
            f"{claims.level:.0%} interval",
            "f''(0)/|f'(0)|",
            "fitted β·f''(0)/|f'(0)|",
            "note",
        ],
        rows,
    )
    return lines


def ratio_lines(claims: Claims) -> list[str]:
    """The two groups, the measured ratio of their best β and theory's, and what was left out."""
    ratio, lines = claims.ratio, []
    if ratio is None:
        lines.append("_Not measured: the sweep has no losses of two different f''(0)/|f'(0)| groups._")
    else:
        lines += [
            f"Theory: equal regularization at equal β·f''(0)/|f'(0)|, so the best β of the group with "
            f"f''(0)/|f'(0)| = {ratio.low_group[0]:g} is {ratio.theory:g}× that of the group with "
            f"{ratio.high_group[0]:g}. Measured: the geometric mean of each group's fitted best β (per replicate).",
            "",
            f"- Group f''(0)/|f'(0)| = {ratio.low_group[0]:g}: {', '.join(ratio.low_group[1]) or '—'}",
            f"- Group f''(0)/|f'(0)| = {ratio.high_group[0]:g}: {', '.join(ratio.high_group[1]) or '—'}",
        ]
        if ratio.judged:
            interval = ""
            if math.isfinite(ratio.low):
                interval = f" ({claims.level:.0%} interval {_num(ratio.low)} – {_num(ratio.high)})"
            lines.append(f"- **Measured ratio: {_num(ratio.measured)}{interval}; theory: {_num(ratio.theory)}.**")
        else:
            lines.append(f"- **No ratio is claimed: {ratio.problem}.** Theory: {_num(ratio.theory)}.")
        lines += [f"- Left out: {loss} ({why})" for loss, why in ratio.excluded.items()]
    return lines


def gap_lines(claims: Claims, quality: str, x: Metric | None) -> list[str]:
    """The largest gap between two losses' frontiers, in standard errors."""
    gap = claims.gap
    if gap is None:
        return ["_Not measured: no two losses' frontiers share a range of KL, or no KL metric was logged._"]
    kl = f"`{x.spec}`" if x is not None else "KL"
    lines = [
        f"Each loss's frontier (its configurations no other of its configurations beats on {kl} and "
        f"{quality}) is interpolated linearly in KL; on the common KL range of every pair, the gap is "
        "divided by the two frontiers' standard errors there, sqrt(se₁² + se₂²) (a point's SE: the "
        "larger of sd over seeds/√n and its evaluation SE/√n).",
        "",
        f"- **Largest gap: {gap.z:.2f} SE**: {gap.higher} above {gap.lower} by {_num(gap.gap)} at KL "
        f"{_num(gap.kl)} (SE {_num(gap.se)}), over {gap.pairs} pair(s) of losses.",
        "- It is the largest of many comparisons (every pair, every frontier point), so a value somewhat "
        "above 2 can arise by chance alone when the frontiers are the same.",
    ]
    if gap.skipped:
        lines.append(f"- No common KL range: {', '.join(gap.skipped)}.")
    return lines


def _all_jobs(report: Report) -> list[str]:
    jobs = report.sweep.jobs.sort_values(["loss", "lr", "beta", "seed", "job"], na_position="last")
    metrics = [m for m in (report.y, report.x, Metric(REGULARIZER)) if m is not None]
    metrics = list(dict.fromkeys(metrics))
    header = ["job", "status", "loss", "β", "lr", "seed", "steps"] + [f"`{m.spec}`" for m in metrics]
    rows = []
    for index, job in jobs.iterrows():
        status = job["status"] + (" (partial)" if job["status"] == RUNNING else "")
        rows.append(
            [
                f"`{job['job']}`",
                status,
                job["loss"] or "",
                _num(job["beta"]),
                _num(job["lr"]),
                _int(job["seed"]),
                _int(job["steps"]),
            ]
            + [_num(m.values(jobs.loc[[index]], report.value).iloc[0]) for m in metrics]
        )
    title = "final" if report.value == "final" else "best"
    return [f"## All jobs ({title} values)", ""] + _table(header, rows)


def _failed(report: Report) -> list[str]:
    """The failed jobs with their errors, then the damaged ones with the file that could not be read."""
    jobs, lines = report.sweep.jobs, []
    failed, damaged = jobs[jobs["status"] == FAILED], jobs[jobs["status"] == DAMAGED]
    if not failed.empty:
        lines += ["## Failed jobs", ""]
        for _, job in failed.iterrows():
            error = job["error"] if _present(job["error"]) else "no error recorded"
            lines.append(f"- `{job['job']}` (after {_int(job['steps'])} steps): {_text(error)}")
        lines += ["", "Their directories hold the full traceback in `summary.json`."]
    if not damaged.empty:
        lines += ["", "## Damaged jobs", "", "Their files could not be read; the best-beta table leaves them out.", ""]
        lines += [f"- `{job['job']}`: {_text(job['error'])}" for _, job in damaged.iterrows()]
    return lines


def _mean_err(mean: Any, err: Any, kind: Any) -> str:
    if not _present(mean):
        return "—"
    if not _present(err):
        return _num(mean)
    suffix = {SEED_SD: " (sd)", EVAL_SE: " (SE)"}.get(kind, "")
    return f"{_num(mean)} ± {_num(err)}{suffix}"


def _table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_text(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_text(c) for c in row) + " |" for row in rows]
    return lines


def _text(value: Any) -> str:
    return str(value).replace("\n", " ").replace("|", "\\|")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def _num(value: Any) -> str:
    """Four significant digits; a missing value is a dash."""
    if not _present(value):
        return "—"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _int(value: Any) -> str:
    return str(int(value)) if _present(value) else "—"
