"""``claims.json`` next to ``report.md``: the verdicts in a form notebooks and checks read.

``claim_1``: the frontier test (verdict, margin, largest_gap, pair, at_kl and its band); ``claim_2``:
the best-beta record of :mod:`~gpo_lab.report.beta_ratio`; ``best_beta``: every loss's fitted best
beta and interval; ``online_offline`` (a sweep with online jobs): per loss the online-minus-offline gap at
matched KL and its interval, the ranking accuracies and the over-optimisation peaks. Numbers that are not
finite are written as null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gpo_lab.report.beta_ratio as claim_two
from gpo_lab.report.claims import Claims
from gpo_lab.store.atomic import atomic_write_text

CLAIMS_FILE = "claims.json"


def _num(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def claim_one_record(claims: Claims) -> dict[str, Any]:
    test = claims.frontier
    if test is None:
        return {"verdict": None, "margin": None, "largest_gap": None, "pair": None, "at_kl": None}
    return {
        "verdict": test.verdict,
        "margin": test.margin,
        "largest_gap": _num(test.largest_gap),
        "pair": list(test.pair),
        "at_kl": _num(test.at_kl),
        "interval": [_num(test.band[0]), _num(test.band[1])],
        "level": test.level,
        "critical": _num(test.critical),
        "widest": _num(test.widest),
        "pairs": test.pairs,
        "replicates": test.replicates,
    }


def claim_two_record(claims: Claims) -> dict[str, Any]:
    """The best-beta module's record where it offers one, else the paper groups' ratio under its keys."""
    record = getattr(claim_two, "claim_two_record", None)
    if record is not None:
        return record(claims.bests, claims.level)
    ratio = claims.ratio
    judged = ratio is not None and ratio.judged
    verdict = "inconclusive"
    if judged and ratio.contains_theory is not None:
        verdict = "consistent" if ratio.contains_theory else "inconsistent"
    return {
        "verdict": verdict,
        "ratio": _num(ratio.measured) if judged else None,
        "interval": [_num(ratio.low), _num(ratio.high)] if judged else None,
        "theory": ratio.theory if ratio is not None else None,
        "slope": None,
        "slope_interval": None,
    }


def claims_record(claims: Claims) -> dict[str, Any]:
    best = {
        b.loss: {
            "best_beta": _num(b.best) if b.claimable else None,
            "interval": [_num(b.low), _num(b.high)] if b.claimable else None,
            "note": b.note,
        }
        for b in claims.bests
    }
    return {"claim_1": claim_one_record(claims), "claim_2": claim_two_record(claims), "best_beta": best}


def write_claims(claims: Claims, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """``extra``: further entries (``online_offline`` of a sweep with online jobs)."""
    path = Path(out) / CLAIMS_FILE
    atomic_write_text(path, json.dumps(claims_record(claims) | (extra or {}), indent=2) + "\n")
    return path
