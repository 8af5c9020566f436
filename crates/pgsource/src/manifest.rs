//! The manifest (`manifest.json`) and the layout of a PostgreSQL snapshot's
//! tree (FORMAT.md, "PostgreSQL snapshots"):
//!
//! ```text
//! DBNAME/                      the root tree's only entry (snapshot path /pg/DBNAME)
//!   manifest.json              this module's Manifest
//!   schema.dump                pg_dump -Fc --section=pre-data --section=post-data
//!   data/SCHEMA/TABLE          COPY ... TO STDOUT (text format) of each table
//!   large_objects/OID          the bytes of each large object
//! ```
//!
//! An `--all-databases` snapshot (snapshot path `/pg`) holds the globals and
//! one such tree per database:
//!
//! ```text
//! pg/                          the root tree's only entry (snapshot path /pg)
//!   cluster.json               this module's ClusterManifest
//!   globals.sql                pg_dumpall --globals-only (roles, tablespaces)
//!   databases/DBNAME/          exactly the single-database layout above
//! ```
//!
//! Names in the tree are escaped with [`escape_name`]; the manifests record
//! each file's path, so a reader never has to reverse the escaping.

use serde::{Deserialize, Serialize};

/// The manifest version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The schema archive's file name.
pub const SCHEMA_FILE: &str = "schema.dump";
/// The directory of table data.
pub const DATA_DIR: &str = "data";
/// The directory of large objects.
pub const LARGE_OBJECTS_DIR: &str = "large_objects";
/// The tag every PostgreSQL snapshot carries.
pub const TAG: &str = "pg";
/// The snapshot path prefix: `/pg/DBNAME`.
pub const PATH_PREFIX: &str = "/pg/";

/// The cluster manifest's file name (`--all-databases` snapshots).
pub const CLUSTER_MANIFEST_FILE: &str = "cluster.json";
/// The globals script's file name.
pub const GLOBALS_FILE: &str = "globals.sql";
/// The directory of the databases of an `--all-databases` snapshot.
pub const DATABASES_DIR: &str = "databases";
/// The snapshot path of an `--all-databases` snapshot.
pub const CLUSTER_PATH: &str = "/pg";

/// What an `--all-databases` snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterManifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// Always `postgresql-cluster`.
    pub kind: String,
    /// `server_version` of the source.
    pub server_version: String,
    /// `server_version_num` of the source.
    pub server_version_num: i32,
    /// When the backup started (the globals were read then).
    pub started: jiff::Timestamp,
    /// When the last database was stored.
    pub finished: jiff::Timestamp,
    /// `pg_dumpall --version` of the program that wrote the globals.
    pub pg_dumpall_version: String,
    /// The globals script's path in the tree.
    pub globals_file: String,
    /// Whether role passwords were left out (`--no-role-passwords`).
    pub no_role_passwords: bool,
    /// The databases, in name order. Each was backed up from its own
    /// snapshot: there is no consistency across databases (as with pg_dumpall).
    pub databases: Vec<DatabaseEntry>,
}

/// One database of an `--all-databases` snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseEntry {
    /// Its name.
    pub name: String,
    /// Its directory in the tree (`databases/ESCAPED`), laid out as a
    /// single-database snapshot; its `manifest.json` is there.
    pub dir: String,
    /// Its owner, given to it when a restore creates it.
    pub owner: String,
    /// Its encoding.
    pub encoding: String,
    /// `datcollate`.
    pub collate: String,
    /// `datctype`.
    pub ctype: String,
    /// Settings, privileges, comment and connection limit (absent in
    /// manifests of cairn before 0.2: nothing was recorded, defaults apply).
    #[serde(flatten)]
    pub properties: crate::dbprops::DatabaseProperties,
}

impl ClusterManifest {
    /// Parses and checks a cluster manifest.
    pub fn decode(bytes: &[u8]) -> crate::Result<ClusterManifest> {
        let m: ClusterManifest = serde_json::from_slice(bytes).map_err(|e| {
            crate::Error::Manifest(format!("the snapshot's {CLUSTER_MANIFEST_FILE} cannot be read: {e}"))
        })?;
        if m.kind != "postgresql-cluster" || m.version != MANIFEST_VERSION {
            return Err(crate::Error::Manifest(format!(
                "the snapshot's {CLUSTER_MANIFEST_FILE} is version {} of kind {:?}; this cairn reads version {MANIFEST_VERSION} (upgrade cairn)",
                m.version, m.kind
            )));
        }
        Ok(m)
    }
}

/// What a PostgreSQL snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// Always `postgresql`.
    pub kind: String,
    /// `server_version` of the source.
    pub server_version: String,
    /// `server_version_num` of the source.
    pub server_version_num: i32,
    /// The database backed up.
    pub database: String,
    /// Its encoding (`UTF8`).
    pub encoding: String,
    /// `pg_current_wal_lsn()` at the snapshot (`pg_last_wal_replay_lsn()` on a standby).
    pub snapshot_lsn: Option<String>,
    /// Whether the source was a standby.
    pub in_recovery: bool,
    /// When the snapshot was exported.
    pub started: jiff::Timestamp,
    /// When the last stream was stored.
    pub finished: jiff::Timestamp,
    /// `pg_dump --version` of the program that wrote the schema archive.
    pub pg_dump_version: String,
    /// `text`: the COPY format of the table files.
    pub copy_format: String,
    /// The schema archive's path in the tree.
    pub schema_file: String,
    /// Tables, in schema and name order.
    pub tables: Vec<TableEntry>,
    /// Sequences and their values.
    pub sequences: Vec<SequenceEntry>,
    /// Large objects.
    pub large_objects: Vec<LargeObjectEntry>,
    /// The options that chose what was backed up.
    pub selection: SelectionEntry,
    /// The roles the database's objects belong to or are granted to (and
    /// the bootstrap superuser, owner of what initdb made), which must
    /// exist where it is restored; `None` in manifests written before they
    /// were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// One table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// The columns of the COPY, in order (generated columns are left out).
    pub columns: Vec<String>,
    /// The data file's path in the tree; `None` when `--exclude-table-data` applied.
    pub file: Option<String>,
    /// Rows copied.
    pub rows: u64,
    /// Bytes of COPY data.
    pub bytes: u64,
    /// `true` for an unlogged table.
    pub unlogged: bool,
    /// Source catalog OIDs of the table's indexes and PRIMARY KEY / UNIQUE /
    /// EXCLUDE constraints. The schema archive's table of contents lists
    /// each post-data entry with its OID, so a restore can build these as
    /// soon as this table's rows are in, while other tables still load.
    /// Empty in manifests written before this field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_data: Vec<u32>,
    /// Set for a configuration table of an extension
    /// (`pg_extension_config_dump`): the extension's script creates the
    /// table and may fill it, so a restore loads these rows after `CREATE
    /// EXTENSION` without emptying the table first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionConfig>,
    /// The columns its rows were sorted by (its key, see
    /// [`crate::backup::RowOrder`]); empty: heap order. Informational: a
    /// restore loads the file as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order_by: Vec<String>,
}

/// What makes a table an extension's configuration table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionConfig {
    /// The extension's name.
    pub name: String,
    /// The filter its script registered (`WHERE ...`, or empty: every
    /// row); the file holds the rows it selects.
    pub condition: String,
}

/// One sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceEntry {
    /// Schema name.
    pub schema: String,
    /// Sequence name.
    pub name: String,
    /// `last_value`.
    pub last_value: i64,
    /// `is_called`.
    pub is_called: bool,
}

/// One large object (its owner, comment and privileges are in the schema archive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LargeObjectEntry {
    /// Its OID, kept on restore.
    pub oid: u32,
    /// The content file's path in the tree.
    pub file: String,
    /// Its length in bytes.
    pub bytes: u64,
}

/// The patterns a backup was given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectionEntry {
    /// `--table`.
    pub tables: Vec<String>,
    /// `--exclude-table`.
    pub exclude_tables: Vec<String>,
    /// `--exclude-table-data`.
    pub exclude_table_data: Vec<String>,
}

impl Manifest {
    /// Rows of all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Bytes of all data files.
    pub fn total_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum::<u64>() + self.large_objects.iter().map(|l| l.bytes).sum::<u64>()
    }

    /// Parses and checks a manifest.
    pub fn decode(bytes: &[u8]) -> crate::Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| crate::Error::Manifest(format!("the snapshot's {MANIFEST_FILE} cannot be read: {e}")))?;
        if m.kind != "postgresql" || m.version != MANIFEST_VERSION {
            return Err(crate::Error::Manifest(format!(
                "the snapshot's {MANIFEST_FILE} is version {} of kind {:?}; this cairn reads version {MANIFEST_VERSION} (upgrade cairn)",
                m.version, m.kind
            )));
        }
        if m.copy_format != "text" {
            return Err(crate::Error::Manifest(format!("unknown COPY format {:?} in the manifest", m.copy_format)));
        }
        Ok(m)
    }
}

/// A name for the tree: `%` and `/` become `%25` and `%2F`, and the names
/// `.` and `..` become `%2E` and `%2E%2E` (tree names cannot be those).
pub fn escape_name(name: &str) -> String {
    match name {
        "" => "%".to_owned() + "00",
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => name.replace('%', "%25").replace('/', "%2F"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_tree_names() {
        for n in ["a", "a/b", "%", ".", "..", "", "x.y"] {
            assert!(cairn_repo::Node::valid_name(escape_name(n).as_bytes()), "{n}");
        }
        assert_eq!(escape_name("a/b%"), "a%2Fb%25");
        assert_ne!(escape_name("a/b"), escape_name("a%2Fb"));
    }

    #[test]
    fn cluster_manifests_round_trip_and_refuse_other_kinds() {
        let m = ClusterManifest {
            version: MANIFEST_VERSION,
            kind: "postgresql-cluster".into(),
            server_version: "15.18".into(),
            server_version_num: 150018,
            started: jiff::Timestamp::UNIX_EPOCH,
            finished: jiff::Timestamp::UNIX_EPOCH,
            pg_dumpall_version: "pg_dumpall (PostgreSQL) 15.18".into(),
            globals_file: GLOBALS_FILE.into(),
            no_role_passwords: false,
            databases: vec![DatabaseEntry {
                name: "a/b".into(),
                dir: format!("{DATABASES_DIR}/{}", escape_name("a/b")),
                owner: "o".into(),
                encoding: "UTF8".into(),
                collate: "C".into(),
                ctype: "C".into(),
                properties: crate::dbprops::DatabaseProperties {
                    settings: vec![crate::dbprops::DatabaseSetting {
                        role: None,
                        name: "work_mem".into(),
                        value: "8MB".into(),
                    }],
                    grants: Some(vec![]),
                    comment: Some("c".into()),
                    connection_limit: 3,
                },
            }],
        };
        let bytes = serde_json::to_vec(&m).unwrap();
        assert_eq!(ClusterManifest::decode(&bytes).unwrap(), m);
        let single = String::from_utf8(bytes).unwrap().replace("postgresql-cluster", "postgresql");
        let err = ClusterManifest::decode(single.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("upgrade cairn"), "{err}");
        // A database entry from before the properties were recorded: the defaults.
        let old = r#"{"name":"d","dir":"databases/d","owner":"o","encoding":"UTF8","collate":"C","ctype":"C"}"#;
        let entry: DatabaseEntry = serde_json::from_str(old).unwrap();
        assert_eq!(entry.properties, crate::dbprops::DatabaseProperties::default());
        assert_eq!(entry.properties.connection_limit, -1);
        // A manifest from before `post_data` existed still reads.
        let old = r#"{"schema":"s","name":"t","columns":[],"file":null,"rows":0,"bytes":0,"unlogged":false}"#;
        assert!(serde_json::from_str::<TableEntry>(old).unwrap().post_data.is_empty());
    }
}
