"""Tables of what ran on a lent GPU machine: the device check (docs/SCALING.md) and the 128-px
generator recipe (docs/GENERATION.md). Kept apart from :mod:`eval.results_renderers` because their
JSON comes back from another machine; ``make results`` renders them but cannot rerun them there."""

from __future__ import annotations

from collections.abc import Callable

from eval.results_renderers import _fmt, _quantity


def _column(d: dict) -> str:
    return d.get("card", "?") if any(r.get("accelerator") is not None for r in d["rows"]) else \
        f"CPU ({d.get('cpu_threads', '?')} threads)"


def device_table(d: dict) -> str:
    """``scripts/device-check.sh`` (``benchmarks/results/device-<card>.json``): each figure on the
    accelerator beside the same machine's CPU (the CPU column alone where no card ran). Given
    several JSONs (``{path: json}``: a card's run without its CPU column, and the development
    machine's CPU run), one column each, the first's figures against the last's in the ratio."""
    runs = list(d.values()) if "rows" not in d else [d]
    if len(runs) == 1 and any(r.get("cpu") is not None and r.get("accelerator") is not None for r in d["rows"]):
        return _same_machine(d)
    value = [{r["figure"]: r["accelerator"] if r.get("accelerator") is not None else r.get("cpu")
              for r in run["rows"]} for run in runs]
    units = {r["figure"]: r["unit"] for run in runs for r in run["rows"]}
    heads = [f"{_column(run)}{' (development machine)' if i and len(runs) > 1 else ''}" for i, run in enumerate(runs)]
    ratio = len(runs) > 1
    out = ["| figure | " + " | ".join(heads) + (" | ratio |" if ratio else " |"),
           "|---|" + "---|" * (len(runs) + ratio)]
    for fig, unit in units.items():
        cells = [f"{_quantity(v[fig], '')} {unit}" if v.get(fig) is not None else "—" for v in value]
        a, b = value[0].get(fig), value[-1].get(fig)
        r = (a / b if unit in ("images/s", "requests/s", "steps/s") else b / a) if ratio and a and b else None
        out.append(f"| {fig} | " + " | ".join(cells) + (f" | {_fmt(r, 1)} |" if ratio else " |"))
    src = "; ".join(f"*`{run.get('command')}` ({run.get('device', run.get('card'))}, commit "
                    f"{(run.get('commit') or 'not recorded')[:7]}, {str(run.get('date', '?'))[:10]})*" for run in runs)
    return "\n".join(out) + f"\n\n{src}\n"


def _same_machine(d: dict) -> str:
    """One run with both columns: the card and the CPU of the same machine."""
    out = [f"| figure | {d.get('card', '?')} | CPU ({d.get('cpu_threads', '?')} threads) | ratio |",
           "|---|---|---|---|"]
    for r in d["rows"]:
        out.append(f"| {r['figure']} | {_quantity(r['accelerator'], '')} {r['unit']} | "
                   f"{_quantity(r['cpu'], '')} {r['unit']} | {_fmt(r.get('ratio'), 1)} |")
    return "\n".join(out) + f"\n\n*`{d.get('command')}` (commit {(d.get('commit') or 'not recorded')[:7]}, " \
                            f"{str(d.get('date', '?'))[:10]})*\n"


def recipe_table(d: dict) -> str:
    """``python -m ragar.generation.recipe`` (``recipe.json``): each stage's steps, loss, held-out
    PSNR where it has one, and wall time on the card."""
    out = ["| stage | steps | batch | loss, first → final | held-out PSNR | seconds | images/s |",
           "|---|---|---|---|---|---|---|"]
    ex = d.get("export", {})
    batch = {"autoencoder": ex.get("autoencoder", {}).get("batch_size"),
             "autoencoder-robust": ex.get("autoencoder", {}).get("batch_size"),
             "generator": ex.get("generator", {}).get("batch_size")}
    for s in d["stages"]:
        secs = s.get("seconds_this_run", s.get("seconds"))
        b = batch.get(s["stage"])
        psnr = f"{s['psnr_held_out']:.1f} dB" if s.get("psnr_held_out") is not None else "—"
        rate = _quantity(s["steps"] * b / secs, "") if b and secs else "—"
        out.append(f"| {s['stage']} | {s['steps']:,} | {b or '—'} | {_fmt(s.get('first_loss'))} → "
                   f"{_fmt(s.get('final_loss'))} | {psnr} | {secs:.0f} | {rate} |")
    return "\n".join(out) + (f"\n\n{d['pairs']:,} pairs rendered at {d['image_size']} px in {d['render_s']:.0f} s; "
                             f"{d['seconds']:.0f} s in all on {d.get('card', d.get('device'))} "
                             f"(torch {d.get('torch')}). *`{(d.get('provenance') or {}).get('command', '?')}`*\n")


GPU_TABLES: dict[str, Callable[[dict], str]] = {"device_table": device_table, "recipe_table": recipe_table}
