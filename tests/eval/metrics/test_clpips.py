"""CLPIPS: distances on hand-made feature maps, the fit recovers an informative layer, the ranked
pairs reader, ICC, and the world pipeline end to end on the tiny world."""

import numpy as np
import pytest
import torch

from eval.metrics.clpips import (
    CLPIPS,
    CLPIPSConfig,
    CLPIPSScore,
    clpips_distance,
    evaluate_pairs,
    fit_weights,
    icc_2_1,
    layer_distances,
    read_ranked_pairs,
)


def test_layer_distance_hand_computed_and_identical_images():
    fx = [torch.tensor([[[[1.0]], [[0.0]]]])]  # one position, two channels: unit vector (1, 0)
    fy = [torch.tensor([[[[0.0]], [[3.0]]]])]  # normalises to (0, 1)
    assert layer_distances(fx, fy).item() == pytest.approx(2.0)
    assert layer_distances(fx, fx).item() == 0.0
    assert clpips_distance(fx, fy).item() == pytest.approx(2.0)
    m = CLPIPSScore()
    m.update(fx, fy)
    m.update(fx, fx)
    assert m.compute().item() == pytest.approx(1.0) and CLPIPSScore.higher_is_better is False


def test_unfitted_weights_are_one_and_round_trip(tmp_path):
    m = CLPIPS(CLPIPSConfig(3))
    assert torch.allclose(m.weights, torch.ones(3), atol=1e-4)
    m.save_pretrained(tmp_path)
    assert torch.equal(CLPIPS.from_pretrained(tmp_path).weights, m.weights)


def test_fit_learns_the_informative_layer():
    g = torch.Generator().manual_seed(0)
    n = 400
    # layer 0 carries the judgment, layer 1 is large noise that swamps it when weighted equally
    signal_a, signal_b = torch.rand(n, generator=g), torch.rand(n, generator=g)
    da = torch.stack([signal_a, 5 * torch.rand(n, generator=g)], 1)
    db = torch.stack([signal_b, 5 * torch.rand(n, generator=g)], 1)
    a_closer = signal_a < signal_b
    before = evaluate_pairs(None, da, db, a_closer)["2afc"]
    model = fit_weights(da[:300], db[:300], a_closer[:300], 2)
    after = evaluate_pairs(model, da[300:], db[300:], a_closer[300:])["2afc"]
    assert before < 0.75 and after > 0.95
    assert model.weights[0] > 5 * model.weights[1]


def test_icc_perfect_and_none():
    x = np.arange(10.0)
    assert icc_2_1(x, x) == pytest.approx(1.0)
    assert icc_2_1(x, x[::-1]) < 0


def test_read_ranked_pairs_errors(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("reference,a,b\nr,x,y\n")
    with pytest.raises(ValueError, match="missing columns \\['closer'\\]"):
        read_ranked_pairs(p)
    p.write_text("reference,a,b,closer\nr,x,y,c\n")
    with pytest.raises(ValueError, match="'a' or 'b'"):
        read_ranked_pairs(p)
    with pytest.raises(FileNotFoundError):
        read_ranked_pairs(tmp_path / "none.csv")
    p.write_text("reference,a,b,closer\nr,x,y,b\n")
    assert read_ranked_pairs(p).height == 1


def test_world_pairs_and_fit_end_to_end(tiny_world):
    from eval.metrics.clpips import fit_and_evaluate, world_ranked_pairs
    from ragar.encoders.efficientnet import EfficientNetLiteEncoder

    pairs = world_ranked_pairs(tiny_world, 60, seed=0)
    assert pairs.height == 60 and ((pairs["closer"] == "a") == (pairs["dist_a"] < pairs["dist_b"])).all()
    _, rep = fit_and_evaluate(EfficientNetLiteEncoder(64), pairs, tiny_world, progress=False)
    assert rep["layers"] == len(rep["weights"]) >= 5 and rep["held_out_pairs"] + rep["train_pairs"] == 60
    for k in ("unfitted", "fitted"):
        assert 0 <= rep[k]["2afc"] <= 1 and -1 <= rep[k]["spearman"] <= 1
