"""How well the automatic metrics agree with people's pairwise judgments.

A judgment says which of two candidates (two methods, same seed, one image each) fits the user
better and which keeps the reference's identity better. For each automatic score stored with the
exposures (``preference_fit``: the ranker's click probability; ``identity``: cosine to the reference
in the identity encoder's space; ``selection``: the best-of-N trade-off) and any extra per-request
score the caller adds (the world's oracle utility, say), we report

* **pairwise accuracy**: the share of judgments where the higher score is the side people chose
  (ties count a half);
* **Kendall's tau** (tau-b, scipy) between the score difference ``a - b`` and the choice (+1 for a).

Preference-type scores are compared with the preference choices, identity-type scores with the
identity choices. The same judgments also export as ranked pairs for the CLPIPS fit
(reference, a, b, closer = the identity choice).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import kendalltau

PREFERENCE_SCORES = ("preference_fit", "selection")
IDENTITY_SCORES = ("identity",)


def judgment_scores(store, extra: dict[str, dict[str, float]] | None = None) -> pl.DataFrame:
    """One row per judgment with ``<score>_a`` / ``<score>_b`` for every score, and the choices."""
    j = store.judgments_frame()
    if j.height == 0:
        return j
    ids = sorted(set(j["request_a"]) | set(j["request_b"]))
    payloads = store.payloads(ids)
    rows = []
    for r in j.iter_rows(named=True):
        row = dict(r)
        for side in ("a", "b"):
            cand = payloads[r[f"request_{side}"]]["candidates"][0]
            for k in (*PREFERENCE_SCORES, *IDENTITY_SCORES):
                row[f"{k}_{side}"] = cand.get(k)
            for name, values in (extra or {}).items():
                row[f"{name}_{side}"] = values.get(r[f"request_{side}"])
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def agreement(scores: pl.DataFrame, name: str, choice: str) -> dict:
    """Pairwise accuracy and Kendall's tau of score ``name`` against the ``choice`` column."""
    a = scores[f"{name}_a"].cast(pl.Float64).to_numpy()
    b = scores[f"{name}_b"].cast(pl.Float64).to_numpy()
    ok = np.isfinite(a) & np.isfinite(b)
    human = np.where(scores[choice].to_numpy() == "a", 1.0, -1.0)[ok]
    d = (a - b)[ok]
    if len(d) == 0:
        return {"metric": name, "judged_by": choice, "pairs": 0, "pairwise_accuracy": None, "kendall_tau": None,
                "p_value": None}
    acc = float(np.mean(np.where(d == 0, 0.5, (np.sign(d) == human).astype(float))))
    tau, p = kendalltau(d, human) if len(d) > 1 and np.ptp(d) > 0 else (np.nan, np.nan)
    return {"metric": name, "judged_by": choice, "pairs": len(d), "pairwise_accuracy": acc,
            "kendall_tau": None if np.isnan(tau) else float(tau), "p_value": None if np.isnan(p) else float(p)}


def alignment_table(scores: pl.DataFrame, extra_preference: tuple[str, ...] = ()) -> list[dict]:
    rows = [agreement(scores, k, "preference_choice") for k in (*PREFERENCE_SCORES, *extra_preference)]
    rows += [agreement(scores, k, "identity_choice") for k in IDENTITY_SCORES]
    return rows


def export_ranked_pairs(store, images_dir: Path, reference_images: dict[str, str], out: Path) -> int:
    """Write the identity judgments as a CLPIPS ranked-pairs CSV (absolute paths); returns the count."""
    from serving.service import image_path

    j = store.judgments_frame()
    rows = []
    ex = store.exposures_frame()
    ref_of = dict(zip(ex["request_id"], ex["reference_item_id"], strict=True))
    for r in j.iter_rows(named=True):
        ref = reference_images.get(ref_of.get(r["request_a"]) or "")
        if ref is None:
            continue  # an uploaded reference was not kept
        rows.append({"reference": str(Path(ref).resolve()),
                     "a": str(image_path(images_dir, r["request_a"], 0).resolve()),
                     "b": str(image_path(images_dir, r["request_b"], 0).resolve()),
                     "closer": r["identity_choice"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema={"reference": pl.Utf8, "a": pl.Utf8, "b": pl.Utf8, "closer": pl.Utf8}).write_csv(out)
    return len(rows)
