//! `sftp:` locations, and the `ssh` command that reaches them.
//!
//! Two spellings are accepted (restic's, so its users can paste theirs):
//!
//! | location | host | port | user | path on the server |
//! | --- | --- | --- | --- | --- |
//! | `sftp:nas:/srv/backup` | `nas` | ssh's | ssh's | `/srv/backup` |
//! | `sftp:me@nas:2222:/srv/backup` | `nas` | 2222 | `me` | `/srv/backup` |
//! | `sftp:nas:backup` | `nas` | ssh's | ssh's | `backup` (in the login directory) |
//! | `sftp:[::1]:/srv` | `::1` | ssh's | ssh's | `/srv` |
//! | `sftp://me@nas:2222//srv/backup` | `nas` | 2222 | `me` | `/srv/backup` |
//! | `sftp://nas/backup` | `nas` | ssh's | ssh's | `backup` (in the login directory) |
//!
//! "ssh's" means nothing is passed, so `~/.ssh/config` decides (a `Host`
//! alias with its own `HostName`, `Port`, `User`, `ProxyJump` works as is).

use std::fmt;

/// A parsed `sftp:` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SftpLocation {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The repository's directory on the server: absolute, or relative to
    /// the login directory. Never empty, no trailing `/`.
    pub path: String,
}

impl SftpLocation {
    /// Parses what follows `sftp:` (`rest`), i.e. `[user@]host[:port]:path`
    /// or `//[user@]host[:port]/path`.
    pub fn parse(rest: &str) -> Result<SftpLocation, String> {
        let (authority, path) = if let Some(url) = rest.strip_prefix("//") {
            // sftp://authority/path: one slash separates, so `//abs` is absolute.
            let (authority, path) = url
                .split_once('/')
                .ok_or("no path after the host (sftp://[user@]host[:port]//absolute/path or /relative/path)")?;
            let (user, hostport) = split_user(authority);
            let (host, port) = match hostport.strip_prefix('[') {
                Some(v6) => {
                    let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
                    let port = match after {
                        "" => None,
                        p => Some(p.strip_prefix(':').ok_or("junk after ]")?),
                    };
                    (host, port)
                }
                None => match hostport.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (hostport, None),
                },
            };
            (Authority { user, host, port: port.map(parse_port).transpose()? }, path)
        } else {
            // The user ends at the last '@' before the first ':' (an '@'
            // in the path is not a user; one in the user name is).
            let host_end = rest.find(':').unwrap_or(rest.len());
            let (user, after_user) = match rest[..host_end].rsplit_once('@') {
                Some((u, _)) => (Some(u), &rest[u.len() + 1..]),
                None => (None, rest),
            };
            let (host, after) = match after_user.strip_prefix('[') {
                Some(v6) => {
                    let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
                    (host, after.strip_prefix(':').ok_or("no ':' and path after the host")?)
                }
                None => after_user
                    .split_once(':')
                    .ok_or("no ':' and path after the host (sftp:[user@]host[:port]:/path)")?,
            };
            // `host:2222:/path`: digits then ':' are a port. `host:2222`
            // alone is a relative directory named 2222, as in scp.
            let (port, path) = match after.split_once(':') {
                Some((p, path)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    (Some(parse_port(p)?), path)
                }
                _ => (None, after),
            };
            (Authority { user, host, port }, path)
        };
        if authority.host.is_empty() {
            return Err("no host".into());
        }
        if authority.host.starts_with('-') || authority.user.is_some_and(|u| u.starts_with('-')) {
            // Would be read by ssh as an option.
            return Err("a host or user cannot start with '-'".into());
        }
        if authority.user.is_some_and(str::is_empty) {
            return Err("empty user before '@'".into());
        }
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() && rest.contains(":/") { "/" } else { path };
        if path.is_empty() {
            return Err("no path after the host; give the repository's directory, e.g. sftp:host:/srv/backup \
                        (absolute) or sftp:host:backup (in the login directory)"
                .into());
        }
        Ok(SftpLocation {
            user: authority.user.map(str::to_owned),
            host: authority.host.to_owned(),
            port: authority.port,
            path: path.to_owned(),
        })
    }

    /// The default command: the user's own `ssh`, so that its
    /// configuration, agent, ProxyJump and known_hosts all apply.
    pub fn ssh_command(&self) -> Vec<String> {
        let mut argv = vec!["ssh".to_owned()];
        if let Some(port) = self.port {
            argv.extend(["-p".to_owned(), port.to_string()]);
        }
        if let Some(user) = &self.user {
            argv.extend(["-l".to_owned(), user.clone()]);
        }
        argv.extend([self.host.clone(), "-s".to_owned(), "sftp".to_owned()]);
        argv
    }
}

impl fmt::Display for SftpLocation {
    /// The canonical `sftp:[user@]host[:port]:path` spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sftp:")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, ":{}", self.path)
    }
}

struct Authority<'a> {
    user: Option<&'a str>,
    host: &'a str,
    port: Option<u16>,
}

fn split_user(authority: &str) -> (Option<&str>, &str) {
    match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {p:?}")),
        Ok(port) => Ok(port),
    }
}

/// Splits a command line the way a shell would for simple cases: words
/// separated by spaces, single quotes and double quotes group, a backslash
/// escapes the next character. (No variables, globs or pipes: the command
/// is run directly, not through `sh`.)
pub(crate) fn split_command(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unclosed ' in the SFTP command".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => w.push(c),
                            None => return Err("trailing \\ in the SFTP command".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unclosed \" in the SFTP command".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("trailing \\ in the SFTP command".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err("the SFTP command is empty".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> SftpLocation {
        SftpLocation { user: user.map(Into::into), host: host.into(), port, path: path.into() }
    }

    #[test]
    fn locations_parse() {
        // (what follows "sftp:", expected location or error text, canonical form)
        let cases: Vec<(&str, Result<SftpLocation, &str>, &str)> = vec![
            ("nas:/srv/backup", Ok(loc(None, "nas", None, "/srv/backup")), "sftp:nas:/srv/backup"),
            ("nas:/srv/backup/", Ok(loc(None, "nas", None, "/srv/backup")), "sftp:nas:/srv/backup"),
            ("me@nas:/srv", Ok(loc(Some("me"), "nas", None, "/srv")), "sftp:me@nas:/srv"),
            ("me@nas:2222:/srv", Ok(loc(Some("me"), "nas", Some(2222), "/srv")), "sftp:me@nas:2222:/srv"),
            ("nas:2222:rel/dir", Ok(loc(None, "nas", Some(2222), "rel/dir")), "sftp:nas:2222:rel/dir"),
            ("nas:backup", Ok(loc(None, "nas", None, "backup")), "sftp:nas:backup"),
            ("nas:2222", Ok(loc(None, "nas", None, "2222")), "sftp:nas:2222"),
            ("nas:/srv/a:b@c", Ok(loc(None, "nas", None, "/srv/a:b@c")), "sftp:nas:/srv/a:b@c"),
            ("nas:/", Ok(loc(None, "nas", None, "/")), "sftp:nas:/"),
            ("[::1]:/srv", Ok(loc(None, "::1", None, "/srv")), "sftp:[::1]:/srv"),
            ("u@[::1]:22:/srv", Ok(loc(Some("u"), "::1", Some(22), "/srv")), "sftp:u@[::1]:22:/srv"),
            ("192.168.1.5:/volume1/b", Ok(loc(None, "192.168.1.5", None, "/volume1/b")), "sftp:192.168.1.5:/volume1/b"),
            (
                "//me@nas:2222//srv/backup",
                Ok(loc(Some("me"), "nas", Some(2222), "/srv/backup")),
                "sftp:me@nas:2222:/srv/backup",
            ),
            ("//nas/backup", Ok(loc(None, "nas", None, "backup")), "sftp:nas:backup"),
            ("//nas//srv", Ok(loc(None, "nas", None, "/srv")), "sftp:nas:/srv"),
            ("//a@b@nas/x", Ok(loc(Some("a@b"), "nas", None, "x")), "sftp:a@b@nas:x"),
            ("//[::1]:2200//srv", Ok(loc(None, "::1", Some(2200), "/srv")), "sftp:[::1]:2200:/srv"),
            ("nas", Err("no ':' and path after the host"), ""),
            ("nas:", Err("no path after the host"), ""),
            (":/srv", Err("no host"), ""),
            ("me@:/srv", Err("no host"), ""),
            ("@nas:/srv", Err("empty user"), ""),
            ("nas:70000:/srv", Err("invalid port \"70000\""), ""),
            ("nas:0:/srv", Err("invalid port"), ""),
            ("-oProxyCommand=x:/srv", Err("cannot start with '-'"), ""),
            ("//nas", Err("no path after the host"), ""),
            ("//nas/", Err("no path after the host"), ""),
            ("//nas:x//srv", Err("invalid port \"x\""), ""),
            ("//[::1//srv", Err("unclosed ["), ""),
        ];
        for (input, expected, shown) in cases {
            match (SftpLocation::parse(input), expected) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want, "{input}");
                    assert_eq!(got.to_string(), shown, "{input}");
                    // The canonical form parses back to the same location.
                    assert_eq!(SftpLocation::parse(&shown["sftp:".len()..]).as_ref(), Ok(&got), "{shown}");
                }
                (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn ssh_commands() {
        assert_eq!(loc(None, "nas", None, "/x").ssh_command(), ["ssh", "nas", "-s", "sftp"]);
        assert_eq!(
            loc(Some("me"), "nas", Some(2222), "/x").ssh_command(),
            ["ssh", "-p", "2222", "-l", "me", "nas", "-s", "sftp"]
        );
    }

    #[test]
    fn commands_split_like_a_shell() {
        let cases: Vec<(&str, Result<Vec<&str>, &str>)> = vec![
            ("ssh -F cfg host -s sftp", Ok(vec!["ssh", "-F", "cfg", "host", "-s", "sftp"])),
            ("  ssh   'a b'  \"c \\\" d\" e\\ f ", Ok(vec!["ssh", "a b", "c \" d", "e f"])),
            ("ssh ''", Ok(vec!["ssh", ""])),
            ("", Err("empty")),
            ("ssh 'x", Err("unclosed '")),
            ("ssh \"x", Err("unclosed \"")),
            ("ssh x\\", Err("trailing")),
        ];
        for (input, expected) in cases {
            match (split_command(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
                (got, want) => panic!("{input:?}: got {got:?}, expected {want:?}"),
            }
        }
    }
}
