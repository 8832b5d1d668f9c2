"""How much of a preference's weight sits on the user's own style: a world-oracle check of the
preference weights alone, without the generator (seconds, not the generation evaluation's minutes).

For each request (user, reference), the weights :func:`recsys.preference.weigh_histories` puts on
the user's history are read against the world's true item attributes: the weight mass on items in
the user's ideal palette for the reference's category, whether the heaviest palette is that ideal
one (what the generator tends to render: its ideal-palette rate follows this closely), the weighted
oracle utility of the history items, and the mass on the reference's own category. Used to choose
``preference.event_weights`` (docs/RESULTS.md), on requests drawn with another seed than the
generation evaluation's.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from recsys.history import HistoryBatch
from recsys.preference import PreferenceConfig, weigh_histories
from recsys.world.oracle import World, user_index


def history_purity(world: World, requests: pl.DataFrame, history: HistoryBatch, vectors: np.ndarray,
                   reference: np.ndarray, config: PreferenceConfig) -> dict[str, float]:
    """Means over ``requests`` (columns user_id, category) of the four figures in the module doc;
    ``history`` and ``reference`` are the requests' histories and reference embeddings, in order."""
    res = weigh_histories(history, vectors, torch.as_tensor(reference), config)
    w_all = res.weights.numpy()
    items = world.items.select("item_id", "category", "palette", "pattern", "finish")
    attr = {r[0]: r[1:] for r in items.iter_rows()}
    o = world.oracle
    cats = requests["category"].to_list()
    ui, ci = user_index(requests["user_id"].to_list()), o.category_index(cats)
    ideal = o.ideal_style(ui, ci)[0]
    mass, top, util, same = [], [], [], []
    for b in range(requests.height):
        n = len(history.item_ids[b])
        w = w_all[b, :n]
        a = [attr[i] for i in history.item_ids[b]]
        cat = np.array([x[0] for x in a], dtype=object)
        pal, pat, fin = (np.array([x[k] for x in a], dtype=np.int64) for k in (1, 2, 3))
        mass.append(float(w[pal == ideal[b]].sum()))
        same.append(float(w[cat == cats[b]].sum()))
        top.append(bool(w.sum() > 0 and np.bincount(pal, weights=w, minlength=6).argmax() == ideal[b]))
        util.append(float((w * o.utility(np.full(n, ui[b]), np.full(n, ci[b]), pal, pat, fin)).sum()))
    return {"mass_on_ideal_palette": float(np.mean(mass)), "heaviest_palette_is_ideal": float(np.mean(top)),
            "weighted_utility": float(np.mean(util)), "mass_on_reference_category": float(np.mean(same))}
