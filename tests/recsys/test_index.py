import numpy as np
import pytest

from recsys.index import ItemIndex


def _vecs(n, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_flat_is_exact_and_maps_ids():
    x = _vecs(200)
    ids = [f"item{i}" for i in range(200)]
    idx = ItemIndex.build(ids, x)
    assert idx.kind == "flat"
    res = idx.search(x[:5], k=3)
    assert list(res.ids[:, 0]) == ids[:5]
    np.testing.assert_allclose(res.scores[:, 0], 1.0, atol=1e-5)
    assert idx.recall_at_k(_vecs(20, seed=1), 10) == 1.0


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_past_the_threshold(kind):
    x = _vecs(4000, 32)
    idx = ItemIndex.build([str(i) for i in range(4000)], x, exact_below=1000, kind=kind,
                          ivf_nlist=64, ivf_nprobe=32)
    assert idx.kind == kind
    rec = idx.recall_at_k(_vecs(100, 32, seed=2), 10)
    assert rec > 0.8


def test_save_load_and_incremental_add(tmp_path):
    x = _vecs(100)
    idx = ItemIndex.build([f"a{i}" for i in range(100)], x)
    idx.save(tmp_path / "ix")
    back = ItemIndex.load(tmp_path / "ix")
    assert back.ids == idx.ids
    q = _vecs(4, seed=5)
    assert (back.search(q, 5).ids == idx.search(q, 5).ids).all()
    back.add(["new"], q[:1])
    assert back.search(q[:1], 1).ids[0, 0] == "new"
    assert len(back) == 101


def test_errors():
    idx = ItemIndex.build(["a", "b"], _vecs(2))
    with pytest.raises(ValueError, match="duplicate"):
        idx.add(["a"], _vecs(1))
    with pytest.raises(ValueError, match="dim"):
        idx.search(_vecs(1, d=8), 1)
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.full((1, 16), np.nan, np.float32), 1)
    with pytest.raises(ValueError, match="zero"):
        idx.add(["z"], np.zeros((1, 16), np.float32))
    with pytest.raises(KeyError, match="unknown item"):
        idx.position("nope")
    res = idx.search(_vecs(1), k=5)  # k larger than the catalog: padded, not an error
    assert list(res.ids[0, 2:]) == ["", "", ""] and np.isinf(res.scores[0, 2:]).all()
