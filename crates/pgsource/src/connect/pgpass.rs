//! The password file, as libpq reads it: `PGPASSFILE`, else `~/.pgpass`.
//!
//! Each line is `hostname:port:database:username:password`; `*` in any of
//! the first four fields matches anything, `\:` and `\\` escape a colon and
//! a backslash, and `#` starts a comment line. The first line that matches
//! gives the password. A file that its group or others can read is ignored
//! with a warning, as libpq does, since it would leak every password in it.

use std::path::{Path, PathBuf};

/// What a password is looked up for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// Host name, or `localhost` for a Unix socket (libpq's rule).
    pub host: &'a str,
    /// Port number, as text.
    pub port: &'a str,
    /// Database name.
    pub database: &'a str,
    /// Role name.
    pub user: &'a str,
}

/// The password file to read: `PGPASSFILE`, else `~/.pgpass`.
pub fn default_file(pgpassfile: Option<String>, home: Option<PathBuf>) -> Option<PathBuf> {
    pgpassfile.map(PathBuf::from).or_else(|| home.map(|h| h.join(".pgpass")))
}

/// The password for `target` in the file at `path`, if the file exists, is
/// private, and has a matching line.
pub fn lookup_file(path: &Path, target: &Target) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!("password file {} has group or world access; it is ignored (chmod 0600 it)", path.display());
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    lookup(&text, target)
}

/// The password for `target` in password-file `text`: the first matching
/// line's.
pub fn lookup(text: &str, target: &Target) -> Option<String> {
    text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).find_map(|line| {
        let fields = split(line);
        if fields.len() < 5 {
            return None;
        }
        let wanted = [target.host, target.port, target.database, target.user];
        let matches = fields[..4].iter().zip(wanted).all(|(field, value)| field == "*" || field == value);
        // A password may itself contain unescaped colons: the rest of the line.
        matches.then(|| fields[4..].join(":"))
    })
}

/// Splits a line at unescaped colons, removing the escapes.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target = Target { host: "db.internal", port: "5432", database: "app", user: "backup" };

    #[test]
    fn the_first_matching_line_wins() {
        let table: &[(&str, Option<&str>)] = &[
            ("db.internal:5432:app:backup:s3cret", Some("s3cret")),
            ("*:*:*:*:any", Some("any")),
            ("other:5432:app:backup:no\n*:5432:app:backup:yes", Some("yes")),
            ("db.internal:5433:app:backup:wrong-port", None),
            ("db.internal:5432:other:backup:wrong-db", None),
            ("db.internal:5432:app:root:wrong-user", None),
            ("# db.internal:5432:app:backup:commented\n*:*:app:*:after", Some("after")),
            ("db.internal:5432:app:backup:pass:with:colons", Some("pass:with:colons")),
            ("db.internal:5432:app:backup:esc\\:aped\\\\", Some("esc:aped\\")),
            ("db.internal:5432:app:backup", None),
            ("", None),
            ("\n\n  \n*:*:*:backup:blank-lines", Some("blank-lines")),
        ];
        for (text, want) in table {
            assert_eq!(lookup(text, &TARGET).as_deref(), *want, "{text:?}");
        }
        let escaped_host = Target { host: "fe80::1", ..TARGET };
        assert_eq!(lookup("fe80\\:\\:1:5432:app:backup:v6", &escaped_host).as_deref(), Some("v6"));
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup_file(&file, &TARGET).as_deref(), Some("from-file"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup_file(&file, &TARGET), None);
        assert_eq!(lookup_file(&dir.path().join("missing"), &TARGET), None);
        assert_eq!(default_file(Some("/x/pw".into()), Some("/home/u".into())), Some(PathBuf::from("/x/pw")));
        assert_eq!(default_file(None, Some("/home/u".into())), Some(PathBuf::from("/home/u/.pgpass")));
    }
}
