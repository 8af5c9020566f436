-- The fixture of tests/pg.rs: one of most kinds of object and value a
-- backup must carry over unchanged.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cairn_app_reader') THEN
        CREATE ROLE cairn_app_reader NOLOGIN;
    END IF;
END $$;

CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'the application''s schema';
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.positive AS integer CHECK (VALUE > 0);
CREATE TYPE app.pair AS (a integer, b text);

CREATE TABLE app.kinds (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    n numeric,
    f8 double precision,
    f4 real,
    t text,
    b bytea,
    ia integer[],
    ta text[],
    p app.pair,
    r int4range,
    tr tstzrange,
    j json,
    jb jsonb,
    u uuid,
    ip inet,
    ts timestamp,
    tz timestamptz,
    d date,
    m app.mood,
    pos app.positive,
    iv interval,
    doubled bigint GENERATED ALWAYS AS (id * 2) STORED
);
COMMENT ON TABLE app.kinds IS 'one row per kind of value';
COMMENT ON COLUMN app.kinds.t IS 'text with tabs, newlines and backslashes';
INSERT INTO app.kinds (n, f8, f4, t, b, ia, ta, p, r, tr, j, jb, u, ip, ts, tz, d, m, pos, iv) VALUES
  (123456789012345678901234567890.123456789, 'NaN', 'Infinity', E'tab\there\nnew line \\ backslash ünïcødé ✓ 日本', '\x00ff10'::bytea,
   '{{1,2},{3,NULL}}', '{"a b", NULL, "c,d", "\"q\""}', ROW(1, 'x'), '[1,10)', '[2024-01-01,infinity)',
   '{"k": [1, 2.50, "v"]}', '{"z": 1, "a": {"b": null}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24',
   'infinity', '-infinity', '2024-02-29', 'happy', 7, '1 year 2 months 3 days 04:05:06.789'),
  ('NaN', '-Infinity', '-0', '', '', '{}', '{}', ROW(NULL, NULL), 'empty', NULL, 'null', '[]', NULL, '::1', '1999-12-31 23:59:59.999999',
   '2000-01-01 00:00:00+05:30', '-infinity', 'sad', 1, '-1 day'),
  (-0.000000001, 1e308, 3.4e38, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- Partitions: rows live in the leaves.
CREATE TABLE app.measurements (at date NOT NULL, v integer) PARTITION BY RANGE (at);
CREATE TABLE app.measurements_2023 PARTITION OF app.measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE app.measurements_2024 PARTITION OF app.measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO app.measurements SELECT date '2023-06-01' + (g % 400), g FROM generate_series(1, 1000) g;
-- A partitioned primary key and index: leaf indexes attached to the parent's.
ALTER TABLE app.measurements ADD PRIMARY KEY (at, v);
CREATE INDEX measurements_v ON app.measurements (v);

-- Inheritance: the parent and the child each have their own rows.
CREATE TABLE app.vehicles (id serial PRIMARY KEY, name text);
CREATE TABLE app.cars (wheels integer DEFAULT 4) INHERITS (app.vehicles);
INSERT INTO app.vehicles (name) VALUES ('bike'), ('boat');
INSERT INTO app.cars (name, wheels) VALUES ('car', 4), ('trike', 3);

CREATE UNLOGGED TABLE app.cache (k text PRIMARY KEY, v text);
INSERT INTO app.cache VALUES ('a', '1'), ('b', '2');

CREATE TABLE app.orders (id bigserial PRIMARY KEY, kind_id integer REFERENCES app.kinds (id), note text, updated timestamptz);
INSERT INTO app.orders (kind_id, note) SELECT 1 + g % 3, 'order ' || g FROM generate_series(1, 500) g;
CREATE INDEX orders_note ON app.orders (note);
CREATE INDEX orders_lower_note ON app.orders (lower(note));

CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated := now(); RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE VIEW app.order_notes AS SELECT id, note FROM app.orders WHERE id < 10;
CREATE MATERIALIZED VIEW app.order_counts AS SELECT kind_id, count(*) AS n FROM app.orders GROUP BY kind_id;
CREATE MATERIALIZED VIEW app.never_filled AS SELECT 1 AS one WITH NO DATA;

CREATE SEQUENCE app.ticket START 100 INCREMENT 5;
SELECT nextval('app.ticket'), nextval('app.ticket');
CREATE SEQUENCE app.unused;

GRANT USAGE ON SCHEMA app TO cairn_app_reader;
GRANT SELECT ON app.orders, app.order_notes TO cairn_app_reader;
REVOKE ALL ON app.cache FROM PUBLIC;

SELECT lo_from_bytea(424242, '\x0001020304ff'::bytea);
SELECT lo_from_bytea(424243, convert_to(repeat('large object ', 200000), 'UTF8'));
COMMENT ON LARGE OBJECT 424242 IS 'a small large object';
GRANT SELECT ON LARGE OBJECT 424242 TO cairn_app_reader;

-- A table without columns, and one with odd names.
CREATE TABLE app.empty_cols ();
INSERT INTO app.empty_cols DEFAULT VALUES;
INSERT INTO app.empty_cols DEFAULT VALUES;
CREATE SCHEMA "Odd Schema?";
CREATE TABLE "Odd Schema?"."we/ird ""name""" ("X y" integer);
INSERT INTO "Odd Schema?"."we/ird ""name""" VALUES (1), (NULL);

-- A million rows.
CREATE TABLE public.big (id integer PRIMARY KEY, h text);
INSERT INTO public.big SELECT g, md5(g::text) FROM generate_series(1, 1000000) g;
