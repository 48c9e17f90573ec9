-- The vectorizer catalog: tables and the functions that create, alter and drop vectorizers.
--
-- Why server-side functions: one piece of SQL serves online migrations, offline `alembic upgrade
-- --sql` scripts (which cannot introspect the source table) and tests alike; validation happens
-- against the real catalog at the moment the migration runs, in the same transaction.
-- Every identifier is quoted with format('%I'); no user text is ever spliced into SQL unquoted.
-- This script is idempotent and versioned (pgai_orm/catalog/schema.py): it runs when a database has
-- no catalog or an older one, and brings any older version up to the current one.

CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS vectorizer;

CREATE TABLE IF NOT EXISTS vectorizer.vectorizers (
    id               serial PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    source_schema    name NOT NULL,
    source_table     name NOT NULL,
    source_pk        jsonb NOT NULL,
    target_schema    name NOT NULL,
    target_table     name NOT NULL,
    view_schema      name NOT NULL,
    view_table       name NOT NULL,
    config           jsonb NOT NULL,
    config_version   int NOT NULL DEFAULT 1,
    publication_name name NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (target_schema, target_table)
);

CREATE TABLE IF NOT EXISTS vectorizer.config_versions (
    vectorizer_id int NOT NULL REFERENCES vectorizer.vectorizers (id) ON DELETE CASCADE,
    version       int NOT NULL,
    config        jsonb NOT NULL,
    target_schema name NOT NULL,
    target_table  name NOT NULL,
    status        text NOT NULL CHECK (status IN ('building', 'active', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    PRIMARY KEY (vectorizer_id, version)
);

-- truncated_lsn: events below it arrived after a TRUNCATE of the source and are skipped (a truncate
-- reaches every partition, so each worker applies it once). replay_target: the topic high-water
-- marks a building version must reach before it is activated.
ALTER TABLE vectorizer.config_versions
    ADD COLUMN IF NOT EXISTS truncated_lsn pg_lsn NOT NULL DEFAULT '0/0',
    ADD COLUMN IF NOT EXISTS replay_target jsonb;

CREATE TABLE IF NOT EXISTS vectorizer.applied_state (
    vectorizer_id int NOT NULL,
    version       int NOT NULL,
    pk            jsonb NOT NULL,
    lsn           pg_lsn NOT NULL,
    chunk_hashes  text[] NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vectorizer_id, version, pk),
    FOREIGN KEY (vectorizer_id, version)
        REFERENCES vectorizer.config_versions (vectorizer_id, version) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS vectorizer.errors (
    id            bigserial PRIMARY KEY,
    vectorizer_id int NOT NULL REFERENCES vectorizer.vectorizers (id) ON DELETE CASCADE,
    version       int NOT NULL,
    pk            jsonb,
    step          text NOT NULL,
    message       text NOT NULL,
    details       jsonb,
    lsn           pg_lsn,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS errors_vectorizer_pk_idx ON vectorizer.errors (vectorizer_id, pk);

-- The connector's state (connector/state.py explains each column): per slot, the broker cluster id
-- last seen and the last confirmed LSN; per slot and source table, its topic and snapshot progress.
CREATE TABLE IF NOT EXISTS vectorizer.connector_state (
    slot_name      text PRIMARY KEY,
    cluster_id     text,
    confirmed_lsn  pg_lsn,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS vectorizer.connector_tables (
    slot_name        text NOT NULL,
    source_schema    name NOT NULL,
    source_table     name NOT NULL,
    topic            text NOT NULL,
    topic_id         text,
    status           text NOT NULL CHECK (status IN ('snapshotting', 'streaming')),
    stream_from_lsn  pg_lsn NOT NULL,
    snapshot_lsn     pg_lsn,
    snapshot_after   jsonb,
    rows_done        bigint NOT NULL DEFAULT 0,
    rows_total       bigint,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, source_schema, source_table)
);

-- Lifecycle (connector/state.py): a table's incarnation (source_oid, vectorizer_ids), why its
-- latest snapshot ran and the truncate that closes it; the slot's last re-creation.
ALTER TABLE vectorizer.connector_tables
    ADD COLUMN IF NOT EXISTS source_oid oid,
    ADD COLUMN IF NOT EXISTS vectorizer_ids int[],
    ADD COLUMN IF NOT EXISTS snapshot_reason text,
    ADD COLUMN IF NOT EXISTS truncate_lsn pg_lsn;
ALTER TABLE vectorizer.connector_state
    ADD COLUMN IF NOT EXISTS slot_recreated_reason text,
    ADD COLUMN IF NOT EXISTS slot_recreated_at timestamptz,
    ADD COLUMN IF NOT EXISTS slot_recreations int NOT NULL DEFAULT 0;

-- Version 3, lifecycle of the source table (docs/operations.md, "Lifecycle events"):
-- source_columns: per config version, the source columns it reads, by attnum
--   ([{"attname", "attnum", "role": "chunk" | "template"}]), so a rename is recognised as one;
-- source_partitions: the leaf partitions of a partitioned source as last seen (NULL: a plain
--   table), so an ATTACH, DETACH or DROP of a partition is noticed and the table resynced.
ALTER TABLE vectorizer.config_versions ADD COLUMN IF NOT EXISTS source_columns jsonb;
ALTER TABLE vectorizer.vectorizers ADD COLUMN IF NOT EXISTS source_partitions oid[];

-- The identity of this catalog: one random id per catalog, i.e. per database incarnation (a
-- database dropped and re-created under the same name, or one of another server, gets another).
-- The connector writes it into every event ("source", pgai_orm/events.py) and a worker drops
-- events whose source is not its database's: the topic may still hold an earlier incarnation's.
CREATE TABLE IF NOT EXISTS vectorizer.instance (
    singleton  bool PRIMARY KEY DEFAULT true CHECK (singleton),
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO vectorizer.instance DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Version 4: one worker process serving every vectorizer, keyword indexing of stores, usage
-- (tokens and requests) per version, and the operability fixes. Every statement of this section is
-- idempotent, like the rest of the script.

-- Which catalog versions were installed (pgai_orm/catalog/schema.py: CATALOG_VERSION).
CREATE TABLE IF NOT EXISTS vectorizer.catalog_version (
    version      int PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- What embedding cost, per config version, provider and model (pgai_orm/catalog/usage.py): the
-- tokens the provider billed (its usage.total_tokens, else our estimate), the requests it
-- answered, and the 429s it sent. Workers add a batch's numbers in the batch's transaction, so
-- a batch redelivered after a crash is counted again only if it was embedded again.
CREATE TABLE IF NOT EXISTS vectorizer.usage (
    vectorizer_id int NOT NULL REFERENCES vectorizer.vectorizers (id) ON DELETE CASCADE,
    version       int NOT NULL,
    provider      text NOT NULL,
    model         text NOT NULL,
    tokens        bigint NOT NULL DEFAULT 0,
    requests      bigint NOT NULL DEFAULT 0,
    rate_limited  bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vectorizer_id, version, provider, model)
);

-- Destinations (pgai's ai.destination_column, docs/destinations.md): a vectorizer whose
-- config.destination is {"implementation": "column", "embedding_column": ...} writes one vector
-- per row into that column of the source and has no store table and no view, so their names are
-- NULL (never the source's own name: a DROP or TRUNCATE of "the store" must not reach it).
ALTER TABLE vectorizer.vectorizers
    ALTER COLUMN target_schema DROP NOT NULL, ALTER COLUMN target_table DROP NOT NULL,
    ALTER COLUMN view_schema DROP NOT NULL, ALTER COLUMN view_table DROP NOT NULL;
ALTER TABLE vectorizer.config_versions
    ALTER COLUMN target_schema DROP NOT NULL, ALTER COLUMN target_table DROP NOT NULL;


-- Pause and resume (pgai's ai.disable_vectorizer_schedule / ai.enable_vectorizer_schedule;
-- docs/operations.md, "Pausing a vectorizer"): while paused_at is set the workers serve none of
-- the vectorizer's versions, so nothing is embedded; the connector goes on streaming its changes
-- into Kafka (the slot keeps advancing, no WAL is pinned) and a resume continues from the
-- committed offsets.
ALTER TABLE vectorizer.vectorizers ADD COLUMN IF NOT EXISTS paused_at timestamptz;

-- What the workers measure per config version, every few seconds (processors/engine.py), so that
-- SQL alone can see what `vectorizer status` shows: pending, the events in the topic the version's
-- consumer group has not committed yet (the topic's high-water marks minus the group's committed
-- offsets, summed over the partitions; measured for paused versions too), measured_at when;
-- last_applied_lsn, the highest source LSN a committed batch held, and last_applied_at when.
-- Several workers of one group write the same pending and the greatest LSN.
CREATE TABLE IF NOT EXISTS vectorizer.worker_progress (
    vectorizer_id    int NOT NULL,
    version          int NOT NULL,
    pending          bigint,
    measured_at      timestamptz,
    last_applied_lsn pg_lsn,
    last_applied_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vectorizer_id, version),
    FOREIGN KEY (vectorizer_id, version)
        REFERENCES vectorizer.config_versions (vectorizer_id, version) ON DELETE CASCADE
);

-- pgai's ai.vectorizer_status, with pgai's column names where it has one (id, source_table,
-- target_table, view, pending_items, disabled) and what `vectorizer status` adds. pending_items is
-- the serving version's exact count (NULL until a worker measured it), never capped.
CREATE OR REPLACE VIEW vectorizer.vectorizer_status AS
SELECT v.id,
       v.name,
       format('%I.%I', v.source_schema, v.source_table) AS source_table,
       CASE WHEN v.target_table IS NOT NULL
            THEN format('%I.%I', v.target_schema, v.target_table) END AS target_table,
       CASE WHEN v.view_table IS NOT NULL
            THEN format('%I.%I', v.view_schema, v.view_table) END AS "view",
       v.config_version AS serving_version,
       v.paused_at IS NOT NULL AS paused,
       v.paused_at IS NOT NULL AS disabled,
       v.paused_at,
       p.pending AS pending_items,
       p.measured_at AS pending_measured_at,
       (SELECT count(DISTINCT e.pk) FROM vectorizer.errors e
         WHERE e.vectorizer_id = v.id AND e.pk IS NOT NULL) AS error_rows,
       (SELECT count(*) FROM vectorizer.errors e WHERE e.vectorizer_id = v.id) AS errors,
       p.last_applied_lsn,
       p.last_applied_at,
       b.version AS building_version,
       bp.pending AS building_pending_items,
       (SELECT ct.status FROM vectorizer.connector_tables ct
         WHERE ct.source_schema = v.source_schema AND ct.source_table = v.source_table
         ORDER BY ct.updated_at DESC LIMIT 1) AS connector_state,
       (SELECT max(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN NULL
                                        ELSE pg_current_wal_lsn() END, s.confirmed_flush_lsn))::bigint
          FROM vectorizer.connector_tables ct
          JOIN pg_replication_slots s ON s.slot_name = ct.slot_name
         WHERE ct.source_schema = v.source_schema AND ct.source_table = v.source_table)
           AS wal_pending_bytes
  FROM vectorizer.vectorizers v
  LEFT JOIN vectorizer.worker_progress p ON p.vectorizer_id = v.id AND p.version = v.config_version
  LEFT JOIN LATERAL (SELECT max(cv.version) AS version FROM vectorizer.config_versions cv
                      WHERE cv.vectorizer_id = v.id AND cv.status = 'building') b ON true
  LEFT JOIN vectorizer.worker_progress bp ON bp.vectorizer_id = v.id AND bp.version = b.version;

-- pgai's ai.vectorizer_errors (id is the vectorizer's, message, details, recorded, name), plus the
-- error's own id, version, key, step and LSN (`vectorizer errors`).
CREATE OR REPLACE VIEW vectorizer.vectorizer_errors AS
SELECT e.vectorizer_id AS id, v.name, e.message, e.details, e.recorded_at AS recorded,
       e.id AS error_id, e.version, e.pk, e.step, e.lsn
  FROM vectorizer.errors e
  JOIN vectorizer.vectorizers v ON v.id = e.vectorizer_id;

-- Pause (disable) and resume (enable) a vectorizer by name; the Alembic operations
-- op.disable_vectorizer / op.enable_vectorizer and `vectorizer pause` / `resume` call these. Both
-- are idempotent: pausing a paused vectorizer keeps its paused_at.
CREATE OR REPLACE FUNCTION vectorizer.disable_vectorizer(p_name text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE vectorizer.vectorizers SET paused_at = coalesce(paused_at, now()), updated_at = now()
     WHERE name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'vectorizer "%" does not exist', p_name USING ERRCODE = 'undefined_object';
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION vectorizer.enable_vectorizer(p_name text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE vectorizer.vectorizers SET paused_at = NULL, updated_at = now() WHERE name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'vectorizer "%" does not exist', p_name USING ERRCODE = 'undefined_object';
    END IF;
END
$fn$;

-- pgai's spellings, by id or by name, for SQL written against pgai.
CREATE OR REPLACE FUNCTION vectorizer.disable_vectorizer_schedule(name text) RETURNS void
LANGUAGE sql AS $fn$ SELECT vectorizer.disable_vectorizer(name) $fn$;
CREATE OR REPLACE FUNCTION vectorizer.enable_vectorizer_schedule(name text) RETURNS void
LANGUAGE sql AS $fn$ SELECT vectorizer.enable_vectorizer(name) $fn$;
CREATE OR REPLACE FUNCTION vectorizer.disable_vectorizer_schedule(vectorizer_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_name text;
BEGIN
    SELECT v.name INTO v_name FROM vectorizer.vectorizers v WHERE v.id = vectorizer_id;
    IF v_name IS NULL THEN
        RAISE EXCEPTION 'vectorizer with id % does not exist', vectorizer_id
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM vectorizer.disable_vectorizer(v_name);
END
$fn$;
CREATE OR REPLACE FUNCTION vectorizer.enable_vectorizer_schedule(vectorizer_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_name text;
BEGIN
    SELECT v.name INTO v_name FROM vectorizer.vectorizers v WHERE v.id = vectorizer_id;
    IF v_name IS NULL THEN
        RAISE EXCEPTION 'vectorizer with id % does not exist', vectorizer_id
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM vectorizer.enable_vectorizer(v_name);
END
$fn$;

-- Raise a clear error when a name would be silently truncated by Postgres (63 bytes).
CREATE OR REPLACE FUNCTION vectorizer._check_name(p_what text, p_name text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_name IS NULL OR p_name = '' THEN
        RAISE EXCEPTION '% must not be empty', p_what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(p_name) > 63 THEN
        RAISE EXCEPTION '% "%" is longer than 63 bytes; Postgres would truncate it, pass a shorter name',
            p_what, p_name USING ERRCODE = 'name_too_long';
    END IF;
END
$fn$;


-- The identifiers of a string.Template, scanned left to right as Python does ("$$" is a dollar).
CREATE OR REPLACE FUNCTION vectorizer._template_placeholders(p_template text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT coalesce(array_agg(DISTINCT x.name ORDER BY x.name), '{}')
      FROM (SELECT btrim(m[1], '{}') AS name
              FROM regexp_matches(coalesce(p_template, ''),
                                  '\$(\$|\{[_A-Za-z][_A-Za-z0-9]*\}|[_A-Za-z][_A-Za-z0-9]*)', 'g') AS m) x
     WHERE x.name <> '$'
$fn$;


-- The source columns a config reads (the chunked column, the template's placeholders), with
-- their attnums in p_rel: a rename keeps the attnum, so it can be told from a drop.
CREATE OR REPLACE FUNCTION vectorizer._config_columns(p_rel regclass, p_config jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $fn$
    WITH wanted AS (
        SELECT coalesce(p_config->'loading'->>'column_name', p_config->'chunking'->>'chunk_column') AS name,
               'chunk' AS role, 0 AS ord
        UNION ALL
        SELECT t.name, 'template', t.ord
          FROM unnest(CASE WHEN p_config->'formatting'->>'implementation' = 'python_template'
                           THEN vectorizer._template_placeholders(p_config->'formatting'->>'template')
                           ELSE '{}'::text[] END) WITH ORDINALITY AS t(name, ord)
         WHERE t.name <> 'chunk'
           AND t.name IS DISTINCT FROM coalesce(p_config->'loading'->>'column_name',
                                                 p_config->'chunking'->>'chunk_column'))
    SELECT coalesce(jsonb_agg(jsonb_build_object('attname', w.name, 'attnum', a.attnum, 'role', w.role)
                              ORDER BY w.ord), '[]')
      FROM wanted w
      LEFT JOIN pg_attribute a ON a.attrelid = p_rel AND a.attname = w.name AND a.attnum > 0
                              AND NOT a.attisdropped
     WHERE w.name IS NOT NULL
$fn$;


-- The leaf partitions of a partitioned source, by OID; NULL for a plain table. Read from
-- pg_inherits, which takes no lock: pg_partition_tree locks every partition, and the worker
-- supervisor (check_sources) would then wait for (and deadlock with) a DETACH in progress.
CREATE OR REPLACE FUNCTION vectorizer._leaf_partitions(p_rel regclass) RETURNS oid[]
LANGUAGE sql STABLE AS $fn$
    WITH RECURSIVE tree (relid) AS (
        SELECT inhrelid FROM pg_inherits WHERE inhparent = p_rel
        UNION
        SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid)
    SELECT CASE WHEN (SELECT relkind FROM pg_class WHERE oid = p_rel) = 'p' THEN
               coalesce((SELECT array_agg(t.relid ORDER BY t.relid)
                           FROM tree t JOIN pg_class c ON c.oid = t.relid
                          WHERE c.relkind <> 'p'), '{}')
           END
$fn$;


-- The key columns of a source table as the store names them (the names they had when the
-- vectorizer was created) and as the source names them now (NULL: dropped), in key order. A
-- renamed key column is followed by attnum: keys keep the store's names, so they stay
-- addressable, while reads of the source use the current names.
CREATE OR REPLACE FUNCTION vectorizer.source_key_columns(p_schema name, p_table name)
RETURNS TABLE (store_name text, source_name text)
LANGUAGE sql STABLE AS $fn$
    SELECT e.k->>'attname', a.attname::text
      FROM (SELECT source_pk FROM vectorizer.vectorizers
             WHERE source_schema = p_schema AND source_table = p_table ORDER BY id LIMIT 1) v
     CROSS JOIN LATERAL jsonb_array_elements(v.source_pk) WITH ORDINALITY AS e(k, ord)
      LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(format('%I.%I', p_schema, p_table))
                              AND a.attnum = (e.k->>'attnum')::int AND NOT a.attisdropped
     ORDER BY e.ord
$fn$;


-- Per column that a config version reads, the other names to find it under in an event's row,
-- best first: its current name when it was renamed in the source since, then every name it had
-- in a version of the vectorizer (same attnum). Workers follow a rename this way: events
-- streamed after it carry the new name, events from before it (replayed by a version that reads
-- the new name) the old one.
CREATE OR REPLACE FUNCTION vectorizer.column_names(p_id int, p_version int)
RETURNS TABLE (attname text, other_names text[])
LANGUAGE sql STABLE AS $fn$
    SELECT e->>'attname',
           array_remove(array_remove(
               ARRAY[(SELECT a.attname::text FROM pg_attribute a
                       WHERE a.attrelid = to_regclass(format('%I.%I', v.source_schema, v.source_table))
                         AND a.attnum = (e->>'attnum')::int AND NOT a.attisdropped)]
               || ARRAY(SELECT DISTINCT o->>'attname'
                          FROM vectorizer.config_versions ov
                         CROSS JOIN LATERAL jsonb_array_elements(coalesce(ov.source_columns, '[]')) AS o
                         WHERE ov.vectorizer_id = p_id AND o->>'attnum' = e->>'attnum'),
               e->>'attname'), NULL)
      FROM vectorizer.config_versions cv
      JOIN vectorizer.vectorizers v ON v.id = cv.vectorizer_id
     CROSS JOIN LATERAL jsonb_array_elements(coalesce(cv.source_columns, '[]')) AS e
     WHERE cv.vectorizer_id = p_id AND cv.version = p_version AND e->>'attnum' IS NOT NULL
$fn$;


-- (Re)create the store table of one config version. Its columns: a uuid key, copies of the
-- source's primary-key columns with their exact types, chunk_seq, chunk, embedding vector(N).
-- No foreign key to the source: TRUNCATE of the source must keep working, and deletes reach the
-- store through the stream.
CREATE OR REPLACE FUNCTION vectorizer._create_store(
    p_source_pk jsonb, p_target_schema name, p_target_table name, p_dimensions int,
    p_indexing jsonb
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_cols text;
    v_keys text;
    v_opclass text;
BEGIN
    IF p_dimensions IS NULL OR p_dimensions <= 0 THEN
        RAISE EXCEPTION 'embedding dimensions must be a positive integer, got %', p_dimensions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regclass(format('%I.%I', p_target_schema, p_target_table)) IS NOT NULL THEN
        RAISE EXCEPTION 'target table %.% already exists', p_target_schema, p_target_table
            USING ERRCODE = 'duplicate_table';
    END IF;
    SELECT string_agg(format('%I %s NOT NULL', k->>'attname', k->>'typname'), ', ' ORDER BY o),
           string_agg(format('%I', k->>'attname'), ', ' ORDER BY o)
      INTO v_cols, v_keys
      FROM jsonb_array_elements(p_source_pk) WITH ORDINALITY AS e(k, o);
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', p_target_schema);
    EXECUTE format(
        'CREATE TABLE %I.%I (embedding_uuid uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY, '
        '%s, chunk_seq int NOT NULL, chunk text NOT NULL, embedding vector(%s) NOT NULL, '
        'UNIQUE (%s, chunk_seq))',
        p_target_schema, p_target_table, v_cols, p_dimensions, v_keys);
    IF p_indexing->>'implementation' = 'hnsw' THEN
        v_opclass := p_indexing->>'opclass';
        IF v_opclass NOT IN ('vector_cosine_ops', 'vector_l2_ops', 'vector_ip_ops', 'vector_l1_ops') THEN
            RAISE EXCEPTION 'unknown HNSW opclass %', v_opclass USING ERRCODE = 'invalid_parameter_value';
        END IF;
        EXECUTE format(
            'CREATE INDEX %I ON %I.%I USING hnsw (embedding %s) WITH (m = %s, ef_construction = %s)',
            left(p_target_table, 50) || '_hnsw_idx', p_target_schema, p_target_table, v_opclass,
            (p_indexing->>'m')::int, (p_indexing->>'ef_construction')::int);
    END IF;
END
$fn$;


-- The keyword index of one store table (text_indexing, TextIndexingFullTextConfig): a generated
-- column chunk_tsv = to_tsvector(text_config, chunk), stored, with a GIN index. Generated, so the
-- workers write nothing new and an existing store gets it in place (the ALTER computes it for
-- every row; no vector changes). NULL or implementation 'none' removes it (the index goes with
-- the column). Idempotent: a column already made with the same configuration is kept.
CREATE OR REPLACE FUNCTION vectorizer._apply_text_indexing(
    p_schema name, p_table name, p_text_indexing jsonb
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rel regclass := format('%I.%I', p_schema, p_table)::regclass;
    v_impl text := coalesce(p_text_indexing->>'implementation', 'none');
    v_config regconfig;
    v_expr text;
    v_current text;
BEGIN
    IF v_impl NOT IN ('none', 'full_text') THEN
        RAISE EXCEPTION 'unknown text_indexing implementation %', v_impl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_get_expr(d.adbin, d.adrelid) INTO v_current
      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = v_rel AND a.attname = 'chunk_tsv' AND NOT a.attisdropped;
    IF v_impl = 'none' THEN
        EXECUTE format('ALTER TABLE %I.%I DROP COLUMN IF EXISTS chunk_tsv', p_schema, p_table);
        RETURN;
    END IF;
    BEGIN
        v_config := coalesce(p_text_indexing->>'text_config', 'english')::regconfig;
    EXCEPTION WHEN undefined_object OR invalid_name OR syntax_error THEN
        RAISE EXCEPTION 'text_indexing.text_config: text search configuration "%" does not exist '
            '(see \dF in psql: english, simple, german, ...)', p_text_indexing->>'text_config'
            USING ERRCODE = 'undefined_object';
    END;
    -- The expression as Postgres deparses it, so an unchanged configuration is recognised.
    v_expr := format('to_tsvector(%L::regconfig, chunk)', v_config::text);
    IF v_current IS NOT DISTINCT FROM v_expr THEN
        RETURN;
    END IF;
    IF v_current IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %I.%I DROP COLUMN chunk_tsv', p_schema, p_table);
    END IF;
    EXECUTE format('ALTER TABLE %I.%I ADD COLUMN chunk_tsv tsvector GENERATED ALWAYS AS (%s) STORED',
                   p_schema, p_table, v_expr);
    -- Unnamed: Postgres picks <table>_chunk_tsv_idx, numbered when a retired store holds that name.
    EXECUTE format('CREATE INDEX ON %I.%I USING gin (chunk_tsv)', p_schema, p_table);
END
$fn$;


-- Apply text_indexing in place to every store that serves or is being built (alter_vectorizer
-- with text_indexing: no new version, nothing re-embedded) and record it in their configs.
CREATE OR REPLACE FUNCTION vectorizer._alter_text_indexing(p_id int, p_text_indexing jsonb)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    cv record;
BEGIN
    FOR cv IN SELECT target_schema, target_table FROM vectorizer.config_versions
               WHERE vectorizer_id = p_id AND status IN ('active', 'building') LOOP
        PERFORM vectorizer._apply_text_indexing(cv.target_schema, cv.target_table, p_text_indexing);
    END LOOP;
    UPDATE vectorizer.config_versions
       SET config = config || jsonb_build_object('text_indexing', p_text_indexing)
     WHERE vectorizer_id = p_id AND status IN ('active', 'building');
    UPDATE vectorizer.vectorizers
       SET config = config || jsonb_build_object('text_indexing', p_text_indexing), updated_at = now()
     WHERE id = p_id;
END
$fn$;


-- The view: the store's columns plus every source column, joined on the primary key (the
-- source's key columns by their current names: a renamed key column keeps its attnum).
CREATE OR REPLACE FUNCTION vectorizer._create_view(p_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v vectorizer.vectorizers;
    v_join text;
BEGIN
    SELECT * INTO STRICT v FROM vectorizer.vectorizers WHERE id = p_id;
    IF v.view_table IS NULL THEN
        RETURN;  -- a column destination has no view
    END IF;
    SELECT string_agg(format('t.%I = s.%I', k->>'attname', coalesce(a.attname, k->>'attname')), ' AND ')
      INTO v_join
      FROM jsonb_array_elements(v.source_pk) AS k
      LEFT JOIN pg_attribute a ON a.attrelid = format('%I.%I', v.source_schema, v.source_table)::regclass
                              AND a.attnum = (k->>'attnum')::int AND NOT a.attisdropped;
    IF to_regnamespace(quote_ident(v.view_schema)) IS NULL THEN
        EXECUTE format('CREATE SCHEMA %I', v.view_schema);
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE VIEW %I.%I AS SELECT t.embedding_uuid, t.chunk_seq, t.chunk, t.embedding, s.* '
        'FROM %I.%I t JOIN %I.%I s ON %s',
        v.view_schema, v.view_table, v.target_schema, v.target_table,
        v.source_schema, v.source_table, v_join);
END
$fn$;


-- Check a config against the source table: the chunked column and template placeholders exist,
-- and no source column collides with the view's embedding columns.
CREATE OR REPLACE FUNCTION vectorizer._validate_source(
    p_source_schema name, p_source_table name, p_source_column text, p_placeholders text[]
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rel regclass := format('%I.%I', p_source_schema, p_source_table)::regclass;
    v_col text;
BEGIN
    SELECT attname INTO v_col FROM pg_attribute
     WHERE attrelid = v_rel AND attnum > 0 AND NOT attisdropped
       AND attname IN ('chunk', 'chunk_seq', 'embedding', 'embedding_uuid')
     ORDER BY attnum LIMIT 1;
    IF v_col IS NOT NULL THEN
        RAISE EXCEPTION 'source table %.% has a column named "%", which the embedding view reserves',
            p_source_schema, p_source_table, v_col USING ERRCODE = 'duplicate_column';
    END IF;
    PERFORM vectorizer._validate_read_columns(p_source_schema, p_source_table, p_source_column,
                                              p_placeholders);
END
$fn$;


-- The columns a config reads exist: the chunked column and every template placeholder. (A column
-- destination has no view, so _validate_source's reserved names do not apply to it.)
CREATE OR REPLACE FUNCTION vectorizer._validate_read_columns(
    p_source_schema name, p_source_table name, p_source_column text, p_placeholders text[]
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rel regclass := format('%I.%I', p_source_schema, p_source_table)::regclass;
    v_col text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = v_rel AND attname = p_source_column
                   AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'column "%" does not exist in source table %.%', p_source_column,
            p_source_schema, p_source_table USING ERRCODE = 'undefined_column';
    END IF;
    FOREACH v_col IN ARRAY coalesce(p_placeholders, '{}') LOOP
        IF v_col <> 'chunk' AND NOT EXISTS (
                SELECT 1 FROM pg_attribute WHERE attrelid = v_rel AND attname = v_col
                AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'formatting template placeholder $% is not a column of %.%', v_col,
                p_source_schema, p_source_table USING ERRCODE = 'undefined_column';
        END IF;
    END LOOP;
END
$fn$;


-- The embedding column of a column destination (pgai's ai.destination_column): added as
-- vector(N) when missing, accepted when it exists with that type; an HNSW index on it when the
-- config asks for one. Nothing else of the source changes.
CREATE OR REPLACE FUNCTION vectorizer._create_embedding_column(
    p_rel regclass, p_column text, p_dimensions int, p_indexing jsonb
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_type text;
    v_opclass text;
BEGIN
    PERFORM vectorizer._check_name('embedding column', p_column);
    IF p_dimensions IS NULL OR p_dimensions <= 0 THEN
        RAISE EXCEPTION 'embedding dimensions must be a positive integer, got %', p_dimensions
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT format_type(atttypid, atttypmod) INTO v_type FROM pg_attribute
     WHERE attrelid = p_rel AND attname = p_column AND attnum > 0 AND NOT attisdropped;
    IF v_type IS NULL THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I vector(%s)', p_rel, p_column, p_dimensions);
    ELSIF v_type <> format('vector(%s)', p_dimensions) THEN
        RAISE EXCEPTION 'column "%" of % is %, but the embedding needs vector(%)', p_column, p_rel,
            v_type, p_dimensions
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'name another embedding_column, or change the column''s type first';
    END IF;
    IF p_indexing->>'implementation' = 'hnsw' THEN
        v_opclass := p_indexing->>'opclass';
        IF v_opclass NOT IN ('vector_cosine_ops', 'vector_l2_ops', 'vector_ip_ops', 'vector_l1_ops') THEN
            RAISE EXCEPTION 'unknown HNSW opclass %', v_opclass USING ERRCODE = 'invalid_parameter_value';
        END IF;
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON %s USING hnsw (%I %s) WITH (m = %s, ef_construction = %s)',
            left((SELECT relname FROM pg_class WHERE oid = p_rel) || '_' || p_column, 50) || '_hnsw_idx',
            p_rel, p_column, v_opclass, (p_indexing->>'m')::int, (p_indexing->>'ef_construction')::int);
    END IF;
END
$fn$;


-- Documents (docs/documents.md): a URI is read from a text column; a document in a column is
-- bytea. pgai's rules (ai._validate_loading, ai._validate_parsing), checked against the live table.
CREATE OR REPLACE FUNCTION vectorizer._validate_loading(
    p_source_schema name, p_source_table name, p_config jsonb
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_loading text := p_config->'loading'->>'implementation';
    v_parsing text := coalesce(p_config->'parsing'->>'implementation', 'auto');
    v_column text := p_config->'loading'->>'column_name';
    v_type text;
BEGIN
    IF v_loading IS NULL THEN
        RETURN;
    END IF;
    SELECT t.typname INTO v_type
      FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
     WHERE a.attrelid = format('%I.%I', p_source_schema, p_source_table)::regclass
       AND a.attname = v_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF v_type IS NULL THEN
        RETURN;  -- _validate_source names the missing column
    END IF;
    IF v_loading = 'uri' AND v_type NOT IN ('text', 'varchar', 'bpchar') THEN
        RAISE EXCEPTION 'column "%" of %.% is %, but LoadingUriConfig reads a URI from a text column',
            v_column, p_source_schema, p_source_table, v_type USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF v_loading = 'column' AND v_parsing = 'none' AND v_type = 'bytea' THEN
        RAISE EXCEPTION 'column "%" of %.% is bytea (a document), which ParsingNoneConfig cannot read; use ParsingAutoConfig()',
            v_column, p_source_schema, p_source_table USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF v_loading = 'column' AND v_parsing IN ('pymupdf', 'docling') AND v_type <> 'bytea' THEN
        RAISE EXCEPTION 'column "%" of %.% is %, but parsing % needs a document: a bytea column or LoadingUriConfig',
            v_column, p_source_schema, p_source_table, v_type, v_parsing USING ERRCODE = 'datatype_mismatch';
    END IF;
END
$fn$;


CREATE OR REPLACE FUNCTION vectorizer.create_vectorizer(
    p_source_schema text, p_source_table text, p_name text,
    p_target_schema text, p_target_table text, p_view_schema text, p_view_table text,
    p_config jsonb, p_source_column text, p_placeholders text[], p_dimensions int,
    p_if_not_exists bool DEFAULT false, p_grant_to text[] DEFAULT '{}'
) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
    v_schema name := p_source_schema;
    v_rel regclass;
    v_pk jsonb;
    v_id int;
    v_name text;
    v_target_schema name;
    v_target_table name;
    v_view_schema name;
    v_view_table name;
    v_role text;
    v_column text := CASE WHEN p_config->'destination'->>'implementation' = 'column'
                          THEN p_config->'destination'->>'embedding_column' END;
BEGIN
    PERFORM vectorizer._check_name('source table', p_source_table);
    IF v_schema IS NULL THEN
        SELECT n.nspname INTO v_schema
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = p_source_table AND c.relkind IN ('r', 'p')
           AND n.nspname = ANY (current_schemas(false))
         ORDER BY array_position(current_schemas(false), n.nspname::text) LIMIT 1;
    END IF;
    v_rel := to_regclass(format('%I.%I', coalesce(v_schema, 'public'), p_source_table));
    IF v_rel IS NULL OR (SELECT relkind FROM pg_class WHERE oid = v_rel) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'source table %.% does not exist', coalesce(v_schema, '<search_path>'), p_source_table
            USING ERRCODE = 'undefined_table';
    END IF;
    v_schema := coalesce(v_schema, 'public');

    SELECT jsonb_agg(jsonb_build_object('attname', a.attname,
                                        'typname', format_type(a.atttypid, a.atttypmod),
                                        'attnum', a.attnum) ORDER BY k.ord)
      INTO v_pk
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = v_rel AND i.indisprimary;
    IF v_pk IS NULL THEN
        RAISE EXCEPTION 'source table %.% has no primary key; a vectorizer needs one to key its rows',
            v_schema, p_source_table USING ERRCODE = 'invalid_table_definition';
    END IF;

    IF v_column IS NOT NULL THEN
        -- a column destination: no store, no view (their names stay NULL); pgai's default name
        IF p_config->'chunking'->>'implementation' IS DISTINCT FROM 'none' THEN
            RAISE EXCEPTION 'a column destination holds one embedding per row: chunking must be none'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'chunking=ChunkingNoneConfig()';
        END IF;
        IF coalesce(p_target_schema, p_target_table, p_view_schema, p_view_table) IS NOT NULL THEN
            RAISE EXCEPTION 'a column destination has no store table or view to name'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_name := coalesce(p_name, v_schema || '_' || p_source_table || '_' || v_column);
        IF EXISTS (SELECT 1 FROM vectorizer.vectorizers
                    WHERE name <> v_name AND source_schema = v_schema AND source_table = p_source_table
                      AND config->'destination'->>'embedding_column' = v_column) THEN
            RAISE EXCEPTION 'column "%" of %.% is the destination of another vectorizer', v_column,
                v_schema, p_source_table USING ERRCODE = 'duplicate_object';
        END IF;
    ELSE
        v_target_schema := coalesce(p_target_schema, v_schema);
        v_target_table := coalesce(p_target_table, p_source_table || '_embedding_store');
        v_view_schema := coalesce(p_view_schema, v_target_schema);
        v_view_table := coalesce(p_view_table, p_source_table || '_embedding');
        v_name := coalesce(p_name, v_view_schema || '_' || v_view_table);
        PERFORM vectorizer._check_name('target schema', v_target_schema);
        PERFORM vectorizer._check_name('target table', v_target_table);
        PERFORM vectorizer._check_name('view schema', v_view_schema);
        PERFORM vectorizer._check_name('view table', v_view_table);
    END IF;
    IF v_name = '' THEN
        RAISE EXCEPTION 'vectorizer name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT id INTO v_id FROM vectorizer.vectorizers
     WHERE name = v_name OR (target_schema = v_target_schema AND target_table = v_target_table);
    IF v_id IS NOT NULL THEN
        IF p_if_not_exists THEN
            RAISE NOTICE 'vectorizer "%" already exists, skipping', v_name;
            RETURN v_id;
        END IF;
        RAISE EXCEPTION 'vectorizer "%" (or one on %.%) already exists', v_name, v_target_schema, v_target_table
            USING ERRCODE = 'duplicate_object', HINT = 'pass if_not_exists=True to skip';
    END IF;
    IF v_column IS NULL AND to_regclass(format('%I.%I', v_view_schema, v_view_table)) IS NOT NULL THEN
        RAISE EXCEPTION 'view %.% already exists', v_view_schema, v_view_table
            USING ERRCODE = 'duplicate_table';
    END IF;

    IF v_column IS NULL THEN
        PERFORM vectorizer._validate_source(v_schema, p_source_table, p_source_column, p_placeholders);
    PERFORM vectorizer._validate_loading(v_schema, p_source_table, p_config);
    ELSE
        PERFORM vectorizer._validate_read_columns(v_schema, p_source_table, p_source_column, p_placeholders);
        IF v_column = p_source_column OR v_column = ANY (coalesce(p_placeholders, '{}')) THEN
            RAISE EXCEPTION 'embedding_column "%" is a column the vectorizer reads', v_column
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    INSERT INTO vectorizer.vectorizers
        (name, source_schema, source_table, source_pk, target_schema, target_table,
         view_schema, view_table, config, config_version, publication_name, source_partitions)
    VALUES (v_name, v_schema, p_source_table, v_pk, v_target_schema, v_target_table,
            v_view_schema, v_view_table, p_config, 1, 'placeholder', vectorizer._leaf_partitions(v_rel))
    RETURNING id INTO v_id;
    UPDATE vectorizer.vectorizers SET publication_name = 'vectorizer_' || v_id WHERE id = v_id;
    INSERT INTO vectorizer.config_versions
        (vectorizer_id, version, config, target_schema, target_table, status, activated_at,
         source_columns)
    VALUES (v_id, 1, p_config, v_target_schema, v_target_table, 'active', now(),
            vectorizer._config_columns(v_rel, p_config));

    IF v_column IS NULL THEN
        PERFORM vectorizer._create_store(v_pk, v_target_schema, v_target_table, p_dimensions,
                                         p_config->'indexing');
        PERFORM vectorizer._apply_text_indexing(v_target_schema, v_target_table, p_config->'text_indexing');
        PERFORM vectorizer._create_view(v_id);
    ELSE
        PERFORM vectorizer._create_embedding_column(v_rel, v_column, p_dimensions, p_config->'indexing');
    END IF;
    -- publish_via_partition_root: changes of a partitioned source arrive as changes of the
    -- source itself (pgoutput would name the partition otherwise), partitions attached later included.
    EXECUTE format('CREATE PUBLICATION %I FOR TABLE %I.%I WITH (publish_via_partition_root = true)',
                   'vectorizer_' || v_id, v_schema, p_source_table);
    PERFORM vectorizer._install_truncate_triggers(v_rel);

    FOREACH v_role IN ARRAY coalesce(p_grant_to, '{}') LOOP
        EXECUTE format('GRANT SELECT ON vectorizer.vectorizers, vectorizer.config_versions,'
                       ' vectorizer.vectorizer_status, vectorizer.vectorizer_errors TO %I', v_role);
        IF v_column IS NOT NULL THEN  -- the embeddings are in the source: as pgai, it may read that
            EXECUTE format('GRANT USAGE ON SCHEMA vectorizer, %I TO %I', v_schema, v_role);
            EXECUTE format('GRANT SELECT ON %s TO %I', v_rel, v_role);
            CONTINUE;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA vectorizer, %I, %I TO %I', v_target_schema, v_view_schema, v_role);
        EXECUTE format('GRANT SELECT ON %I.%I, %I.%I TO %I',
                       v_target_schema, v_target_table, v_view_schema, v_view_table, v_role);
    END LOOP;
    RETURN v_id;
END
$fn$;


-- Find a vectorizer by name or by its store table ("table" or "schema.table").
CREATE OR REPLACE FUNCTION vectorizer._find(p_name text, p_target_table text) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id int;
BEGIN
    IF p_name IS NOT NULL THEN
        SELECT id INTO v_id FROM vectorizer.vectorizers WHERE name = p_name;
    ELSE
        SELECT id INTO v_id FROM vectorizer.vectorizers
         WHERE target_table = p_target_table OR target_schema || '.' || target_table = p_target_table
         ORDER BY (target_schema = ANY (current_schemas(false))) DESC LIMIT 1;
    END IF;
    RETURN v_id;
END
$fn$;


-- Version 1 had no slot prefix parameter; the Alembic operation passes pgai_orm.names.SLOT_PREFIX.
-- A direct call without it (NULL) leaves the slot to the connector, which drops its own slot when
-- it sees no vectorizer left.
DROP FUNCTION IF EXISTS vectorizer.drop_vectorizer(text, text, bool, bool);

CREATE OR REPLACE FUNCTION vectorizer.drop_vectorizer(
    p_name text, p_target_table text, p_drop_all bool DEFAULT false, p_if_exists bool DEFAULT false,
    p_slot_prefix text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v vectorizer.vectorizers;
    cv record;
    v_slot name;
BEGIN
    IF p_name IS NULL AND p_target_table IS NULL THEN
        RAISE EXCEPTION 'drop_vectorizer needs a name or a target_table' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v FROM vectorizer.vectorizers WHERE id = vectorizer._find(p_name, p_target_table);
    IF v.id IS NULL THEN
        IF p_if_exists THEN
            RETURN;
        END IF;
        RAISE EXCEPTION 'vectorizer % does not exist', coalesce(p_name, p_target_table)
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP PUBLICATION IF EXISTS %I', v.publication_name);
    -- drop_all of a column destination keeps the column, as pgai does: it is the user's table
    IF p_drop_all AND v.view_table IS NOT NULL THEN
        EXECUTE format('DROP VIEW IF EXISTS %I.%I', v.view_schema, v.view_table);
        FOR cv IN SELECT target_schema, target_table FROM vectorizer.config_versions
                   WHERE vectorizer_id = v.id AND target_table IS NOT NULL LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I.%I', cv.target_schema, cv.target_table);
        END LOOP;
    END IF;
    DELETE FROM vectorizer.applied_state WHERE vectorizer_id = v.id;
    DELETE FROM vectorizer.vectorizers WHERE id = v.id;
    PERFORM vectorizer._drop_truncate_triggers(to_regclass(format('%I.%I', v.source_schema, v.source_table)));
    -- An orphaned slot holds WAL forever: when the last vectorizer of this database goes, drop the
    -- connector's inactive slots. An active slot is dropped by the connector itself when it sees
    -- that no vectorizer is left.
    IF p_slot_prefix IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vectorizer.vectorizers) THEN
        FOR v_slot IN SELECT slot_name FROM pg_replication_slots
                       WHERE database = current_database() AND plugin = 'pgoutput'
                         AND starts_with(slot_name, p_slot_prefix) AND NOT active LOOP
            PERFORM pg_drop_replication_slot(v_slot);
        END LOOP;
    END IF;
END
$fn$;


-- Change a vectorizer's config. p_patch holds the top-level config keys that change. A change of
-- what gets embedded (embedding, chunking, formatting, loading) makes a new config version with a
-- fresh store table "<target>_v<N>" that processors fill by replaying the topic while the current
-- version keeps serving; anything else (processing, indexing options) applies in place.
CREATE OR REPLACE FUNCTION vectorizer.alter_vectorizer(
    p_name text, p_patch jsonb, p_source_column text, p_placeholders text[], p_dimensions int
) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
    v vectorizer.vectorizers;
    v_config jsonb;
    v_version int;
    v_table name;
    cv record;
BEGIN
    SELECT * INTO v FROM vectorizer.vectorizers WHERE name = p_name;
    IF v.id IS NULL THEN
        RAISE EXCEPTION 'vectorizer % does not exist', p_name USING ERRCODE = 'undefined_object';
    END IF;
    SELECT config INTO v_config FROM vectorizer.config_versions
     WHERE vectorizer_id = v.id ORDER BY version DESC LIMIT 1;
    v_config := v_config || p_patch;
    IF v.config->'destination'->>'implementation' = 'column' THEN
        -- one column, one vector per row: a new version could only be built into the column the
        -- current one serves from, so what is embedded cannot change in place
        IF p_patch ?| ARRAY['embedding', 'chunking', 'formatting', 'loading', 'destination']
                OR coalesce(p_patch->'text_indexing'->>'implementation', 'none') <> 'none' THEN
            RAISE EXCEPTION 'vectorizer % writes into column "%" of its source: only processing and indexing can change in place',
                p_name, v.config->'destination'->>'embedding_column'
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'drop the vectorizer and create it again with the new config (it embeds every row again)';
        END IF;
        IF p_patch->'indexing'->>'implementation' = 'hnsw' THEN
            PERFORM vectorizer._create_embedding_column(
                format('%I.%I', v.source_schema, v.source_table)::regclass,
                v.config->'destination'->>'embedding_column', p_dimensions, p_patch->'indexing');
        END IF;
        UPDATE vectorizer.config_versions SET config = config || p_patch
         WHERE vectorizer_id = v.id AND status IN ('active', 'building');
        UPDATE vectorizer.vectorizers SET config = config || p_patch, updated_at = now() WHERE id = v.id;
        RETURN v.config_version;
    END IF;
    -- Validate the merged config: a new template must name columns of the source, a new
    -- chunking or loading config must name an existing column.
    PERFORM vectorizer._validate_source(
        v.source_schema, v.source_table,
        coalesce(p_source_column, v_config->'loading'->>'column_name', v_config->'chunking'->>'chunk_column'),
        p_placeholders);
    PERFORM vectorizer._validate_loading(v.source_schema, v.source_table, v_config);
    -- A keyword index needs no re-embedding: it changes the current stores in place.
    IF p_patch ? 'text_indexing' THEN
        PERFORM vectorizer._alter_text_indexing(v.id, p_patch->'text_indexing');
    END IF;
    IF NOT (p_patch ?| ARRAY['embedding', 'chunking', 'formatting', 'loading', 'parsing']) THEN
        UPDATE vectorizer.config_versions SET config = config || p_patch
         WHERE vectorizer_id = v.id AND status IN ('active', 'building');
        UPDATE vectorizer.vectorizers SET config = config || p_patch, updated_at = now() WHERE id = v.id;
        RETURN v.config_version;
    END IF;
    -- A version still building is superseded by the new one.
    FOR cv IN SELECT * FROM vectorizer.config_versions
               WHERE vectorizer_id = v.id AND status = 'building' LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I.%I', cv.target_schema, cv.target_table);
        UPDATE vectorizer.config_versions SET status = 'retired'
         WHERE vectorizer_id = v.id AND version = cv.version;
    END LOOP;
    SELECT max(version) + 1 INTO v_version FROM vectorizer.config_versions WHERE vectorizer_id = v.id;
    v_table := left(v.target_table, 55) || '_v' || v_version;
    PERFORM vectorizer._create_store(v.source_pk, v.target_schema, v_table, p_dimensions, v_config->'indexing');
    PERFORM vectorizer._apply_text_indexing(v.target_schema, v_table, v_config->'text_indexing');
    INSERT INTO vectorizer.config_versions (vectorizer_id, version, config, target_schema, target_table, status,
                                            source_columns)
    VALUES (v.id, v_version, v_config, v.target_schema, v_table, 'building',
            vectorizer._config_columns(format('%I.%I', v.source_schema, v.source_table)::regclass, v_config));
    -- A serving version that no worker has written a row of yet (create_vectorizer and
    -- alter_vectorizer in one upgrade, or an alteration before the first worker ran) is
    -- superseded before it was built: building it anyway would embed every row twice, once for
    -- a config nobody asked to keep. The new version serves at once instead; its workers fill it
    -- from the topic like any new store.
    -- (A replay, the same config again, still builds a new store: that is what it asks for.)
    IF NOT EXISTS (SELECT 1 FROM vectorizer.applied_state
                    WHERE vectorizer_id = v.id AND version = v.config_version)
       AND v_config IS DISTINCT FROM (SELECT config FROM vectorizer.config_versions
                                       WHERE vectorizer_id = v.id AND version = v.config_version) THEN
        PERFORM vectorizer.activate_version(v.id, v_version);
    END IF;
    RETURN v_version;
END
$fn$;


-- Switch queries to a caught-up version in one transaction: the new store takes the public table
-- name (so ORM models keep working), the old one is kept under "<target>_v<old>" and retired,
-- and the view is rebuilt over the new store.
CREATE OR REPLACE FUNCTION vectorizer.activate_version(p_id int, p_version int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v vectorizer.vectorizers;
    v_new vectorizer.config_versions;
    v_old_name name;
BEGIN
    SELECT * INTO STRICT v FROM vectorizer.vectorizers WHERE id = p_id FOR UPDATE;
    SELECT * INTO STRICT v_new FROM vectorizer.config_versions
     WHERE vectorizer_id = p_id AND version = p_version AND status = 'building';
    v_old_name := left(v.target_table, 55) || '_v' || v.config_version;
    EXECUTE format('DROP VIEW IF EXISTS %I.%I', v.view_schema, v.view_table);
    EXECUTE format('DROP TABLE IF EXISTS %I.%I', v.target_schema, v_old_name);
    EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', v.target_schema, v.target_table, v_old_name);
    EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', v_new.target_schema, v_new.target_table, v.target_table);
    UPDATE vectorizer.config_versions SET status = 'retired', target_table = v_old_name
     WHERE vectorizer_id = p_id AND version = v.config_version;
    UPDATE vectorizer.config_versions SET status = 'active', activated_at = now(), target_table = v.target_table
     WHERE vectorizer_id = p_id AND version = p_version;
    UPDATE vectorizer.vectorizers SET config_version = p_version, config = v_new.config, updated_at = now()
     WHERE id = p_id;
    DELETE FROM vectorizer.applied_state WHERE vectorizer_id = p_id AND version = v.config_version;
    PERFORM vectorizer._create_view(p_id);
END
$fn$;


-- ======== Lifecycle of the source table (docs/operations.md, "Lifecycle events") ========

-- Ask the connector to read the source table again: it forgets the table's state, so its next
-- catalog poll snapshots the table as if it were new. Every snapshot ends with a truncate below
-- its rows (connector/snapshot.py, "Every snapshot is a full resync"), so the stores end with
-- exactly the rows the table has: rows of an attached partition come in, rows of a detached,
-- dropped or truncated one leave; unchanged rows keep their vectors (only their LSN moves).
CREATE OR REPLACE FUNCTION vectorizer._request_resync(p_rel regclass, p_why text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM vectorizer.connector_tables t USING vectorizer.vectorizers v
     WHERE to_regclass(format('%I.%I', v.source_schema, v.source_table)) = p_rel
       AND t.source_schema = v.source_schema AND t.source_table = v.source_table;
    RAISE NOTICE 'vectorizer: %: the connector reads % again', p_why, p_rel;
END
$fn$;


-- TRUNCATE of one partition is not streamed when the publication publishes via the partition
-- root (pgoutput skips it), so each leaf partition of a source gets a trigger that asks for a
-- resync. A TRUNCATE of the source itself is streamed: its own BEFORE trigger, which fires
-- before those of its partitions in the same statement, tells them to stay quiet.
CREATE OR REPLACE FUNCTION vectorizer._on_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_quiet text[] := string_to_array(coalesce(current_setting('vectorizer.truncating', true), ''), ',');
    v_source regclass;
BEGIN
    IF TG_ARGV[0] = 'source' THEN
        IF TG_WHEN = 'BEFORE' THEN
            v_quiet := array_append(v_quiet, TG_RELID::text);
        ELSE
            v_quiet := array_remove(v_quiet, TG_RELID::text);
        END IF;
        PERFORM set_config('vectorizer.truncating', array_to_string(v_quiet, ','), true);
        RETURN NULL;
    END IF;
    FOR v_source IN SELECT DISTINCT s.rel
                      FROM (SELECT to_regclass(format('%I.%I', source_schema, source_table)) AS rel
                              FROM vectorizer.vectorizers) s
                     WHERE s.rel IN (SELECT relid FROM pg_partition_ancestors(TG_RELID)) LOOP
        IF NOT (v_source::oid::text = ANY (v_quiet)) THEN
            PERFORM vectorizer._request_resync(v_source, format('partition %s was truncated', TG_RELID::regclass));
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;


CREATE OR REPLACE FUNCTION vectorizer._install_truncate_triggers(p_rel regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_leaf regclass;
BEGIN
    IF p_rel IS NULL OR (SELECT relkind FROM pg_class WHERE oid = p_rel) IS DISTINCT FROM 'p' THEN
        RETURN;
    END IF;
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = p_rel AND tgname = 'vectorizer_truncate_before') THEN
            EXECUTE format('CREATE TRIGGER vectorizer_truncate_before BEFORE TRUNCATE ON %s'
                           ' FOR EACH STATEMENT EXECUTE FUNCTION vectorizer._on_truncate(''source'')', p_rel);
            EXECUTE format('CREATE TRIGGER vectorizer_truncate_after AFTER TRUNCATE ON %s'
                           ' FOR EACH STATEMENT EXECUTE FUNCTION vectorizer._on_truncate(''source'')', p_rel);
        END IF;
        FOR v_leaf IN SELECT unnest(vectorizer._leaf_partitions(p_rel))::regclass LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = v_leaf AND tgname = 'vectorizer_truncate') THEN
                EXECUTE format('CREATE TRIGGER vectorizer_truncate BEFORE TRUNCATE ON %s'
                               ' FOR EACH STATEMENT EXECUTE FUNCTION vectorizer._on_truncate(''partition'')', v_leaf);
            END IF;
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'vectorizer: this role may not create triggers on the partitions of %: a TRUNCATE of a'
            ' single partition will not reach the stores (docs/operations.md, "Lifecycle events")', p_rel;
    END;
END
$fn$;


-- The triggers go with the last vectorizer of the source (and from a detached partition).
CREATE OR REPLACE FUNCTION vectorizer._drop_truncate_triggers(p_rel regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    t record;
BEGIN
    IF p_rel IS NULL OR EXISTS (
            SELECT 1 FROM vectorizer.vectorizers
             WHERE to_regclass(format('%I.%I', source_schema, source_table)) = ANY (
                   p_rel::oid || ARRAY(SELECT relid FROM pg_partition_ancestors(p_rel)))) THEN
        RETURN;
    END IF;
    FOR t IN SELECT tg.tgname, tg.tgrelid::regclass AS rel FROM pg_trigger tg
              WHERE tg.tgfoid = 'vectorizer._on_truncate'::regproc
                AND (tg.tgrelid = p_rel OR tg.tgrelid IN (SELECT relid FROM pg_partition_tree(p_rel))) LOOP
        BEGIN
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', t.tgname, t.rel);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;  -- harmless: the trigger asks for nothing once no vectorizer reads the table
        END;
    END LOOP;
END
$fn$;


-- Compare the leaf partitions of each partitioned source (or of p_rel only) with the ones
-- recorded. Rows that came (a partition attached with rows) or went (a partition detached or
-- dropped) passed no change stream, so the table is resynced; a partition created empty is only
-- recorded. Run by the DDL event trigger; by hand (as the table owner) where there is none.
-- Returns how many tables it resynced.
CREATE OR REPLACE FUNCTION vectorizer.sync_partitions(p_rel regclass DEFAULT NULL) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    v_now oid[];
    v_leaf oid;
    v_rows bool;
    v_has bool;
    v_changes text[];
    v_done int := 0;
BEGIN
    FOR r IN SELECT DISTINCT ON (s.rel) s.rel, s.source_partitions
               FROM (SELECT id, source_partitions,
                            to_regclass(format('%I.%I', source_schema, source_table)) AS rel
                       FROM vectorizer.vectorizers) s
              WHERE s.rel IS NOT NULL AND (p_rel IS NULL OR s.rel = p_rel)
              ORDER BY s.rel, s.id LOOP
        v_now := vectorizer._leaf_partitions(r.rel);
        CONTINUE WHEN v_now IS NOT DISTINCT FROM r.source_partitions;
        v_rows := false;
        v_changes := '{}';
        FOR v_leaf IN SELECT unnest(coalesce(r.source_partitions, '{}'))
                      EXCEPT SELECT unnest(coalesce(v_now, '{}')) LOOP
            IF EXISTS (SELECT 1 FROM pg_class WHERE oid = v_leaf) THEN
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', v_leaf::regclass) INTO v_has;
                v_changes := v_changes || format('%s detached', v_leaf::regclass);
                PERFORM vectorizer._drop_truncate_triggers(v_leaf::regclass);
            ELSE
                v_has := true;  -- dropped: what it held is unknown
                v_changes := v_changes || format('partition %s dropped', v_leaf);
            END IF;
            v_rows := v_rows OR v_has;
        END LOOP;
        FOR v_leaf IN SELECT unnest(coalesce(v_now, '{}'))
                      EXCEPT SELECT unnest(coalesce(r.source_partitions, '{}')) LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', v_leaf::regclass) INTO v_has;
            v_changes := v_changes || format('%s attached', v_leaf::regclass);
            v_rows := v_rows OR (v_has AND r.source_partitions IS NOT NULL);
        END LOOP;
        IF v_rows THEN
            PERFORM vectorizer._request_resync(r.rel, array_to_string(v_changes, ', '));
            v_done := v_done + 1;
        END IF;
        UPDATE vectorizer.vectorizers SET source_partitions = v_now
         WHERE to_regclass(format('%I.%I', source_schema, source_table)) = r.rel;
        PERFORM vectorizer._install_truncate_triggers(r.rel);
    END LOOP;
    RETURN v_done;
END
$fn$;


-- A Python string literal, for the fixes that error messages spell out.
CREATE OR REPLACE FUNCTION vectorizer._py_str(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT '''' || replace(replace(p_text, '\', '\\'), '''', '\''') || ''''
$fn$;


-- One `schema` error per vectorizer version whose source lost a column it reads (renamed or
-- dropped), or whose partitions changed with no event trigger to resync it; an error goes
-- when its cause does. Run by the worker supervisor on every poll and by the DDL event trigger.
-- Returns the messages it newly recorded.
CREATE OR REPLACE FUNCTION vectorizer.check_sources() RETURNS SETOF text
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    c record;
    v_rel regclass;
    v_problems text[];
    v_details jsonb;
    v_message text;
    v_fix text;
    v_class text;
BEGIN
    -- one checker at a time; a busy lock means another is checking (or a DDL transaction that
    -- checked holds it until it commits): the next poll checks again, nobody waits
    IF NOT pg_try_advisory_xact_lock(hashtext('vectorizer.errors:schema')) THEN
        RETURN;
    END IF;
    FOR r IN SELECT v.id, v.name, v.source_schema, v.source_table, v.source_partitions, cv.version,
                    cv.config, cv.source_columns
               FROM vectorizer.vectorizers v JOIN vectorizer.config_versions cv ON cv.vectorizer_id = v.id
              WHERE cv.status IN ('active', 'building') ORDER BY v.id, cv.version LOOP
        v_rel := to_regclass(format('%I.%I', r.source_schema, r.source_table));
        v_problems := '{}';
        v_details := '[]';
        IF v_rel IS NOT NULL THEN
            FOR c IN SELECT e->>'attname' AS was, e->>'role' AS role, a.attname::text AS now,
                            coalesce(a.attisdropped, true) AS gone
                       FROM jsonb_array_elements(coalesce(r.source_columns, '[]')) AS e
                       LEFT JOIN pg_attribute a ON a.attrelid = v_rel AND a.attnum = (e->>'attnum')::int
                      WHERE e->>'attnum' IS NOT NULL LOOP
                CONTINUE WHEN NOT c.gone AND c.now = c.was;
                IF c.role = 'chunk' AND r.config->'loading' IS NOT NULL
                        AND jsonb_typeof(r.config->'loading') = 'object' THEN
                    v_fix := format('loading=LoadingColumnConfig(column_name=%s)', vectorizer._py_str(coalesce(c.now, '...')));
                ELSIF c.role = 'chunk' THEN
                    v_class := CASE r.config->'chunking'->>'implementation'
                        WHEN 'recursive_character_text_splitter' THEN 'ChunkingRecursiveCharacterTextSplitterConfig'
                        WHEN 'character_text_splitter' THEN 'ChunkingCharacterTextSplitterConfig'
                        ELSE 'Chunking...Config' END;
                    v_fix := format('chunking=%s(chunk_column=%s, ...)', v_class, vectorizer._py_str(coalesce(c.now, '...')));
                ELSE
                    v_fix := format('formatting=FormattingPythonTemplateConfig(template=%s)', vectorizer._py_str(
                        CASE WHEN c.gone THEN r.config->'formatting'->>'template'
                             ELSE regexp_replace(r.config->'formatting'->>'template',
                                                 '\$(\{?)' || c.was || '(?![_A-Za-z0-9])', '$\1' || c.now, 'g') END));
                END IF;
                v_problems := v_problems || format(
                    'column "%s" of %I.%I, which %s, was %s; fix: op.alter_vectorizer(%s, %s)'
                    ' (a new version that embeds every row again)%s',
                    c.was, r.source_schema, r.source_table,
                    CASE c.role WHEN 'chunk' THEN 'it chunks' ELSE 'its formatting template reads' END,
                    CASE WHEN c.gone THEN 'dropped: rows that change from now on get a load error and'
                                          ' lose their chunks'
                         ELSE format('renamed to "%s": the workers follow the rename, but the config'
                                     ' still names "%s"', c.now, c.was) END,
                    vectorizer._py_str(r.name), v_fix,
                    CASE WHEN c.gone THEN ', or drop the vectorizer' ELSE ', or rename the column back' END);
                v_details := v_details || jsonb_build_object('column', c.was, 'role', c.role,
                                                             'renamed_to', CASE WHEN NOT c.gone THEN c.now END,
                                                             'dropped', c.gone);
            END LOOP;
            IF vectorizer._leaf_partitions(v_rel) IS DISTINCT FROM r.source_partitions THEN
                v_problems := v_problems || format(
                    'partitions of %I.%I were attached, detached or dropped and no event trigger resynced'
                    ' the table, so rows that came or went are not in the store; fix: SELECT'
                    ' vectorizer.sync_partitions(%L) as the owner of the table',
                    r.source_schema, r.source_table, format('%I.%I', r.source_schema, r.source_table));
                v_details := v_details || jsonb_build_object('partitions', 'changed');
            END IF;
        END IF;
        v_message := CASE WHEN cardinality(v_problems) > 0 THEN
            format('vectorizer %s (version %s): ', r.name, r.version) || array_to_string(v_problems, '; ') END;
        DELETE FROM vectorizer.errors
         WHERE vectorizer_id = r.id AND version = r.version AND step = 'schema'
           AND message IS DISTINCT FROM v_message;
        IF v_message IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM vectorizer.errors
                 WHERE vectorizer_id = r.id AND version = r.version AND step = 'schema') THEN
            INSERT INTO vectorizer.errors (vectorizer_id, version, pk, step, message, details)
            VALUES (r.id, r.version, NULL, 'schema', v_message, jsonb_build_object('problems', v_details));
            RETURN NEXT v_message;
        END IF;
    END LOOP;
    DELETE FROM vectorizer.errors e
     WHERE e.step = 'schema' AND NOT EXISTS (
           SELECT 1 FROM vectorizer.config_versions cv
            WHERE cv.vectorizer_id = e.vectorizer_id AND cv.version = e.version
              AND cv.status IN ('active', 'building'));
END
$fn$;


-- What a view must get back when it is created again: its owner, grants and comment.
CREATE OR REPLACE FUNCTION vectorizer._view_meta(p_view regclass) RETURNS jsonb
LANGUAGE sql STABLE AS $fn$
    SELECT jsonb_build_object('owner', pg_get_userbyid(c.relowner), 'acl', c.relacl::text[],
                              'comment', obj_description(c.oid, 'pg_class'))
      FROM pg_class c WHERE c.oid = p_view
$fn$;


CREATE OR REPLACE FUNCTION vectorizer._restore_view_meta(p_schema name, p_view name, p_meta jsonb)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    g record;
BEGIN
    IF p_meta IS NULL THEN
        RETURN;
    END IF;
    FOR g IN SELECT (a).privilege_type AS priv, (a).grantee AS grantee, (a).is_grantable AS grantable
               FROM (SELECT aclexplode(ARRAY(SELECT jsonb_array_elements_text(p_meta->'acl'))::aclitem[]) AS a) x
              WHERE jsonb_typeof(p_meta->'acl') = 'array' LOOP
        EXECUTE format('GRANT %s ON %I.%I TO %s%s', g.priv, p_schema, p_view,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                       CASE WHEN g.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    IF p_meta->>'comment' IS NOT NULL THEN
        EXECUTE format('COMMENT ON VIEW %I.%I IS %L', p_schema, p_view, p_meta->>'comment');
    END IF;
    IF p_meta->>'owner' IS NOT NULL AND p_meta->>'owner' <> current_user THEN
        EXECUTE format('ALTER VIEW %I.%I OWNER TO %I', p_schema, p_view, p_meta->>'owner');
    END IF;
END
$fn$;


-- Drop the embedding views over p_source so that an ALTER TABLE the views would block (ALTER
-- COLUMN ... TYPE, DROP COLUMN) can run; vectorizer.rebuild_views(p_source) in the same
-- transaction creates them again with their owner, grants and comment. The DDL event trigger
-- does both around every ALTER TABLE of a source; by hand (docs/operations.md):
--   BEGIN; SELECT vectorizer.drop_views('t'); ALTER TABLE t ...; SELECT vectorizer.rebuild_views('t'); COMMIT;
-- A view of the user's on top of an embedding view makes this fail (DROP VIEW says which).
CREATE OR REPLACE FUNCTION vectorizer.drop_views(p_source regclass) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
    v record;
    v_view regclass;
    v_saved jsonb := coalesce(nullif(current_setting('vectorizer.dropped_views', true), ''), '{}')::jsonb;
    v_n int := 0;
BEGIN
    FOR v IN SELECT id, view_schema, view_table, target_schema, target_table FROM vectorizer.vectorizers
              WHERE to_regclass(format('%I.%I', source_schema, source_table)) = p_source
                AND view_table IS NOT NULL ORDER BY id LOOP
        v_view := to_regclass(format('%I.%I', v.view_schema, v.view_table));
        -- without its store the view could not come back: leave it (the ALTER then says why not)
        CONTINUE WHEN v_view IS NULL OR to_regclass(format('%I.%I', v.target_schema, v.target_table)) IS NULL;
        v_saved := v_saved || jsonb_build_object(v.id::text, vectorizer._view_meta(v_view));
        EXECUTE format('DROP VIEW %I.%I', v.view_schema, v.view_table);
        v_n := v_n + 1;
    END LOOP;
    PERFORM set_config('vectorizer.dropped_views', v_saved::text, true);
    RETURN v_n;
END
$fn$;


-- Create the view of vectorizer p_id again over the source as it is now: in place when its
-- columns only grew (ADD COLUMN), dropped and created when they changed (a rename, a new
-- type), with the owner, grants and comment it had. A view of the user's on top of it makes
-- the drop fail.
CREATE OR REPLACE FUNCTION vectorizer._rebuild_view(p_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v vectorizer.vectorizers;
    v_view regclass;
    v_saved jsonb := coalesce(nullif(current_setting('vectorizer.dropped_views', true), ''), '{}')::jsonb;
    v_meta jsonb;
BEGIN
    SELECT * INTO STRICT v FROM vectorizer.vectorizers WHERE id = p_id;
    IF v.view_table IS NULL  -- a column destination has no view
            OR to_regclass(format('%I.%I', v.source_schema, v.source_table)) IS NULL
            OR to_regclass(format('%I.%I', v.target_schema, v.target_table)) IS NULL THEN
        RETURN;
    END IF;
    v_view := to_regclass(format('%I.%I', v.view_schema, v.view_table));
    v_meta := v_saved->(p_id::text);
    IF v_view IS NOT NULL THEN
        BEGIN
            PERFORM vectorizer._create_view(p_id);
            RETURN;
        EXCEPTION WHEN invalid_table_definition THEN
            -- CREATE OR REPLACE VIEW cannot rename, drop or retype a column
            v_meta := vectorizer._view_meta(v_view);
            EXECUTE format('DROP VIEW %I.%I', v.view_schema, v.view_table);
        END;
    END IF;
    PERFORM vectorizer._create_view(p_id);
    PERFORM vectorizer._restore_view_meta(v.view_schema, v.view_table, v_meta);
    PERFORM set_config('vectorizer.dropped_views', (v_saved - p_id::text)::text, true);
END
$fn$;


-- Create the embedding views over p_source (every source when NULL) again; see drop_views.
CREATE OR REPLACE FUNCTION vectorizer.rebuild_views(p_source regclass DEFAULT NULL) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id int;
    v_n int := 0;
BEGIN
    FOR v_id IN SELECT id FROM vectorizer.vectorizers
                 WHERE p_source IS NULL
                    OR to_regclass(format('%I.%I', source_schema, source_table)) = p_source
                 ORDER BY id LOOP
        PERFORM vectorizer._rebuild_view(v_id);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END
$fn$;


-- What an ALTER TABLE of a source may not do: drop a column a vectorizer reads (unless with
-- CASCADE, which went through before the trigger too; a rename is fine: workers follow it and
-- check_sources says how to update the config), change the type of a key column (the store
-- copies the key with its type), or add a column the view reserves.
CREATE OR REPLACE FUNCTION vectorizer._check_alteration(p_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v vectorizer.vectorizers;
    v_rel regclass;
    r record;
BEGIN
    SELECT * INTO STRICT v FROM vectorizer.vectorizers WHERE id = p_id;
    v_rel := to_regclass(format('%I.%I', v.source_schema, v.source_table));
    IF v_rel IS NULL THEN
        RETURN;
    END IF;
    FOR r IN SELECT e->>'attname' AS attname, e->>'role' AS role, cv.version
               FROM vectorizer.config_versions cv
              CROSS JOIN LATERAL jsonb_array_elements(coalesce(cv.source_columns, '[]')) AS e
               JOIN pg_attribute a ON a.attrelid = v_rel AND a.attnum = (e->>'attnum')::int
              WHERE cv.vectorizer_id = p_id AND cv.status IN ('active', 'building') AND a.attisdropped LOOP
        IF lower(coalesce(current_query(), '')) ~ '\mcascade\M' THEN
            -- as without the trigger, CASCADE goes through (check_sources records what it did)
            RAISE WARNING 'column "%" of %.%, which vectorizer % reads, was dropped', r.attname,
                v.source_schema, v.source_table, v.name;
            CONTINUE;
        END IF;
        RAISE EXCEPTION 'column "%" of %.% is % vectorizer % (version %)', r.attname, v.source_schema,
            v.source_table, CASE r.role WHEN 'chunk' THEN 'chunked by' ELSE 'read by the formatting template of' END,
            v.name, r.version
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'point the vectorizer at another column first (op.alter_vectorizer), or drop it';
    END LOOP;
    FOR r IN SELECT a.attname, e.k->>'typname' AS was, format_type(a.atttypid, a.atttypmod) AS now
               FROM jsonb_array_elements(v.source_pk) AS e(k)
               JOIN pg_attribute a ON a.attrelid = v_rel AND a.attnum = (e.k->>'attnum')::int AND NOT a.attisdropped
              WHERE format_type(a.atttypid, a.atttypmod) <> e.k->>'typname' LOOP
        RAISE EXCEPTION 'key column "%" of %.% would change type from % to %, but the store of vectorizer % keys its rows by %',
            r.attname, v.source_schema, v.source_table, r.was, r.now, v.name, r.was
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'drop the vectorizer and create it again to change the type of a key column';
    END LOOP;
    SELECT attname INTO r FROM pg_attribute
     WHERE attrelid = v_rel AND attnum > 0 AND NOT attisdropped AND v.view_table IS NOT NULL
       AND attname IN ('chunk', 'chunk_seq', 'embedding', 'embedding_uuid') LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'source table %.% would have a column named "%", which the embedding view of vectorizer % reserves',
            v.source_schema, v.source_table, r.attname, v.name USING ERRCODE = 'duplicate_column';
    END IF;
END
$fn$;


-- DDL event triggers (installed when a superuser installs the catalog). Views select every
-- source column (s.*), so Postgres refuses ALTER COLUMN ... TYPE and DROP COLUMN of any source
-- column while they exist. Before an ALTER TABLE whose text names a source table (the command
-- itself is not known yet at ddl_command_start), its views are dropped; after it, they are
-- created again and the change is checked (_check_alteration), partitions are compared
-- (sync_partitions) and renames recorded (check_sources). A view of the user's on top of an
-- embedding view keeps it in place, and Postgres then decides as it would without the trigger.
-- Whether this role may read the catalog: event triggers fire for every role's DDL (a worker's
-- CREATE TEMPORARY TABLE too), and must never fail a command they have nothing to do with.
CREATE OR REPLACE FUNCTION vectorizer._catalog_readable() RETURNS bool
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    IF NOT has_schema_privilege('vectorizer', 'USAGE') THEN
        RETURN false;
    END IF;
    RETURN to_regclass('vectorizer.vectorizers') IS NOT NULL
       AND has_table_privilege('vectorizer.vectorizers', 'SELECT');
END
$fn$;


CREATE OR REPLACE FUNCTION vectorizer._on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_query text := lower(coalesce(current_query(), ''));
    v_rel regclass;
BEGIN
    IF NOT vectorizer._catalog_readable() THEN
        RETURN;
    END IF;
    FOR v_rel IN SELECT DISTINCT to_regclass(format('%I.%I', source_schema, source_table))
                   FROM vectorizer.vectorizers WHERE strpos(v_query, lower(source_table)) > 0 LOOP
        CONTINUE WHEN v_rel IS NULL;
        BEGIN
            PERFORM vectorizer.drop_views(v_rel);
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            NULL;  -- the views stay; Postgres then says whether the ALTER can run beside them
        END;
    END LOOP;
END
$fn$;


CREATE OR REPLACE FUNCTION vectorizer._on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v record;
    v_altered oid[];
    v_touched oid[];
    v_dropped jsonb := coalesce(nullif(current_setting('vectorizer.dropped_views', true), ''), '{}')::jsonb;
    v_rel regclass;
BEGIN
    v_altered := ARRAY(SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands()
                        WHERE classid = 'pg_class'::regclass);
    IF (cardinality(v_altered) = 0 AND TG_TAG <> 'DROP TABLE' AND v_dropped = '{}')
            OR NOT vectorizer._catalog_readable() THEN
        RETURN;  -- e.g. CREATE TEMPORARY TABLE IF NOT EXISTS of a table that exists
    END IF;
    IF TG_TAG = 'DROP TABLE' THEN
        -- a dropped partition of a source: its rows left the table without a change event
        IF EXISTS (SELECT 1 FROM vectorizer.vectorizers z, unnest(z.source_partitions) AS p(oid)
                    WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = p.oid)) THEN
            PERFORM vectorizer.sync_partitions();
        END IF;
        RETURN;
    END IF;
    -- the objects the command changed and the partitioned tables above them
    v_touched := v_altered || ARRAY(SELECT a.relid FROM unnest(v_altered) AS o(oid)
                                     CROSS JOIN LATERAL pg_partition_ancestors(o.oid) AS a);
    FOR v IN SELECT id, name, source_schema, source_table,
                    to_regclass(format('%I.%I', source_schema, source_table)) AS rel
               FROM vectorizer.vectorizers ORDER BY id LOOP
        IF v.rel IS NULL AND v_dropped ? v.id::text THEN
            -- its view was dropped before the command and the source has no longer its name
            RAISE EXCEPTION 'the source table %.% of vectorizer % cannot be renamed or moved to another schema',
                v.source_schema, v.source_table, v.name
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'drop the vectorizer, rename the table, create the vectorizer again';
        END IF;
        CONTINUE WHEN v.rel IS NULL OR NOT (v.rel = ANY (v_altered) OR v_dropped ? v.id::text);
        IF v.rel = ANY (v_altered) AND TG_TAG = 'ALTER TABLE' THEN
            PERFORM vectorizer._check_alteration(v.id);
        END IF;
        IF v_dropped ? v.id::text THEN
            PERFORM vectorizer._rebuild_view(v.id);  -- dropped before the command: it must come back
        ELSE
            BEGIN
                PERFORM vectorizer._rebuild_view(v.id);  -- e.g. ADD COLUMN: expose the new column
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'vectorizer: the view of vectorizer % stays as it was: %', v.id, SQLERRM;
            END;
        END IF;
    END LOOP;
    FOR v_rel IN SELECT DISTINCT s.rel
                   FROM (SELECT to_regclass(format('%I.%I', source_schema, source_table)) AS rel
                           FROM vectorizer.vectorizers) s
                  WHERE s.rel = ANY (v_touched) LOOP
        BEGIN
            PERFORM vectorizer.sync_partitions(v_rel);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'vectorizer: comparing the partitions of % after % failed: %', v_rel, TG_TAG, SQLERRM;
        END;
        BEGIN
            PERFORM vectorizer.check_sources();
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'vectorizer: checking the columns of % after % failed: %', v_rel, TG_TAG, SQLERRM;
        END;
    END LOOP;
END
$fn$;


DO $fn$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        DROP EVENT TRIGGER IF EXISTS vectorizer_ddl_start;
        DROP EVENT TRIGGER IF EXISTS vectorizer_ddl_end;
        CREATE EVENT TRIGGER vectorizer_ddl_start ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
            EXECUTE FUNCTION vectorizer._on_ddl_start();
        CREATE EVENT TRIGGER vectorizer_ddl_end ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'DROP TABLE')
            EXECUTE FUNCTION vectorizer._on_ddl_end();
    ELSIF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'vectorizer_ddl_end') THEN
        RAISE NOTICE 'vectorizer: not a superuser, so no DDL event triggers: ALTER TABLE of a source'
            ' needs vectorizer.drop_views/rebuild_views and partition changes vectorizer.sync_partitions'
            ' (docs/operations.md, "Lifecycle events")';
    END IF;
END
$fn$;


-- Upgrade of a version-2 catalog: what each version reads and the partitions, as they are now
-- (a rename from before the upgrade is found by name only); publications publish via the
-- partition root, and a partitioned source whose publication did not is resynced, since its
-- changes never reached the stores.
DO $fn$
DECLARE
    p record;
BEGIN
    UPDATE vectorizer.config_versions cv
       SET source_columns = vectorizer._config_columns(
               to_regclass(format('%I.%I', v.source_schema, v.source_table)), cv.config)
      FROM vectorizer.vectorizers v
     WHERE cv.vectorizer_id = v.id AND cv.source_columns IS NULL
       AND to_regclass(format('%I.%I', v.source_schema, v.source_table)) IS NOT NULL;
    UPDATE vectorizer.vectorizers
       SET source_partitions = vectorizer._leaf_partitions(to_regclass(format('%I.%I', source_schema, source_table)))
     WHERE source_partitions IS NULL AND to_regclass(format('%I.%I', source_schema, source_table)) IS NOT NULL;
    FOR p IN SELECT publication_name, to_regclass(format('%I.%I', source_schema, source_table)) AS rel
               FROM vectorizer.vectorizers ORDER BY id LOOP
        IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = p.publication_name AND NOT pubviaroot) THEN
            EXECUTE format('ALTER PUBLICATION %I SET (publish_via_partition_root = true)', p.publication_name);
            IF (SELECT relkind FROM pg_class WHERE oid = p.rel) = 'p' THEN
                PERFORM vectorizer._request_resync(p.rel, 'its publication now publishes via the partition root');
            END IF;
        END IF;
        PERFORM vectorizer._install_truncate_triggers(p.rel);
    END LOOP;
END
$fn$;
