"""The event store on SQLite and on PostgreSQL: the same tests, both databases."""

import pytest
import sqlalchemy as sa

from serving.store import EventStore, FeedbackConflict, NotYours, StoreUnavailable, UnknownRequest
from tests.serving.helpers import drop_pg, fresh_pg


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'ev.db'}" if request.param == "sqlite" else fresh_pg()
    s = EventStore(url)
    assert s.migrate() == "0004"
    yield s
    s.dispose()
    if request.param == "postgresql":
        drop_pg(url)


def _expose(store, rid="r1", n=2, arm="a", user="u1", key="k1"):
    store.record_exposure(request_id=rid, experiment="e", arm=arm, user_id=user, reference_item_id="i1",
                          reference_source="catalog", method="ragar", n=n, seed=7, chosen=1, fallback=None,
                          payload={"candidates": [{"identity": 0.5}] * n}, api_key=key)


def test_migrations_are_idempotent_and_match_the_tables(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from serving.tables import metadata

    assert store.migrate() == "0004"  # running again changes nothing
    with store.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    assert diff == []


def test_exposure_and_idempotent_feedback(store):
    _expose(store)
    e = store.exposure("r1")
    assert (e["arm"], e["n"], e["seed"], e["payload"]["candidates"][0]["identity"]) == ("a", 2, 7, 0.5)
    f1 = store.record_feedback(idempotency_key="k-000001", request_id="r1", image_index=1, event="click")
    f2 = store.record_feedback(idempotency_key="k-000001", request_id="r1", image_index=1, event="click")
    assert not f1.duplicate and f2.duplicate and f1.id == f2.id and f1.arm == "a"
    assert store.feedback_frame().height == 1
    with pytest.raises(FeedbackConflict):
        store.record_feedback(idempotency_key="k-000001", request_id="r1", image_index=0, event="like")
    with pytest.raises(UnknownRequest):
        store.record_feedback(idempotency_key="k-000002", request_id="nope", image_index=0, event="click")
    with pytest.raises(ValueError, match="out of range"):
        store.record_feedback(idempotency_key="k-000003", request_id="r1", image_index=2, event="click")
    with pytest.raises(ValueError, match="unknown event"):
        store.record_feedback(idempotency_key="k-000004", request_id="r1", image_index=0, event="purchase")
    assert store.feedback_frame().height == 1


def test_duplicate_exposure_id_is_refused_and_nothing_changes(store):
    _expose(store)
    with pytest.raises(sa.exc.IntegrityError):
        _expose(store, arm="b")
    assert store.exposures_frame()["arm"].to_list() == ["a"]


def test_judgments(store):
    _expose(store, "r1")
    _expose(store, "r2")
    jid, dup = store.record_judgment(idempotency_key="j-000001", request_a="r1", request_b="r2",
                                     preference_choice="a", identity_choice="b")
    assert not dup and store.record_judgment(idempotency_key="j-000001", request_a="r1", request_b="r2",
                                             preference_choice="a", identity_choice="b") == (jid, True)
    with pytest.raises(UnknownRequest):
        store.record_judgment(idempotency_key="j-000002", request_a="r1", request_b="zz", preference_choice="a",
                              identity_choice="a")
    with pytest.raises(FeedbackConflict, match="another judgment"):  # the same key, another body: like feedback
        store.record_judgment(idempotency_key="j-000001", request_a="r1", request_b="r2", preference_choice="b",
                              identity_choice="b")
    assert store.judgments_frame()["identity_choice"].to_list() == ["b"]


def test_feedback_and_judgments_bind_to_the_request_key_and_user(store):
    _expose(store, "r1", user="u1", key="k1")
    _expose(store, "r2", user="u1", key="k1")
    _expose(store, "r3", user="u2", key="k1")
    _expose(store, "r4", user="u1", key="k2")
    with pytest.raises(NotYours, match="another API key"):
        store.record_feedback(idempotency_key="k-000010", request_id="r1", image_index=0, event="like",
                              api_key="k2", user_id="u1")
    with pytest.raises(NotYours, match="another user"):
        store.record_feedback(idempotency_key="k-000011", request_id="r1", image_index=0, event="like",
                              api_key="k1", user_id="u2")
    with pytest.raises(NotYours, match="another API key"):
        store.record_judgment(idempotency_key="j-000010", request_a="r1", request_b="r4", preference_choice="a",
                              identity_choice="a", api_key="k1")
    with pytest.raises(NotYours, match="same user"):
        store.record_judgment(idempotency_key="j-000011", request_a="r1", request_b="r3", preference_choice="a",
                              identity_choice="a", api_key="k1")
    assert store.feedback_frame().height == 0 and store.judgments_frame().height == 0
    ok = store.record_feedback(idempotency_key="k-000012", request_id="r1", image_index=0, event="like",
                               api_key="k1", user_id="u1")
    admin = store.record_feedback(idempotency_key="k-000013", request_id="r4", image_index=0, event="like",
                                  api_key=None, user_id="u1")  # an admin: any key's request, the right user
    assert not ok.duplicate and not admin.duplicate
    assert store.record_judgment(idempotency_key="j-000012", request_a="r1", request_b="r2", preference_choice="a",
                                 identity_choice="a", api_key="k1")[1] is False
    assert store.exposures_frame().sort("request_id")["api_key"].to_list() == ["k1", "k1", "k1", "k2"]


def test_unreachable_database_is_store_unavailable():
    down = EventStore("postgresql+psycopg://nobody:x@127.0.0.1:1/none", connect_timeout_s=1)
    assert not down.ping()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        _expose(down)


def test_locked_sqlite_is_unavailable_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'ev.db'}"
    s = EventStore(url, connect_timeout_s=0.2)
    s.migrate()
    _expose(s, "r0")
    blocker = sa.create_engine(url).connect()
    blocker.exec_driver_sql("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            _expose(s, "r1")
    finally:
        blocker.exec_driver_sql("ROLLBACK")
        blocker.close()
    assert s.exposures_frame()["request_id"].to_list() == ["r0"]
    _expose(s, "r1")  # and it recovers
    assert s.exposures_frame().height == 2
