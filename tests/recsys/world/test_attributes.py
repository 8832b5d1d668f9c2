"""The attribute reader: head layout, the part loss over the right slices, reading, persistence."""

import numpy as np
import pytest
import torch

from recsys.world.attributes import AttributeReader, AttributeReaderConfig, _part_slots, images_to_tensor, max_parts
from recsys.world.render import CATEGORIES


def test_part_slots_cover_every_variant_once():
    slots = _part_slots(list(CATEGORIES))
    assert slots[0] == ("mug", "handle", 0, 3) and slots[1] == ("mug", "lid", 3, 2)
    total = sum(k for p in CATEGORIES.values() for k in p.values())
    assert slots[-1][2] + slots[-1][3] == total
    assert max_parts() == 2


def test_part_loss_reads_only_the_true_category_slices():
    m = AttributeReader(AttributeReaderConfig(image_size=16, width=8))
    n_out = m.heads["parts"].out_features
    logits = torch.zeros(1, n_out)
    # a mug with handle=2, lid=1: make exactly those logits large, everything else irrelevant
    logits[0, 2] = 50.0
    logits[0, 3 + 1] = 50.0
    logits[0, 5:] = torch.randn(n_out - 5) * 100  # other categories' slices must not matter
    loss = m.part_loss(logits, torch.tensor([0]), torch.tensor([[2, 1]]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    wrong = m.part_loss(logits, torch.tensor([0]), torch.tensor([[0, 0]]))
    assert wrong.item() == pytest.approx(100.0, rel=1e-3)  # two parts, each off by a 50-logit margin


def test_read_and_round_trip(tmp_path):
    torch.manual_seed(0)
    m = AttributeReader(AttributeReaderConfig(image_size=16, width=8))
    imgs = np.random.default_rng(0).integers(0, 255, size=(5, 24, 24, 3), dtype=np.uint8)
    x = images_to_tensor(imgs, 16)
    assert x.shape == (5, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    r = m.read(x)
    assert r["category"].shape == (5,) and r["parts"].shape == (5, 2)
    assert np.allclose(r["palette_prob"].sum(1), 1, atol=1e-5)
    m.save_pretrained(tmp_path)
    r2 = AttributeReader.from_pretrained(tmp_path).read(x)
    for k in r:
        np.testing.assert_array_equal(r[k], r2[k])
