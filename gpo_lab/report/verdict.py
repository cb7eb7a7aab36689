"""The claims section of report.md (and of the bandit's claims file): the verdict on the paper's two
claims, the fitted best beta of each loss, the best-beta ratio against theory, the frontiers' gap."""

from __future__ import annotations

import math

from gpo_lab.report.axes import Metric
from gpo_lab.report.beta_ratio import claim_two_record
from gpo_lab.report.cells import number, table
from gpo_lab.report.claim_two import claim_two_lines, claim_two_sentence
from gpo_lab.report.claims import Claims


def verdict(claims: Claims) -> str:
    """What the sweep shows on the paper's two claims, whichever way it falls."""
    edges = [b.loss for b in claims.bests if not b.claimable]
    tail = f" No β shift is claimed for {', '.join(edges)} (see the notes below)." if edges else ""
    return (
        f"**Verdict.** Claim 1 (similar trade-offs): {claim_one(claims)} Claim 2 (best β moves as "
        f"f''(0)/|f'(0)|): {claim_two(claims)}{tail}"
    )


def claim_one(claims: Claims) -> str:
    """The frontier test's outcome, its margin and confidence, and the gap that decided it."""
    test = claims.frontier
    if test is None:
        return "cannot be judged: no two losses' frontiers share a range of KL (or no KL was logged)."
    where = (
        f"{test.pair[0]} above {test.pair[1]} by {test.largest_gap:.3g} at KL {test.at_kl:.3g} "
        f"(simultaneous {test.level:.0%} interval {test.band[0]:.3g} to {test.band[1]:.3g})"
    )
    if test.verdict == "differ":
        return f"**differ**: the frontiers are not the same; {where} excludes zero."
    if test.verdict == "similar":
        return (
            f"**similar** within ±{test.margin:g}: every pair's gap stays within the margin across their common "
            f"KL range at {test.level:.0%} simultaneous confidence (largest gap: {where})."
        )
    return (
        f"**inconclusive**: no gap excludes zero, but the bands reach ±{test.widest:.3g}, beyond the margin "
        f"±{test.margin:g}, so the sweep cannot show the frontiers alike either (largest gap: {where})."
    )


def claim_two(claims: Claims) -> str:
    """What the sweep shows on the best-β shift: theory's slope of -1 over every f(β·ρ) loss, the paper groups'
    ratio against theory's, and the losses off theory's line."""
    record = claim_two_record(claims.bests, claims.level)
    return f"**{record['verdict']}**: {claim_two_sentence(record)}"


def claims_section(claims: Claims, y: Metric | None, x: Metric | None, partial: bool = False) -> list[str]:
    """The claims section of report.md: verdict, fitted best β, the ratio, the frontiers' gap."""
    lines = ["## The paper's claims", ""]
    if partial:
        lines += ["_The sweep is not complete (PARTIAL): the claims count completed jobs only and may change._", ""]
    quality = f"`{y.spec}`" if y is not None else "the quality metric"
    lines += [verdict(claims), ""] + edge_warnings(claims) + best_beta_lines(claims, quality)
    lines += ["", "### Best β against f''(0)/|f'(0)|, every f(β·ρ) loss", ""] + claim_two_lines(
        claims.bests, claims.level
    )
    lines += ["", "### Best-β ratio between the f''(0)/|f'(0)| groups", ""] + ratio_lines(claims)
    if claims.replicates or claims.frontier is not None:
        lines += ["", "### Are the frontiers alike?", ""] + gap_lines(claims, quality, x)
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
            "configuration (what a seed varies is the task's: in the synthetic study, a whole replicate with its own "
            f"SFT policy, offline pairs and held-out prompts) and the evaluation prompts ({claims.bootstrap}), the "
            "fit redone per replicate."
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
        interval = f"{number(b.low)} – {number(b.high)}" if math.isfinite(b.low) and b.claimable else "—"
        rows.append(
            [
                b.loss,
                number(b.lr),
                ", ".join(f"{v:g}" for v in b.betas),
                str(b.seeds),
                number(b.grid_best),
                number(b.best) if b.claimable else "—" if len(b.betas) < 3 or b.flat else f"({number(b.best)}: edge)",
                interval,
                number(b.ratio),
                number(b.best * b.ratio) if b.claimable else "—",
                b.note,
            ]
        )
    lines += table(
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
                interval = f" ({claims.level:.0%} interval {number(ratio.low)} – {number(ratio.high)})"
            lines.append(f"- **Measured ratio: {number(ratio.measured)}{interval}; theory: {number(ratio.theory)}.**")
        else:
            lines.append(f"- **No ratio is claimed: {ratio.problem}.** Theory: {number(ratio.theory)}.")
        lines += [f"- Left out: {loss} ({why})" for loss, why in ratio.excluded.items()]
    return lines


def gap_lines(claims: Claims, quality: str, x: Metric | None) -> list[str]:
    """How claim 1 was tested: what was resampled, what the bands control, and the outcome."""
    test = claims.frontier
    if test is None:
        return ["_Not tested: no two losses' frontiers share a range of KL, or no KL metric was logged._"]
    kl = f"`{x.spec}`" if x is not None else "KL"
    lines = [
        f"Each loss's frontier (its configurations no other of its configurations beats on {kl} and {quality}) "
        "is interpolated linearly in log KL and compared, pair by pair, at the frontiers' knots on their common "
        f"KL range ({test.pairs} pair(s), {test.points} points). A bootstrap ({test.replicates} replicates) "
        "resamples the evaluation prompts (one draw for every job) and adds each configuration's seed noise "
        "(the seed-to-seed spread beyond the prompts', pooled over configurations), redoing the configurations' "
        "means and the frontiers in each replicate. The largest standardized deviation over every pair and "
        f"point sets one critical value ({test.critical:.2f}): the bands gap ± {test.critical:.2f}·sd hold "
        f"together at a nominal {test.level:.0%}, which controls the chance of calling identical frontiers "
        "different across every comparison the report makes (nominal 99%, because simulated sweeps showed "
        "95% bands raising false alarms about 10% of the time).",
        "",
        f"- **Outcome: {test.verdict}** (margin ±{test.margin:g} in {quality}, `--margin`). differ: some band "
        "excludes zero; similar: every band lies within the margin; inconclusive: neither.",
        f"- Largest gap: {test.pair[0]} above {test.pair[1]} by {number(test.largest_gap)} at KL "
        f"{number(test.at_kl)}, simultaneous interval {number(test.band[0])} to {number(test.band[1])}; "
        f"the widest band reaches ±{number(test.widest)}.",
        "- Its error rates on sweeps of this design: `python -m gpo_lab.report SWEEP --calibrate`.",
    ]
    if test.skipped:
        lines.append(f"- No common KL range: {', '.join(test.skipped)}.")
    return lines
