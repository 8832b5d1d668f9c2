import pytest

from ragar.config import ConfigError, load_config, parse_override


def test_layering_order(tmp_path):
    assert load_config().world.image_size == 64
    assert load_config("tiny").world.image_size == 32  # named config over defaults
    cfg = load_config("tiny", ["world.image_size=48", "preference.top_k=3"])  # --set over named
    assert cfg.world.image_size == 48 and cfg.preference.top_k == 3
    assert cfg.world.n_users == 40  # untouched keys keep the named config's value
    f = tmp_path / "mine.yaml"
    f.write_text("world:\n  n_users: 7\n")
    assert load_config(str(f)).world.n_users == 7


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("world:\n  n_userz: 7\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert "world.n_userz" in str(e.value) and "unknown key" in str(e.value) and str(f) in str(e.value)


def test_wrong_type_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("world:\n  image_size: big\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert "world.image_size" in str(e.value) and str(f) in str(e.value)
    with pytest.raises(ConfigError, match=r"world.image_size.*--set"):
        load_config(None, ["world.image_size=8"])  # below the 32 px minimum


def test_bad_yaml_and_unknown_name(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("world: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(f))
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-config")


def test_parse_override():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a=[x, y]") == {"a": ["x", "y"]}
    with pytest.raises(ConfigError):
        parse_override("novalue")
