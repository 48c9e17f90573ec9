-- A frozen copy of the version-2 catalog, as released (CATALOG_VERSION = 2), for the test of the
-- upgrade to the current one (tests/integration/test_catalog_upgrade.py). Never edit it.
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

-- Which catalog versions were installed (pgai_orm/catalog/schema.py: CATALOG_VERSION).
CREATE TABLE IF NOT EXISTS vectorizer.catalog_version (
    version      int PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT now()
);


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


-- The view: the store's columns plus every source column, joined on the primary key.
CREATE OR REPLACE FUNCTION vectorizer._create_view(p_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v vectorizer.vectorizers;
    v_join text;
BEGIN
    SELECT * INTO STRICT v FROM vectorizer.vectorizers WHERE id = p_id;
    SELECT string_agg(format('t.%I = s.%I', k->>'attname', k->>'attname'), ' AND ')
      INTO v_join FROM jsonb_array_elements(v.source_pk) AS k;
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', v.view_schema);
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

    v_target_schema := coalesce(p_target_schema, v_schema);
    v_target_table := coalesce(p_target_table, p_source_table || '_embedding_store');
    v_view_schema := coalesce(p_view_schema, v_target_schema);
    v_view_table := coalesce(p_view_table, p_source_table || '_embedding');
    v_name := coalesce(p_name, v_view_schema || '_' || v_view_table);
    PERFORM vectorizer._check_name('target schema', v_target_schema);
    PERFORM vectorizer._check_name('target table', v_target_table);
    PERFORM vectorizer._check_name('view schema', v_view_schema);
    PERFORM vectorizer._check_name('view table', v_view_table);
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
    IF to_regclass(format('%I.%I', v_view_schema, v_view_table)) IS NOT NULL THEN
        RAISE EXCEPTION 'view %.% already exists', v_view_schema, v_view_table
            USING ERRCODE = 'duplicate_table';
    END IF;

    PERFORM vectorizer._validate_source(v_schema, p_source_table, p_source_column, p_placeholders);

    INSERT INTO vectorizer.vectorizers
        (name, source_schema, source_table, source_pk, target_schema, target_table,
         view_schema, view_table, config, config_version, publication_name)
    VALUES (v_name, v_schema, p_source_table, v_pk, v_target_schema, v_target_table,
            v_view_schema, v_view_table, p_config, 1, 'placeholder')
    RETURNING id INTO v_id;
    UPDATE vectorizer.vectorizers SET publication_name = 'vectorizer_' || v_id WHERE id = v_id;
    INSERT INTO vectorizer.config_versions
        (vectorizer_id, version, config, target_schema, target_table, status, activated_at)
    VALUES (v_id, 1, p_config, v_target_schema, v_target_table, 'active', now());

    PERFORM vectorizer._create_store(v_pk, v_target_schema, v_target_table, p_dimensions,
                                     p_config->'indexing');
    PERFORM vectorizer._create_view(v_id);
    EXECUTE format('CREATE PUBLICATION %I FOR TABLE %I.%I', 'vectorizer_' || v_id, v_schema, p_source_table);

    FOREACH v_role IN ARRAY coalesce(p_grant_to, '{}') LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA vectorizer, %I, %I TO %I', v_target_schema, v_view_schema, v_role);
        EXECUTE format('GRANT SELECT ON vectorizer.vectorizers, vectorizer.config_versions TO %I', v_role);
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
    IF p_drop_all THEN
        EXECUTE format('DROP VIEW IF EXISTS %I.%I', v.view_schema, v.view_table);
        FOR cv IN SELECT target_schema, target_table FROM vectorizer.config_versions
                   WHERE vectorizer_id = v.id LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I.%I', cv.target_schema, cv.target_table);
        END LOOP;
    END IF;
    DELETE FROM vectorizer.applied_state WHERE vectorizer_id = v.id;
    DELETE FROM vectorizer.vectorizers WHERE id = v.id;
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
    -- Validate the merged config: a new template must name columns of the source, a new
    -- chunking or loading config must name an existing column.
    PERFORM vectorizer._validate_source(
        v.source_schema, v.source_table,
        coalesce(p_source_column, v_config->'loading'->>'column_name', v_config->'chunking'->>'chunk_column'),
        p_placeholders);
    IF NOT (p_patch ?| ARRAY['embedding', 'chunking', 'formatting', 'loading']) THEN
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
    INSERT INTO vectorizer.config_versions (vectorizer_id, version, config, target_schema, target_table, status)
    VALUES (v.id, v_version, v_config, v.target_schema, v_table, 'building');
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
