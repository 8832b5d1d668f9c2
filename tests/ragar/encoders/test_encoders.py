
import numpy as np
import polars as pl
import pytest
from PIL import Image

from ragar.encoders.base import ImageInputError, load_rgb
from ragar.encoders.catalog import CACHE_DIR, combine, embed_catalog
from ragar.encoders.registry import build_image_encoder, build_text_encoder


@pytest.fixture(scope="module")
def effnet():
    return build_image_encoder("efficientnet-lite0", 64)


def _imgs(world, n=6):
    items = pl.read_parquet(world / "items.parquet")
    return [str(world / p) for p in items["image"][:n]], items


def test_efficientnet_embeddings(effnet, tiny_world):
    paths, items = _imgs(tiny_world)
    e = effnet.encode(paths, batch_size=4)
    assert e.shape == (6, 1280) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # same batch twice -> same output; batching does not change results
    np.testing.assert_allclose(effnet.encode(paths, batch_size=6), e, atol=1e-5)
    # pretrained features see that two renders of one item are closer than different categories
    views = pl.read_parquet(tiny_world / "views.parquet").filter(pl.col("kind") == "view")
    a = views.filter(pl.col("item_id") == items["item_id"][0])["image"].to_list()[:2]
    other = items.filter(pl.col("category") != items["category"][0])["image"][0]
    v = effnet.encode([str(tiny_world / p) for p in [*a, other]])
    assert v[0] @ v[1] > v[0] @ v[2]


def test_the_cpu_forward_batch_gives_the_whole_batch_bits(tiny_world):
    """EfficientNet runs 8 images at a time on a CPU (faster: the activations stay in cache); its
    vectors, and so every cache and number built on them, must be those of the whole batch."""
    import copy

    enc = build_image_encoder("efficientnet-lite0", 224)
    assert enc.cpu_forward_batch == 8
    paths, _ = _imgs(tiny_world, n=20)
    whole = copy.copy(enc)
    whole.cpu_forward_batch = None
    np.testing.assert_array_equal(enc.encode(paths, batch_size=20), whole.encode(paths, batch_size=20))


def test_fingerprint_changes_with_preprocessing(effnet):
    other = build_image_encoder("efficientnet-lite0", 96)
    assert other.fingerprint != effnet.fingerprint
    assert build_image_encoder("efficientnet-lite0", 64).fingerprint == effnet.fingerprint


def test_bad_images_are_named(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageInputError, match="not a readable image"):
        load_rgb(bad)
    with pytest.raises(ImageInputError, match="exceeds"):
        load_rgb(np.zeros((300, 300, 3), np.uint8), max_pixels=1000)
    with pytest.raises(ImageInputError, match="NaN"):
        load_rgb(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ImageInputError, match="not an HxWx3"):
        load_rgb(np.zeros((4, 4, 7), np.uint8))
    assert load_rgb(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)  # greyscale is promoted


def test_minilm_text_encoder():
    t = build_text_encoder("minilm")
    e = t.encode(["red striped mug", "red striped mug with a lid", "blue lamp with a cone shade"])
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]
    assert build_text_encoder("none") is None


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_vision_tiny_random_roundtrip(tmp_path, kind):
    """A tiny randomly initialised model saved to disk and loaded through the user's code path."""
    import torch

    if kind == "clip":
        from transformers import CLIPConfig as C
        from transformers import CLIPModel as M
    else:
        from transformers import SiglipConfig as C
        from transformers import SiglipModel as M
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                vocab_size=99, max_position_embeddings=16)
    cfg = C(text_config=text, vision_config=vision, **({"projection_dim": 16} if kind == "clip" else {}))
    M(cfg).save_pretrained(tmp_path / "m")
    enc = build_image_encoder(f"{kind}:{tmp_path / 'm'}")
    img = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    e = enc.encode(img)
    assert e.shape == (3, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    with pytest.raises(FileNotFoundError):
        build_image_encoder(f"{kind}:{tmp_path / 'missing'}")


def test_unknown_encoder_spec():
    with pytest.raises(ValueError, match="unknown image encoder"):
        build_image_encoder("resnet9000")


def test_catalog_cache_and_invalidation(tiny_world, tmp_path, effnet):
    import shutil

    root = tmp_path / "w"
    shutil.copytree(tiny_world, root)
    emb = embed_catalog(root, effnet, None, progress=False)
    cache = list((root / CACHE_DIR).glob("image-*.npy"))
    assert len(cache) == 1 and effnet.fingerprint in cache[0].name
    mtime = cache[0].stat().st_mtime_ns
    again = embed_catalog(root, effnet, None, progress=False)
    assert cache[0].stat().st_mtime_ns == mtime  # served from the cache
    np.testing.assert_array_equal(again.image, emb.image)
    # another item set under the same root (the ranker's oracle check embeds other views) gets its
    # own file and leaves the catalog's alone: they used to overwrite each other
    import polars as pl

    part = pl.read_parquet(root / "items.parquet").head(2)
    sub = embed_catalog(root, effnet, None, items=part, progress=False)
    np.testing.assert_array_equal(sub.image, emb.image[:2])
    assert len(list((root / CACHE_DIR).glob("image-*.npy"))) == 2
    embed_catalog(root, effnet, None, progress=False)
    assert cache[0].stat().st_mtime_ns == mtime
    other = build_image_encoder("efficientnet-lite0", 96)
    embed_catalog(root, other, None, progress=False)
    assert len(list((root / CACHE_DIR).glob("image-*.npy"))) == 3  # a changed encoder is a new key
    assert emb.lookup([emb.ids[3]])[0] == 3
    with pytest.raises(KeyError):
        emb.lookup(["nope"])


def test_combine_is_unit_norm_and_mixes_cosines():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = rng.normal(size=(5, 4))
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    c = combine(a, b, 0.3)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(c[0] @ c[1], 0.7 * (a[0] @ a[1]) + 0.3 * (b[0] @ b[1]), atol=1e-6)


def test_pil_input(effnet):
    im = Image.fromarray(np.zeros((20, 30, 3), np.uint8))
    assert effnet.encode([im]).shape == (1, 1280)


def test_contrastive_encoder_trains_saves_and_loads(tiny_world, tmp_path):
    from ragar.encoders.contrastive import SmallConvConfig, train_contrastive_encoder

    cfg = SmallConvConfig(image_size=32, channels=(8, 16), dim=16)
    losses = train_contrastive_encoder(tiny_world, tmp_path / "enc", steps=30, batch_size=16, config=cfg,
                                       progress=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # the loss falls
    enc = build_image_encoder(f"contrastive:{tmp_path / 'enc'}")
    paths, _ = _imgs(tiny_world, 4)
    e = enc.encode(paths)
    assert e.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    again = build_image_encoder.__wrapped__(f"contrastive:{tmp_path / 'enc'}")  # a fresh load
    np.testing.assert_allclose(again.encode(paths), e, atol=1e-6)
    assert again.fingerprint == enc.fingerprint
    with pytest.raises(FileNotFoundError, match="no trained small-conv model"):
        build_image_encoder.__wrapped__(f"contrastive:{tmp_path / 'none'}")


def test_fingerprint_does_not_depend_on_the_thread_count():
    """Under `accelerate launch` each process has one thread; its cache keys must match a run with
    all cores, or every process re-embeds the catalog (a torch sum's last bits follow the threads)."""
    import torch

    from ragar.encoders.base import fingerprint

    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(1_000_000, generator=g) * 0.05, "b": torch.randn(7, generator=g)}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fingerprint("x", {}, state)
        torch.set_num_threads(max(2, threads))
        many = fingerprint("x", {}, state)
    finally:
        torch.set_num_threads(threads)
    assert one == many
    assert fingerprint("x", {}, {**state, "b": state["b"] + 1e-3}) != one


def test_to_batch_stacks_one_size_and_matches_the_per_image_path():
    import numpy as np
    import torch

    from ragar.encoders.base import to_batch

    rng = np.random.default_rng(0)
    same = [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(5)]
    mixed = [*same, rng.integers(0, 256, (33, 17, 3), dtype=np.uint8)]
    stacked = to_batch(same, 48, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    per_image = to_batch(mixed, 48, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))  # two sizes: one image at a time
    assert stacked.shape == (5, 3, 48, 48) and per_image.shape == (6, 3, 48, 48)
    torch.testing.assert_close(stacked, per_image[:5], rtol=0, atol=0)
    on = to_batch(same, 20, (0.5,) * 3, (0.5,) * 3, device="cpu")  # the size already right: no resize
    torch.testing.assert_close(on, torch.from_numpy(np.stack(same)).permute(0, 3, 1, 2).float() / 127.5 - 1)
