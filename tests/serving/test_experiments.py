import hashlib

import pytest

from serving.experiments import BUCKETS, Arm, Experiment, ExperimentsError, load_experiments


def _exp(**kw):
    return Experiment(name="e", salt=kw.pop("salt", "s"), arms=[Arm(name="a", share=0.3), Arm(name="b", share=0.7)],
                      **kw)


def test_assignment_is_deterministic_and_follows_shares():
    e = _exp()
    users = [f"u{i:06d}" for i in range(20_000)]
    first = [e.assign(u).name for u in users]
    assert first == [_exp().assign(u).name for u in users]  # a fresh object (a restart) assigns the same
    share_a = first.count("a") / len(users)
    assert abs(share_a - 0.3) < 0.015
    assert all(0 <= e.bucket(u) < BUCKETS for u in users[:100])


def test_salt_reshuffles_and_allowlist_forces():
    users = [f"u{i}" for i in range(2000)]
    a, b = _exp(salt="one"), _exp(salt="two")
    changed = sum(a.assign(u).name != b.assign(u).name for u in users) / len(users)
    assert 0.3 < changed < 0.55  # independent hashes: 2 * 0.3 * 0.7 = 0.42 expected
    forced = _exp(allowlist={"qa": "a"})
    assert forced.assign("qa").name == "a"
    natural = next(u for u in users if _exp().assign(u).name == "b")
    assert _exp(allowlist={natural: "a"}).assign(natural).name == "a"


def test_invalid_definitions_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"sum to 0\.9"):
        Experiment(name="e", salt="s", arms=[Arm(name="a", share=0.4), Arm(name="b", share=0.5)])
    with pytest.raises(ValueError, match="unknown arms"):
        _exp(allowlist={"u": "zzz"})
    with pytest.raises(ValueError, match="repeat"):
        Experiment(name="e", salt="s", arms=[Arm(name="a", share=0.5), Arm(name="a", share=0.5)])


def test_yaml_errors_name_the_file_and_the_key(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("experiments:\n  - name: e\n    salt: s\n    arms:\n      - {name: a, share: 1.0, settings: "
                 "{method: ragar, bogus: 1}}\n")
    with pytest.raises(ExperimentsError) as e:
        load_experiments(p)
    assert str(p) in str(e.value) and "experiments.0.arms.0.settings.bogus" in str(e.value)
    p.write_text("experiments:\n  - name: e\n    salt: s\n    arms:\n      - {name: a, share: lots}\n")
    with pytest.raises(ExperimentsError, match=r"experiments\.0\.arms\.0\.share"):
        load_experiments(p)
    p.write_text("experiments: [\n")
    with pytest.raises(ExperimentsError, match=str(p)):
        load_experiments(p)


def test_shipped_experiments_file_loads():
    from pathlib import Path

    exps = load_experiments(Path(__file__).resolve().parents[2] / "configs" / "experiments.yaml")
    names = {a.name for a in exps.experiments[0].arms}
    assert names == {"ragar", "uniform"}


#: (salt, user id) -> (bucket, arm of a 50/50 split, arm of a three-way split in thirds). Pinned:
#: a change to the hash, the bytes it takes, the bucket count or the walk over the shares would
#: silently move every user of a running experiment to another arm; these fail first.
GOLDEN = [
    ("s1", "u000001", 255, "a", "a"),
    ("s1", "u000002", 9161, "b", "c"),
    ("ragar-vs-uniform-2026-11", "u000025", 3847, "a", "b"),
    ("ragar-vs-uniform-2026-11", "qa", 3605, "a", "b"),
    ("salt-ü", "ユーザー", 7505, "b", "c"),
    ("x", "", 1744, "a", "a"),
]


@pytest.mark.parametrize("salt,user,bucket,half,third", GOLDEN)
def test_assignment_golden_vectors(salt, user, bucket, half, third):
    two = Experiment(name="e", salt=salt, arms=[Arm(name="a", share=0.5), Arm(name="b", share=0.5)])
    three = Experiment(name="e", salt=salt, arms=[Arm(name=n, share=1 / 3) for n in "abc"])
    assert two.bucket(user) == bucket
    assert two.assign(user).name == half and three.assign(user).name == third
    # the documented rule, spelled out: sha256("salt:user"), first 8 bytes big-endian, mod 10,000
    assert int.from_bytes(hashlib.sha256(f"{salt}:{user}".encode()).digest()[:8], "big") % 10_000 == bucket
