"""The PostgreSQL append in one round trip: the ``shimmie_append`` function and its answer.

``<schema>.shimmie_append(...)`` (PL/pgSQL, created with the event tables)
does a whole append server-side, in the caller's statement: it takes the
writers' advisory lock, reads the store's state, applies the append rules of
:class:`~flask_shimmie.storage.planner.AppendPlanner` to each batch in turn
(the same event id twice in a batch, known event ids, expected versions),
inserts the events of the accepted batches at gap-free positions (with their
PII rows, when asked) and calls ``pg_notify``. Called on an autocommit
connection, that statement is its own transaction, committed before its
answer returns: one round trip per append, lock to commit.

Usually the batches are independent of one another (no event id is stored
or repeated, and no batch writes a stream that another checks): each is then
judged on the state alone, and the accepted ones are written in one insert.
Otherwise they are taken one by one, each checked against the table as the
batches before it left it (a later statement of the function sees the rows
an earlier one inserted), as the planner checks each against its own state
updated by the batches before it.

The function answers with the state it found before writing (the last
position, the time it read once it held the lock, which stamps the new
events' ``recorded_at`` so that it follows their positions, the versions of
the streams involved, the already stored events among the event ids),
followed by the last position after writing. The caller plans the batches
on that state with the planner, which builds every
answer (the stored events, :class:`~flask_shimmie.errors.StreamVersionError`
with its conflicts, the idempotency errors) exactly as the other engines
build theirs, and checks that it reaches the last position the function
wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...errors import ShimmieError
from ...events import ANY, NO_STREAM, STREAM_EXISTS
from ..codec import ROW_COLUMNS, decode_rows, encode_pii_fields
from ..interface import AppendBatch, AppendResult
from ..planner import AppendPlanner

#: ``shimmie_append``'s argument types, in order.
APPEND_ARGUMENT_TYPES = (
    "int",  # the writers' lock: class
    "int",  # the writers' lock: id
    "int",  # how many batches
    "int[]",  # each event's batch (1, 2, ...), the batches' events one after another
    "text[]",  # stream ids
    "text[]",  # event ids
    "text[]",  # event names
    "text[]",  # data (JSON text)
    "text[]",  # meta (JSON text)
    "timestamptz[]",  # recorded_at (kept by imports), else NULL: the time read after the lock
    "int[]",  # schema versions
    "text[]",  # pii_fields (JSON text or NULL)
    "text[]",  # PII values (JSON text or NULL), or NULL when no PII is written
    "int[]",  # each check's batch, the batches' checks one after another
    "text[]",  # checked stream ids
    "int[]",  # check kinds (see CHECK_KINDS)
    "int[]",  # expected versions (of kind 0), else NULL
    "text",  # notification channel
    "text",  # the writing store object's token, in the notification
)


#: How an expected version travels to the function: an int is kind 0 with
#: the version beside it; ``ANY`` checks nothing and is not sent.
CHECK_KINDS = {NO_STREAM: 1, STREAM_EXISTS: 2}


#: The highest version a stream can be at (``stream_version`` is an ``int`` column).
MAX_STREAM_VERSION = 2**31 - 1


#: Kinds of the function's answer rows.
STATE_LAST, STATE_VERSION, STATE_KNOWN, WRITTEN_LAST = 0, 1, 2, 3


#: The SQL types of :data:`ROW_COLUMNS`, in order.
_ROW_TYPES = ("bigint", "text", "int", "text", "text", "text", "text", "timestamptz", "int", "text")


_FUNCTION_TEMPLATE = """
CREATE OR REPLACE FUNCTION {schema}.shimmie_append(
    p_lock_class int, p_lock_id int, p_batch_count int, p_event_batches int[],
    p_stream_ids text[], p_event_ids text[], p_event_names text[], p_data text[], p_meta text[],
    p_recorded_at timestamptz[], p_schema_versions int[], p_pii_fields text[], p_pii text[],
    p_check_batches int[], p_check_streams text[], p_check_kinds int[], p_check_versions int[],
    p_channel text, p_token text)
RETURNS TABLE (o_kind int, o_number bigint, o_stream_id text, o_stream_version int,
    o_event_id text, o_event_name text, o_data text, o_meta text, o_recorded_at timestamptz,
    o_schema_version int, o_pii_fields text)
LANGUAGE plpgsql
-- Planned once per session: custom plans would plan every statement anew per call.
SET plan_cache_mode = force_generic_plan
AS $shimmie_append$
DECLARE
    v_start bigint;
    v_now timestamptz;
    v_position bigint;
    v_state_ids text[];
    v_state_versions int[];
    v_known bigint;
    v_rejected int[];
    v_count bigint;
    v_events int := coalesce(cardinality(p_event_ids), 0);
    v_checks int := coalesce(cardinality(p_check_streams), 0);
    v_first int := 1;
    v_last int := 0;
    v_check_first int := 1;
    v_check_last int := 0;
    v_ids text[];
BEGIN
    -- Every writer of the schema queues here; the lock goes after the commit is visible.
    PERFORM pg_advisory_xact_lock(p_lock_class, p_lock_id);
    -- Read after the lock, so that recorded_at follows the positions.
    v_now := clock_timestamp();

    -- The state the planner needs: the last position and the time, the versions of the
    -- streams involved (NULL: no events), the already stored events among the event ids.
    SELECT coalesce(max(e.sequence_num), 0) INTO v_start FROM {schema}.shimmie_events e;
    SELECT array_agg(s.id), array_agg(
        (SELECT max(e.stream_version) FROM {schema}.shimmie_events e WHERE e.stream_id = s.id))
      INTO v_state_ids, v_state_versions
      FROM (SELECT DISTINCT unnest(p_stream_ids || p_check_streams)) AS s(id);
    RETURN QUERY
        SELECT 0, v_start, @nulls1to7@, v_now, @nulls8@
        UNION ALL
        SELECT 1, v.version::bigint, v.id, @nulls2@
          FROM unnest(v_state_ids, v_state_versions) AS v(id, version);
    RETURN QUERY
        SELECT 2, @e.columns@ FROM {schema}.shimmie_events e WHERE e.event_id = ANY(p_event_ids);
    GET DIAGNOSTICS v_known = ROW_COUNT;
    v_position := v_start;

    IF v_known = 0
       AND (SELECT count(DISTINCT i) FROM unnest(p_event_ids) AS i) = v_events
       AND NOT EXISTS (
           SELECT 1 FROM unnest(p_check_streams, p_check_batches) AS c(stream_id, batch)
             JOIN unnest(p_stream_ids, p_event_batches) AS w(stream_id, batch)
               ON w.stream_id = c.stream_id AND w.batch <> c.batch)
    THEN
        -- No event id is stored or repeated, and no batch writes a stream that another
        -- checks: every batch is judged on the state alone, and the accepted ones are
        -- written at once.
        v_rejected := ARRAY(
            SELECT DISTINCT c.batch
              FROM unnest(p_check_batches, p_check_streams, p_check_kinds, p_check_versions)
                   AS c(batch, stream_id, kind, version)
              JOIN unnest(v_state_ids, v_state_versions) AS v(id, version) ON v.id = c.stream_id
             WHERE NOT CASE c.kind WHEN 0 THEN coalesce(v.version, 0) = c.version
                                   WHEN 1 THEN v.version IS NULL
                                   ELSE v.version IS NOT NULL END);
        INSERT INTO {schema}.shimmie_events (@columns@)
            SELECT v_start + row_number() OVER (ORDER BY r.ord), r.stream_id,
                   coalesce(v.version, 0) + row_number() OVER (PARTITION BY r.stream_id ORDER BY r.ord),
                   r.event_id, r.event_name, r.data, r.meta, coalesce(r.recorded_at, v_now),
                   r.schema_version, r.pii_fields
              FROM unnest(p_event_batches, p_stream_ids, p_event_ids, p_event_names, p_data, p_meta,
                          p_recorded_at, p_schema_versions, p_pii_fields) WITH ORDINALITY
                   AS r(batch, stream_id, event_id, event_name, data, meta, recorded_at,
                        schema_version, pii_fields, ord)
              JOIN unnest(v_state_ids, v_state_versions) AS v(id, version) ON v.id = r.stream_id
             WHERE r.batch <> ALL (v_rejected);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        IF p_pii IS NOT NULL THEN
            INSERT INTO {schema}.shimmie_pii (event_id, stream_id, data)
                SELECT x.event_id, x.stream_id, x.data
                  FROM unnest(p_event_batches, p_event_ids, p_stream_ids, p_pii)
                       AS x(batch, event_id, stream_id, data)
                 WHERE x.data IS NOT NULL AND x.batch <> ALL (v_rejected)
            @pii_conflict@;
        END IF;
        v_position := v_start + v_count;
    ELSE
        -- Batch by batch, each checked against the table as the ones before it left it.
        FOR b IN 1 .. p_batch_count LOOP
            WHILE v_last < v_events AND p_event_batches[v_last + 1] = b LOOP
                v_last := v_last + 1;
            END LOOP;
            WHILE v_check_last < v_checks AND p_check_batches[v_check_last + 1] = b LOOP
                v_check_last := v_check_last + 1;
            END LOOP;
            v_ids := p_event_ids[v_first:v_last];
            -- The planner's rules: no event id twice, none stored, every check holds.
            IF (SELECT count(DISTINCT i) FROM unnest(v_ids) AS i) = v_last - v_first + 1
               AND NOT EXISTS (SELECT 1 FROM {schema}.shimmie_events e WHERE e.event_id = ANY(v_ids))
               AND NOT EXISTS (
                   SELECT 1
                     FROM unnest(p_check_streams[v_check_first:v_check_last],
                                 p_check_kinds[v_check_first:v_check_last],
                                 p_check_versions[v_check_first:v_check_last]) AS c(stream_id, kind, version)
                     CROSS JOIN LATERAL (
                         SELECT coalesce(max(e.stream_version), 0) AS actual
                           FROM {schema}.shimmie_events e WHERE e.stream_id = c.stream_id) AS a
                    WHERE NOT CASE c.kind WHEN 0 THEN a.actual = c.version
                                          WHEN 1 THEN a.actual = 0
                                          ELSE a.actual > 0 END)
            THEN
                INSERT INTO {schema}.shimmie_events (@columns@)
                    SELECT v_position + r.ord, r.stream_id,
                           coalesce(v.version, 0)
                               + row_number() OVER (PARTITION BY r.stream_id ORDER BY r.ord),
                           r.event_id, r.event_name, r.data, r.meta, coalesce(r.recorded_at, v_now),
                           r.schema_version, r.pii_fields
                      FROM unnest(p_stream_ids[v_first:v_last], v_ids, p_event_names[v_first:v_last],
                                  p_data[v_first:v_last], p_meta[v_first:v_last],
                                  p_recorded_at[v_first:v_last], p_schema_versions[v_first:v_last],
                                  p_pii_fields[v_first:v_last]) WITH ORDINALITY
                           AS r(stream_id, event_id, event_name, data, meta, recorded_at,
                                schema_version, pii_fields, ord)
                      LEFT JOIN LATERAL (
                          SELECT max(e.stream_version) AS version
                            FROM {schema}.shimmie_events e WHERE e.stream_id = r.stream_id) AS v ON true;
                IF p_pii IS NOT NULL THEN
                    INSERT INTO {schema}.shimmie_pii (event_id, stream_id, data)
                        SELECT x.event_id, x.stream_id, x.data
                          FROM unnest(v_ids, p_stream_ids[v_first:v_last], p_pii[v_first:v_last])
                               AS x(event_id, stream_id, data)
                         WHERE x.data IS NOT NULL
                    @pii_conflict@;
                END IF;
                v_position := v_position + (v_last - v_first + 1);
            END IF;
            v_first := v_last + 1;
            v_check_first := v_check_last + 1;
        END LOOP;
    END IF;

    IF v_position > v_start THEN
        PERFORM pg_notify(p_channel, v_position || ' ' || p_token);
    END IF;
    RETURN QUERY SELECT 3, v_position, @nulls1@;
END
$shimmie_append$
"""


def _nulls(start: int, stop: int | None = None) -> str:
    """Typed NULLs for the row columns from ``start`` (up to ``stop``)."""
    return ", ".join(f"NULL::{kind}" for kind in _ROW_TYPES[start:stop])


#: The statement creating ``<schema>.shimmie_append`` (a :class:`TableSet` template:
#: ``{schema}`` is its one placeholder, and the body has no other braces).
APPEND_FUNCTION = (
    _FUNCTION_TEMPLATE.strip()
    .replace("@nulls1@", _nulls(1))
    .replace("@nulls1to7@", _nulls(1, 7))
    .replace("@nulls8@", _nulls(8))
    .replace("@nulls2@", _nulls(2))
    .replace("@e.columns@", ", ".join(f"e.{column}" for column in ROW_COLUMNS))
    .replace("@columns@", ", ".join(ROW_COLUMNS))
    # As PostgresPiiStore.put writes a row, so that a rewrite replaces it the same way.
    .replace(
        "@pii_conflict@",
        "ON CONFLICT (event_id) DO UPDATE SET stream_id = EXCLUDED.stream_id,"
        " data = EXCLUDED.data, written_at = EXCLUDED.written_at",
    )
)


#: The call, with ``{}`` standing for the function's schema-qualified name. Its
#: arguments travel in binary (``%b``): text arrays in text format would be escaped
#: element by element, and JSON text is full of quotes.
APPEND_CALL = "SELECT * FROM {}(" + ", ".join(f"%b::{kind}" for kind in APPEND_ARGUMENT_TYPES) + ")"


def append_params(
    batches: Sequence[AppendBatch],
    *,
    write_pii: bool,
    lock: tuple[int, int],
    channel: str,
    token: str,
) -> list[Any]:
    """The arguments of :data:`APPEND_CALL` for ``batches``."""
    events = [event for batch in batches for event in batch.events]
    check_batches: list[int] = []
    check_streams: list[str] = []
    check_kinds: list[int] = []
    check_versions: list[int | None] = []
    for number, batch in enumerate(batches, start=1):
        for stream_id, wanted in batch.expected.items():
            if wanted is ANY:
                continue
            check_batches.append(number)
            check_streams.append(stream_id)
            if isinstance(wanted, int):
                check_kinds.append(0)
                # A version no stream can be at is never met, as -1 is not.
                check_versions.append(wanted if 0 <= wanted <= MAX_STREAM_VERSION else -1)
            else:
                check_kinds.append(CHECK_KINDS[wanted])
                check_versions.append(None)
    pii = [event.pii_json for event in events] if write_pii else []
    return [
        *lock,
        len(batches),
        [number for number, batch in enumerate(batches, start=1) for _ in batch.events],
        [e.stream_id for e in events],
        [e.event_id for e in events],
        [e.event_name for e in events],
        [e.data_json for e in events],
        [e.meta_json for e in events],
        [e.recorded_at for e in events],
        [e.schema_version for e in events],
        [encode_pii_fields(e.pii_fields) for e in events],
        pii if any(value is not None for value in pii) else None,
        check_batches,
        check_streams,
        check_kinds,
        check_versions,
        channel,
        token,
    ]


def answer(
    rows: Sequence[Sequence[Any]], batches: Sequence[AppendBatch]
) -> tuple[list[AppendResult | ShimmieError], int, int]:
    """Each batch's outcome from the function's answer ``rows``: outcomes, rows written, last position.

    Raises :class:`~flask_shimmie.errors.ShimmieError` when the planner does
    not reach the position the function wrote up to (the two disagree on the
    rules: a defect, never a caller's error).
    """
    start = written_last = 0
    now: datetime | None = None
    versions: dict[str, int] = {}
    known: list[Sequence[Any]] = []
    for row in rows:
        kind, number, stream_id = row[:3]
        if kind == STATE_LAST:
            start, now = number, row[8]
        elif kind == STATE_VERSION:
            if number is not None:
                versions[stream_id] = number
        elif kind == STATE_KNOWN:
            known.append(row[1:])
        else:
            written_last = number
    planner = AppendPlanner(start, versions, decode_rows(known), now)
    outcomes = [planner.plan(batch) for batch in batches]
    if planner.last_sequence_num != written_last:
        raise ShimmieError(
            f"shimmie_append wrote positions {start + 1} to {written_last}, but the append rules "
            f"give {start + 1} to {planner.last_sequence_num}: the function and the planner disagree."
        )
    return outcomes, len(planner.rows), written_last
