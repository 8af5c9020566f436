//! Connection services, as libpq reads them: `service=NAME` in the
//! connection string or `PGSERVICE` names a section of a service file,
//! `PGSERVICEFILE` (else `~/.pg_service.conf`), then
//! `PGSYSCONFDIR/pg_service.conf` (else
//! `/etc/postgresql-common/pg_service.conf`, Debian's). The section's
//! `key=value` lines are connection parameters that the connection string
//! overrides and that override the `PG*` variables.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The service files to search, in order.
pub fn files(servicefile: Option<String>, sysconfdir: Option<String>, home: Option<PathBuf>) -> Vec<PathBuf> {
    let user = servicefile.map(PathBuf::from).or_else(|| home.map(|h| h.join(".pg_service.conf")));
    let system = PathBuf::from(sysconfdir.unwrap_or_else(|| "/etc/postgresql-common".into())).join("pg_service.conf");
    user.into_iter().chain([system]).collect()
}

/// The parameters of service `name`: the section from the first file that
/// has it. A service no file defines is an error naming the files.
pub fn lookup(name: &str, files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        if let Some(params) = section(&text, name).map_err(|reason| bad_file(file, reason))? {
            return Ok(params);
        }
    }
    let searched: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(Error::BadConnString {
        input: format!("service={name}"),
        reason: format!(
            "no service file defines [{name}] (searched {}; PGSERVICEFILE names another)",
            searched.join(", ")
        ),
    })
}

fn bad_file(file: &Path, reason: String) -> Error {
    Error::BadConnString { input: file.display().to_string(), reason }
}

/// The `key=value` lines of section `[name]` in service-file `text`, or
/// `None` when it has no such section.
pub fn section(text: &str, name: &str) -> std::result::Result<Option<Vec<(String, String)>>, String> {
    let mut current: Option<&str> = None;
    let mut found: Option<Vec<(String, String)>> = None;
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.strip_suffix(']').ok_or_else(|| format!("line {}: unclosed [", number + 1))?;
            if found.is_some() {
                break;
            }
            current = Some(header.trim());
            if current == Some(name) {
                found = Some(Vec::new());
            }
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| format!("line {}: expected key=value", number + 1))?;
        if current == Some(name) {
            if let Some(params) = found.as_mut() {
                params.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# services\n[app]\nhost=db.internal\nport = 5433\ndbname=app\n\n[other]\nhost=elsewhere\n";

    #[test]
    fn sections_are_read_by_name() {
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(
            section(FILE, "app").unwrap(),
            Some(pairs(&[("host", "db.internal"), ("port", "5433"), ("dbname", "app")]))
        );
        assert_eq!(section(FILE, "other").unwrap(), Some(pairs(&[("host", "elsewhere")])));
        assert_eq!(section(FILE, "missing").unwrap(), None);
        assert!(section("[app\nhost=x", "app").unwrap_err().contains("line 1"));
        assert!(section("[app]\nhost x", "app").unwrap_err().contains("line 2: expected key=value"));
    }

    #[test]
    fn the_first_file_with_the_service_wins_and_a_missing_one_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.conf");
        let system = dir.path().join("pg_service.conf");
        std::fs::write(&user, "[mine]\nhost=a\n").unwrap();
        std::fs::write(&system, "[mine]\nhost=b\n[shared]\nhost=c\n").unwrap();
        let searched = vec![user.clone(), system.clone()];
        assert_eq!(lookup("mine", &searched).unwrap(), vec![("host".to_owned(), "a".to_owned())]);
        assert_eq!(lookup("shared", &searched).unwrap(), vec![("host".to_owned(), "c".to_owned())]);
        let err = lookup("nope", &searched).unwrap_err().to_string();
        assert!(err.contains("[nope]") && err.contains("user.conf") && err.contains("PGSERVICEFILE"), "{err}");
        assert_eq!(
            files(None, Some("/etc/pg".into()), Some("/home/u".into())),
            vec![PathBuf::from("/home/u/.pg_service.conf"), PathBuf::from("/etc/pg/pg_service.conf")]
        );
    }
}
