//! What the database holds, read from the system catalogs inside the
//! backup's snapshot: the server, the relations (tables whose rows are
//! copied, sequences whose values are kept, and the other relations
//! `--table` patterns may name), and large objects.

use tokio_postgres::Client;

use crate::connect::qualified;
use crate::error::{Error, Result};
use crate::pattern::PatternSet;

/// Facts about the server and database, recorded in the manifest.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// `server_version_num`, e.g. 150018.
    pub version_num: i32,
    /// The database name.
    pub database: String,
    /// The database encoding, e.g. `UTF8`.
    pub encoding: String,
    /// Whether the server is a standby.
    pub in_recovery: bool,
}

impl ServerInfo {
    /// The major version (15 for 15.18, 9 for 9.6 is reported as 9).
    pub fn major(&self) -> i32 {
        self.version_num / 10000
    }
}

/// Reads the server facts.
pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4, \
             current_database()::text, pg_encoding_to_char(d.encoding)::text, pg_is_in_recovery() \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| Error::query("reading the server version", e))?;
    let info = ServerInfo {
        version: row.get(0),
        version_num: row.get(1),
        database: row.get(2),
        encoding: row.get(3),
        in_recovery: row.get(4),
    };
    if info.version_num < 100000 {
        return Err(Error::Invalid(format!(
            "PostgreSQL {} is not supported: cairn needs PostgreSQL 10 or newer",
            info.version
        )));
    }
    Ok(info)
}

/// A relation and what the backup does with it.
#[derive(Debug, Clone)]
pub struct Relation {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// `r` table, `p` partitioned table, `v` view, `m` materialized view,
    /// `S` sequence, `f` foreign table.
    pub kind: char,
    /// `p` permanent, `u` unlogged.
    pub persistence: char,
    /// Bytes on disk of the main fork (orders the copies, largest first).
    pub size: i64,
    /// The columns COPY reads and writes: not dropped, not generated.
    pub columns: Vec<String>,
    /// The OIDs of its indexes and of its PRIMARY KEY, UNIQUE and EXCLUDE
    /// constraints: the post-data entries of the schema archive that depend
    /// on this table alone (see [`crate::manifest::TableEntry::post_data`]).
    pub post_data: Vec<u32>,
    /// For a configuration table or sequence of an extension: the
    /// extension and the filter it registered.
    pub extension: Option<crate::manifest::ExtensionConfig>,
    /// The columns of its primary key, else of its first unique index over
    /// NOT NULL columns only (not partial, no expressions): an order in
    /// which its rows are unique. Empty when it has none.
    pub key: Vec<String>,
}

impl Relation {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// The columns of a table's (`c`) row key, as SQL: those of its primary
/// key, else of its unique, valid index with the fewest key columns whose
/// key columns are all NOT NULL (not partial, no expressions); empty when
/// there is none. See [`Relation::key`].
const KEY_COLUMNS: &str = "ARRAY(SELECT a.attname::text FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          WHERE i.indexrelid = (SELECT u.indexrelid FROM pg_index u WHERE u.indrelid = c.oid \
                                  AND u.indisunique AND u.indisvalid AND u.indpred IS NULL AND u.indexprs IS NULL \
                                  AND NOT EXISTS (SELECT 1 FROM unnest(u.indkey::int2[]) WITH ORDINALITY AS uk(attnum, n) \
                                       JOIN pg_attribute ua ON ua.attrelid = u.indrelid AND ua.attnum = uk.attnum \
                                       WHERE uk.n <= u.indnkeyatts AND NOT ua.attnotnull) \
                                  ORDER BY u.indisprimary DESC, u.indnkeyatts, u.indexrelid LIMIT 1) \
                            AND k.n <= i.indnkeyatts ORDER BY k.n)";

/// Every relation of user schemas that pg_dump would consider, skipping
/// temporary relations and members of extensions (their extension's
/// script creates them).
pub async fn relations(client: &Client) -> Result<Vec<Relation>> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text, \
                    CASE WHEN c.relkind IN ('r', 'm') THEN pg_relation_size(c.oid) ELSE 0 END, \
                    ARRAY(SELECT a.attname::text FROM pg_attribute a \
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                            AND a.attgenerated = '' ORDER BY a.attnum), \
                    ARRAY(SELECT i.indexrelid::int8 FROM pg_index i WHERE i.indrelid = c.oid \
                          UNION ALL SELECT k.oid::int8 FROM pg_constraint k \
                          WHERE k.conrelid = c.oid AND k.contype IN ('p', 'u', 'x')), \
                    {KEY_COLUMNS} \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
               AND c.relpersistence <> 't' \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                               AND d.objid = c.oid AND d.deptype = 'e') \
             ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| Error::query("listing the database's tables", e))?;
    Ok(rows
        .iter()
        .map(|r| Relation {
            // OIDs are 32-bit; the cast to int8 only avoids a custom type.
            post_data: r.get::<_, Vec<i64>>(6).into_iter().map(|o| o as u32).collect(),
            key: r.get(7),
            ..relation_from_row(r)
        })
        .collect())
}

/// A relation from the six columns both catalog queries start with
/// (schema, name, kind, persistence, size, columns); no post-data objects,
/// no extension, no key.
fn relation_from_row(r: &tokio_postgres::Row) -> Relation {
    Relation {
        schema: r.get(0),
        name: r.get(1),
        kind: r.get::<_, String>(2).chars().next().unwrap_or('r'),
        persistence: r.get::<_, String>(3).chars().next().unwrap_or('p'),
        size: r.get(4),
        columns: r.get(5),
        post_data: Vec::new(),
        extension: None,
        key: Vec::new(),
    }
}

/// The configuration tables and sequences extensions registered with
/// `pg_extension_config_dump` (`pg_extension.extconfig`, `extcondition`):
/// members of their extension, yet their rows (those the condition
/// selects) and values are the user's, and pg_dump keeps them.
pub async fn extension_config(client: &Client) -> Result<Vec<Relation>> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text, \
                    CASE WHEN c.relkind = 'r' THEN pg_relation_size(c.oid) ELSE 0 END, \
                    ARRAY(SELECT a.attname::text FROM pg_attribute a \
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                            AND a.attgenerated = '' ORDER BY a.attnum), \
                    e.extname::text, coalesce(cfg.cond, ''), \
                    {KEY_COLUMNS} \
             FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS cfg(reloid, cond) \
             JOIN pg_class c ON c.oid = cfg.reloid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'S') \
             ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| Error::query("listing the extensions' configuration tables", e))?;
    Ok(rows
        .iter()
        .map(|r| Relation {
            // Their indexes belong to the extension too (its script makes
            // them): no post-data objects.
            extension: Some(crate::manifest::ExtensionConfig { name: r.get(6), condition: r.get(7) }),
            key: r.get(8),
            ..relation_from_row(r)
        })
        .collect())
}

/// Which relations a backup covers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--table`: only these (and nothing else, like pg_dump).
    pub include: PatternSet,
    /// `--exclude-table`: neither definition nor data.
    pub exclude: PatternSet,
    /// `--exclude-table-data`: definition, but no rows.
    pub exclude_data: PatternSet,
}

/// A relation the backup covers, and whether its rows are copied.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The relation.
    pub relation: Relation,
    /// Whether its rows (tables) are copied.
    pub copy_data: bool,
}

impl Selection {
    /// Applies the patterns. Tables (`r`, leaf partitions and inheritance
    /// children included: COPY of a table reads only its own rows) get
    /// their data copied unless `--exclude-table-data` names them.
    pub fn apply(&self, all: Vec<Relation>) -> Vec<Selected> {
        all.into_iter()
            .filter(|r| self.include.is_empty() || self.include.any(&r.schema, &r.name))
            .filter(|r| !self.exclude.any(&r.schema, &r.name))
            .map(|r| {
                let copy_data = r.kind == 'r' && !self.exclude_data.any(&r.schema, &r.name);
                Selected { relation: r, copy_data }
            })
            .collect()
    }
}

/// A sequence's state.
#[derive(Debug, Clone)]
pub struct SequenceValue {
    /// `last_value`.
    pub last_value: i64,
    /// `is_called`: whether `last_value` was handed out already.
    pub is_called: bool,
}

/// Reads a sequence's state (like pg_dump's `SEQUENCE SET`).
pub async fn sequence_value(client: &Client, rel: &Relation) -> Result<SequenceValue> {
    let row = client
        .query_one(&format!("SELECT last_value, is_called FROM {}", rel.qualified()), &[])
        .await
        .map_err(|e| Error::query(format!("reading sequence {}", rel.qualified()), e))?;
    Ok(SequenceValue { last_value: row.get(0), is_called: row.get(1) })
}

/// The large objects' ids.
pub async fn large_objects(client: &Client) -> Result<Vec<u32>> {
    let rows = client
        .query("SELECT oid::int8 FROM pg_largeobject_metadata ORDER BY oid", &[])
        .await
        .map_err(|e| Error::query("listing large objects", e))?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u32).collect())
}

/// The roles the current database's objects depend on (owners, grantees,
/// policy roles, default privileges: `pg_shdepend`), plus the bootstrap
/// superuser, whose objects `pg_shdepend` does not record; sorted.
pub async fn referenced_roles(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT DISTINCT r.rolname::text FROM pg_catalog.pg_roles r \
             WHERE r.oid = 10 OR r.oid IN (SELECT s.refobjid FROM pg_catalog.pg_shdepend s \
                  WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass \
                    AND s.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())) \
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| Error::query("listing the roles the database's objects need", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
