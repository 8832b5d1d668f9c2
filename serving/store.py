"""The event store: exposures, feedback and judgments in SQLite (WAL) or PostgreSQL.

Guarantees the API builds on:

* **Committed before acknowledged.** Each write is one transaction that has committed when the call
  returns; the API answers only after that, so an acknowledged exposure or feedback survives a
  SIGKILL of the server (SQLite in WAL mode is durable against a process crash).
* **Idempotent feedback.** The client's idempotency key is unique in the table: a retry with the
  same key and body returns the stored row (``duplicate=True``); the same key with another body is
  a conflict.
* **Down means 503, nothing half-written.** Any failure to reach or write the database raises
  :class:`StoreUnavailable`; the transaction is rolled back, so there is never a partial row.

Migrations are alembic's (``serving/migrations``); :meth:`EventStore.migrate` runs them to head.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from serving.tables import exposures, feedback, judgments, request_errors

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
EVENTS = ("click", "like", "skip")


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or written right now; nothing was written."""


class UnknownRequest(KeyError):
    pass


class FeedbackConflict(ValueError):
    """An idempotency key reused with a different body (feedback or judgment)."""


class NotYours(PermissionError):
    """Feedback or a judgment on a request that another key made, or that was for another user."""


def _check_owner(row, request_id: str, api_key: str | None, user_id: str | None) -> None:
    """``api_key=None`` is an admin (any key's requests); ``user_id=None`` checks no user."""
    if api_key is not None and row.api_key != api_key:
        raise NotYours(f"request {request_id} was made with another API key")
    if user_id is not None and row.user_id != user_id:
        raise NotYours(f"request {request_id} was made for another user")


@dataclass
class FeedbackRow:
    id: int
    request_id: str
    image_index: int
    event: str
    duplicate: bool
    arm: str


def _polars_type(t: sa.types.TypeEngine) -> pl.DataType:
    if isinstance(t, sa.DateTime):
        return pl.Datetime("us", "UTC")
    if isinstance(t, sa.Integer):  # BigInteger too
        return pl.Int64
    if isinstance(t, sa.String):
        return pl.Utf8
    raise TypeError(f"no polars type for {t!r}")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable against a process crash in WAL mode
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=2000")
    cur.close()


class EventStore:
    def __init__(self, url: str, *, connect_timeout_s: float = 3.0):
        self.url = sa.engine.make_url(url)
        if self.url.get_backend_name() == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(self.url, connect_args={"timeout": connect_timeout_s})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            args = {"connect_timeout": int(max(1, connect_timeout_s))} if self.url.get_backend_name() == "postgresql" \
                else {}
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, connect_args=args)

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    def _run(self, fn):
        """Run ``fn(conn)`` in one transaction; connection and operational failures become
        :class:`StoreUnavailable` after the rollback."""
        try:
            with self.engine.begin() as conn:
                return fn(conn)
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as e:
            raise StoreUnavailable(f"event store unavailable ({self.backend}): {str(e.orig or e).strip()}") from e

    def _idempotent(self, tx):
        """Run an insert-once transaction; if a concurrent retry with the same idempotency key won
        the insert (unique violation), run it again, and it finds that row."""
        try:
            return self._run(tx)
        except IntegrityError:
            return self._run(tx)

    def migrate(self) -> str:
        """Upgrade to the newest migration; returns the revision now in the database."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        except (OperationalError, DBAPIError) as e:
            raise StoreUnavailable(f"cannot migrate the event store ({self.backend}): {e.orig or e}") from e

    def ping(self) -> bool:
        try:
            self._run(lambda c: c.execute(sa.text("SELECT 1")).scalar_one())
            return True
        except StoreUnavailable:
            return False

    # --- writes ---------------------------------------------------------------------------------

    def record_exposure(self, *, request_id: str, experiment: str, arm: str, user_id: str,
                        reference_item_id: str | None, reference_source: str, method: str, n: int, seed: int,
                        chosen: int, fallback: str | None, payload: dict, api_key: str | None = None) -> None:
        row = dict(request_id=request_id, created_at=_now(), experiment=experiment, arm=arm, user_id=user_id,
                   reference_item_id=reference_item_id, reference_source=reference_source, method=method, n=n,
                   seed=seed, chosen=chosen, fallback=fallback, payload=payload, api_key=api_key)
        self._run(lambda c: c.execute(exposures.insert().values(**row)))

    def record_feedback(self, *, idempotency_key: str, request_id: str, image_index: int, event: str,
                        api_key: str | None = None, user_id: str | None = None) -> FeedbackRow:
        """Store one feedback event once. ``api_key`` / ``user_id``, when given, must be the key
        that made the request and the user it was for (:class:`NotYours` otherwise)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}: one of {', '.join(EVENTS)}")

        def tx(c):
            e = exposures.c
            exp = c.execute(sa.select(e.n, e.arm, e.api_key, e.user_id).where(e.request_id == request_id)).first()
            if exp is None:
                raise UnknownRequest(f"unknown request id {request_id!r}")
            _check_owner(exp, request_id, api_key, user_id)
            if not 0 <= image_index < exp.n:
                raise ValueError(f"image_index {image_index} out of range: request {request_id} has {exp.n} images")
            old = c.execute(sa.select(feedback).where(feedback.c.idempotency_key == idempotency_key)).first()
            if old is not None:
                return FeedbackRow(old.id, old.request_id, old.image_index, old.event, True, exp.arm)
            res = c.execute(feedback.insert().values(idempotency_key=idempotency_key, request_id=request_id,
                                                     image_index=image_index, event=event, created_at=_now()))
            return FeedbackRow(res.inserted_primary_key[0], request_id, image_index, event, False, exp.arm)

        row = self._idempotent(tx)
        if row.duplicate and (row.request_id, row.image_index, row.event) != (request_id, image_index, event):
            raise FeedbackConflict(f"idempotency key {idempotency_key!r} was used for another feedback "
                                   f"({row.request_id}, image {row.image_index}, {row.event})")
        return row

    def record_judgment(self, *, idempotency_key: str, request_a: str, request_b: str, preference_choice: str,
                        identity_choice: str, rater: str | None = None, api_key: str | None = None
                        ) -> tuple[int, bool]:
        """Store one judgment once. Both requests must exist, be for one user and, when
        ``api_key`` is given, have been made with that key; a reused idempotency key with another
        body is a :class:`FeedbackConflict`, as for feedback."""
        for ch in (preference_choice, identity_choice):
            if ch not in ("a", "b"):
                raise ValueError(f"a choice is 'a' or 'b', got {ch!r}")
        body = (request_a, request_b, preference_choice, identity_choice, rater)

        def tx(c):
            e = exposures.c
            users = set()
            for r in (request_a, request_b):
                row = c.execute(sa.select(e.api_key, e.user_id).where(e.request_id == r)).first()
                if row is None:
                    raise UnknownRequest(f"unknown request id {r!r}")
                _check_owner(row, r, api_key, None)
                users.add(row.user_id)
            if len(users) > 1:
                raise NotYours("a judgment compares two requests made for the same user")
            j = judgments.c
            old = c.execute(sa.select(j.id, j.request_a, j.request_b, j.preference_choice, j.identity_choice, j.rater)
                            .where(j.idempotency_key == idempotency_key)).first()
            if old is not None:
                return old.id, True, tuple(old)[1:]
            res = c.execute(judgments.insert().values(
                idempotency_key=idempotency_key, request_a=request_a, request_b=request_b,
                preference_choice=preference_choice, identity_choice=identity_choice, rater=rater, created_at=_now()))
            return res.inserted_primary_key[0], False, body

        jid, dup, stored = self._idempotent(tx)
        if dup and stored != body:
            raise FeedbackConflict(f"idempotency key {idempotency_key!r} was used for another judgment")
        return jid, dup

    def record_error(self, *, experiment: str, arm: str, user_id: str, status: int, reason: str) -> bool:
        """Best effort: a failed generation for the guardrails. False (and nothing raised) when the
        store is down; that is then the error the client sees."""
        try:
            self._run(lambda c: c.execute(request_errors.insert().values(
                created_at=_now(), experiment=experiment, arm=arm, user_id=user_id, status=status, reason=reason)))
            return True
        except StoreUnavailable:
            return False

    # --- reads ----------------------------------------------------------------------------------

    def exposure(self, request_id: str) -> dict:
        row = self._run(lambda c: c.execute(sa.select(exposures).where(exposures.c.request_id == request_id)).first())
        if row is None:
            raise UnknownRequest(f"unknown request id {request_id!r}")
        return dict(row._mapping)

    def _frame(self, *columns, where=None, order_by=()) -> pl.DataFrame:
        """The columns as a polars frame, typed from the table definitions (also when empty)."""
        q = sa.select(*columns).order_by(*order_by)
        if where is not None:
            q = q.where(where)
        schema = {c.name: _polars_type(c.type) for c in columns}
        rows = self._run(lambda c: [tuple(r) for r in c.execute(q)])
        return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)

    def exposures_frame(self, experiment: str | None = None) -> pl.DataFrame:
        e = exposures.c
        return self._frame(e.request_id, e.created_at, e.experiment, e.arm, e.user_id, e.reference_item_id, e.method,
                           e.n, e.seed, e.chosen, e.api_key,
                           where=None if experiment is None else e.experiment == experiment,
                           order_by=(e.created_at, e.request_id))

    def feedback_frame(self) -> pl.DataFrame:
        f = feedback.c
        return self._frame(f.id, f.idempotency_key, f.request_id, f.image_index, f.event, order_by=(f.id,))

    def judgments_frame(self) -> pl.DataFrame:
        j = judgments.c
        return self._frame(j.id, j.request_a, j.request_b, j.preference_choice, j.identity_choice, j.rater,
                           order_by=(j.id,))

    def errors_frame(self, experiment: str | None = None) -> pl.DataFrame:
        r = request_errors.c
        return self._frame(r.experiment, r.arm, r.user_id, r.status, r.reason,
                           where=None if experiment is None else r.experiment == experiment, order_by=(r.id,))

    def served_frame(self, experiment: str) -> pl.DataFrame:
        """Per exposure: its latency and the identity score of the image chosen for the user."""
        e = exposures.c
        q = sa.select(e.request_id, e.chosen, e.payload).where(e.experiment == experiment)
        rows = []
        for rid, chosen, payload in self._run(lambda c: [tuple(r) for r in c.execute(q)]):
            cands = (payload or {}).get("candidates") or []
            ident = cands[chosen].get("identity") if 0 <= chosen < len(cands) else None
            rows.append((rid, (payload or {}).get("latency_s"), ident))
        return pl.DataFrame(rows, schema={"request_id": pl.Utf8, "latency_s": pl.Float64, "identity": pl.Float64},
                            orient="row")

    def experiment_data(self, experiment: str, covariates: dict[str, float] | None = None):
        """Everything :func:`serving.analysis.experiment_report` reads about one experiment."""
        from serving.analysis import ExperimentData

        return ExperimentData(self.exposures_frame(experiment), self.feedback_frame(), self.errors_frame(experiment),
                              self.served_frame(experiment), covariates)

    def payloads(self, request_ids: list[str]) -> dict[str, dict]:
        q = sa.select(exposures.c.request_id, exposures.c.payload).where(exposures.c.request_id.in_(request_ids))
        return self._run(lambda c: {r.request_id: r.payload for r in c.execute(q)})

    def dispose(self) -> None:
        self.engine.dispose()
