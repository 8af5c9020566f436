//! Database-level properties of an `--all-databases` backup, which belong
//! to neither pg_dumpall's globals nor a database's own schema archive:
//! settings (`ALTER DATABASE ... SET`, `ALTER ROLE ... IN DATABASE ... SET`,
//! from `pg_db_role_setting`), privileges (`datacl`), the comment, the
//! connection limit and the owner. They are read from the catalogs into
//! the cluster manifest ([`crate::manifest::DatabaseEntry`]), and
//! [`restore_statements`] turns them back into SQL (a pure function), run
//! after the database's data is loaded, so a setting such as
//! `default_transaction_read_only` cannot get in the restore's way.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::connect::quote_ident;
use crate::error::{Error, Result};

/// One setting stored for a database (and, with `role`, for one role in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSetting {
    /// The role it applies to; `None` for every role (`ALTER DATABASE ... SET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The parameter.
    pub name: String,
    /// Its value as `pg_db_role_setting` stores it.
    pub value: String,
}

/// One privilege on a database, as `aclexplode(datacl)` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseGrant {
    /// The role granted to; `None` for PUBLIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grantee: Option<String>,
    /// `CREATE`, `TEMPORARY` or `CONNECT`.
    pub privilege: String,
    /// Granted `WITH GRANT OPTION`.
    #[serde(default)]
    pub grantable: bool,
}

/// What a database has besides its contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseProperties {
    /// Its settings, in `pg_db_role_setting`'s order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<DatabaseSetting>,
    /// Its privileges; `None` when they are the defaults (`datacl` is NULL:
    /// the owner has all, PUBLIC has CONNECT and TEMPORARY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<DatabaseGrant>>,
    /// `COMMENT ON DATABASE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `CONNECTION LIMIT` (-1: none).
    #[serde(default = "no_limit")]
    pub connection_limit: i32,
}

fn no_limit() -> i32 {
    -1
}

impl Default for DatabaseProperties {
    /// What a database has when nothing was set: no settings, default
    /// privileges, no comment, no connection limit.
    fn default() -> Self {
        DatabaseProperties { settings: Vec::new(), grants: None, comment: None, connection_limit: no_limit() }
    }
}

/// Reads every database's properties, by name.
pub async fn read(client: &Client) -> Result<HashMap<String, DatabaseProperties>> {
    let err = |e| Error::query("reading the databases' settings, privileges and comments", e);
    let mut props: HashMap<String, DatabaseProperties> = HashMap::new();
    let rows = client
        .query(
            "SELECT d.datname::text, d.datconnlimit, pg_catalog.shobj_description(d.oid, 'pg_database'), \
                    d.datacl IS NULL FROM pg_catalog.pg_database d",
            &[],
        )
        .await
        .map_err(err)?;
    for r in &rows {
        let default_acl: bool = r.get(3);
        props.insert(
            r.get(0),
            DatabaseProperties {
                settings: Vec::new(),
                grants: (!default_acl).then(Vec::new),
                comment: r.get(2),
                connection_limit: r.get(1),
            },
        );
    }
    let grants = client
        .query(
            "SELECT d.datname::text, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, \
                    a.privilege_type, a.is_grantable \
             FROM pg_catalog.pg_database d, LATERAL pg_catalog.aclexplode(d.datacl) a \
             ORDER BY 1, 2 NULLS FIRST, 3",
            &[],
        )
        .await
        .map_err(err)?;
    for r in &grants {
        let name: String = r.get(0);
        if let Some(list) = props.get_mut(&name).and_then(|p| p.grants.as_mut()) {
            list.push(DatabaseGrant { grantee: r.get(1), privilege: r.get(2), grantable: r.get(3) });
        }
    }
    let settings = client
        .query(
            "SELECT d.datname::text, CASE WHEN s.setrole = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(s.setrole)::text END, \
                    c.setting \
             FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase, \
                  LATERAL unnest(s.setconfig) WITH ORDINALITY AS c(setting, n) \
             ORDER BY 1, 2 NULLS FIRST, c.n",
            &[],
        )
        .await
        .map_err(err)?;
    for r in &settings {
        let (name, role, setting): (String, Option<String>, String) = (r.get(0), r.get(1), r.get(2));
        let Some((key, value)) = setting.split_once('=') else { continue };
        if let Some(p) = props.get_mut(&name) {
            p.settings.push(DatabaseSetting { role, name: key.to_owned(), value: value.to_owned() });
        }
    }
    Ok(props)
}

/// Parameters whose value is a list of (possibly double-quoted) names:
/// their stored value is split and each element quoted (pg_dump's
/// `variable_is_guc_list_quote`).
const LIST_PARAMETERS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// The SQL that gives database `name`, owned by `owner`, the properties
/// `props`: owner (unless `no_owner`), connection limit, comment,
/// privileges (the defaults revoked first when the source had others),
/// settings. With `no_owner`, privileges the source owner held are left
/// to the restoring role, which owns the database.
pub fn restore_statements(name: &str, owner: &str, props: &DatabaseProperties, no_owner: bool) -> Result<Vec<String>> {
    let db = quote_ident(name);
    let mut sql = Vec::new();
    if !no_owner {
        sql.push(format!("ALTER DATABASE {db} OWNER TO {}", quote_ident(owner)));
    }
    sql.push(format!("ALTER DATABASE {db} CONNECTION LIMIT {}", props.connection_limit));
    sql.push(match &props.comment {
        Some(c) => format!("COMMENT ON DATABASE {db} IS {}", literal(c)),
        None => format!("COMMENT ON DATABASE {db} IS NULL"),
    });
    if let Some(grants) = &props.grants {
        sql.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
        if !no_owner {
            sql.push(format!("REVOKE ALL ON DATABASE {db} FROM {}", quote_ident(owner)));
        }
        for g in grants {
            if !["CREATE", "TEMPORARY", "CONNECT"].contains(&g.privilege.as_str()) {
                return Err(Error::Manifest(format!(
                    "the cluster manifest grants {:?} on database {db}, which is not a database privilege",
                    g.privilege
                )));
            }
            if no_owner && g.grantee.as_deref() == Some(owner) {
                continue;
            }
            let to = g.grantee.as_deref().map(quote_ident).unwrap_or_else(|| "PUBLIC".to_owned());
            let option = if g.grantable { " WITH GRANT OPTION" } else { "" };
            sql.push(format!("GRANT {} ON DATABASE {db} TO {to}{option}", g.privilege));
        }
    }
    for s in &props.settings {
        let target = match &s.role {
            Some(role) => format!("ALTER ROLE {} IN DATABASE {db}", quote_ident(role)),
            None => format!("ALTER DATABASE {db}"),
        };
        sql.push(format!("{target} SET {} TO {}", quote_ident(&s.name), setting_value(&s.name, &s.value)));
    }
    Ok(sql)
}

/// A setting's value as SQL: one literal, or for a list parameter each
/// element as a literal, as pg_dump writes them.
fn setting_value(name: &str, value: &str) -> String {
    if !LIST_PARAMETERS.contains(&name.to_ascii_lowercase().as_str()) {
        return literal(value);
    }
    let items = split_list(value);
    if items.is_empty() {
        return "''".to_owned();
    }
    items.iter().map(|i| literal(i)).collect::<Vec<_>>().join(", ")
}

/// Splits a list setting (`"$user", public`) into its elements, with
/// double quotes removed (`""` is one quote), as PostgreSQL's
/// `SplitGUCList` does; never fails.
pub fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut item = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.next_if_eq(&'"').is_some() {
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
            while chars.next_if(|c| *c != ',').is_some() {}
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                item.push(c);
            }
            item.truncate(item.trim_end().len());
        }
        items.push(item);
        if chars.next_if_eq(&',').is_none() {
            break;
        }
    }
    items
}

fn literal(s: &str) -> String {
    // E'' would be needed for backslashes only with standard_conforming_strings off.
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_settings_are_split_as_postgresql_splits_them() {
        assert_eq!(split_list("\"$user\", public"), ["$user", "public"]);
        assert_eq!(split_list("a,b ,  c"), ["a", "b", "c"]);
        assert_eq!(split_list("\"We\"\"ird, x\",y"), ["We\"ird, x", "y"]);
        assert_eq!(split_list(""), Vec::<String>::new());
        assert_eq!(split_list("\"open"), ["open"]);
        assert_eq!(setting_value("search_path", "\"$user\", public"), "'$user', 'public'");
        assert_eq!(setting_value("work_mem", "8MB"), "'8MB'");
        assert_eq!(setting_value("application_name", "it's"), "'it''s'");
    }

    #[test]
    fn statements_restore_every_property() {
        let props = DatabaseProperties {
            settings: vec![
                DatabaseSetting { role: None, name: "work_mem".into(), value: "3MB".into() },
                DatabaseSetting { role: Some("r".into()), name: "statement_timeout".into(), value: "5s".into() },
            ],
            grants: Some(vec![
                DatabaseGrant { grantee: Some("own".into()), privilege: "CONNECT".into(), grantable: false },
                DatabaseGrant { grantee: Some("r".into()), privilege: "CONNECT".into(), grantable: true },
                DatabaseGrant { grantee: None, privilege: "TEMPORARY".into(), grantable: false },
            ]),
            comment: Some("it's".into()),
            connection_limit: 7,
        };
        let sql = restore_statements("d", "own", &props, false).unwrap();
        assert_eq!(
            sql,
            [
                "ALTER DATABASE \"d\" OWNER TO \"own\"",
                "ALTER DATABASE \"d\" CONNECTION LIMIT 7",
                "COMMENT ON DATABASE \"d\" IS 'it''s'",
                "REVOKE ALL ON DATABASE \"d\" FROM PUBLIC",
                "REVOKE ALL ON DATABASE \"d\" FROM \"own\"",
                "GRANT CONNECT ON DATABASE \"d\" TO \"own\"",
                "GRANT CONNECT ON DATABASE \"d\" TO \"r\" WITH GRANT OPTION",
                "GRANT TEMPORARY ON DATABASE \"d\" TO PUBLIC",
                "ALTER DATABASE \"d\" SET \"work_mem\" TO '3MB'",
                "ALTER ROLE \"r\" IN DATABASE \"d\" SET \"statement_timeout\" TO '5s'",
            ]
        );
        let sql = restore_statements("d", "own", &props, true).unwrap();
        assert!(!sql.iter().any(|s| s.contains("\"own\"")), "{sql:?}");
        let defaults = DatabaseProperties::default();
        let sql = restore_statements("d", "own", &defaults, true).unwrap();
        assert_eq!(sql, ["ALTER DATABASE \"d\" CONNECTION LIMIT -1", "COMMENT ON DATABASE \"d\" IS NULL"]);
        let mut bad = props.clone();
        bad.grants = Some(vec![DatabaseGrant { grantee: None, privilege: "ALL; DROP".into(), grantable: false }]);
        assert!(restore_statements("d", "own", &bad, false).is_err());
    }
}
