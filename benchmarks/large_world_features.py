"""Feature building for the ranker on the large world's test window: time, rows/s, peak RSS.

    ragar world build --size large --out /tmp/large_world
    ragar train encoder --data runs/demo/world --out /tmp/cenc      # a fast encoder for 100k images
    python -m benchmarks.large_world_features /tmp/large_world /tmp/cenc
"""
import resource
import sys
import time

import numpy as np
import polars as pl

from ragar.encoders.catalog import embed_catalog
from ragar.encoders.registry import build_image_encoder
from recsys.data.io import scan_interactions
from recsys.data.splits import global_time_split
from recsys.ranking.features import ItemTable, build_features, impressions_with_labels

root, encoder_dir = sys.argv[1], sys.argv[2]
t = time.time()
emb = embed_catalog(root, build_image_encoder(f"contrastive:{encoder_dir}"), None, progress=False)
print("embed s", round(time.time() - t, 1), emb.image.shape, flush=True)
items = pl.read_parquet(f"{root}/items.parquet")
cats = sorted(items["category"].unique().to_list())
ci = {c: i for i, c in enumerate(cats)}
it = ItemTable(emb.ids, emb.image, emb.image, np.asarray([ci[c] for c in items["category"]]), cats)
inter = scan_interactions(root).collect()
_, test = global_time_split(inter, 0.8)
samples = impressions_with_labels(test)
print("test impressions", samples.height, "requests", samples["request_id"].n_unique(), flush=True)
t = time.time()
fb = build_features(samples, inter, it, chunk=1024)
dt = time.time() - t
print("features s", round(dt, 1), "rows/s", round(samples.height / dt), fb.features.shape, flush=True)
print("peak RSS GiB", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2))
