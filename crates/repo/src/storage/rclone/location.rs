//! `rclone:` locations (restic's syntax): everything after `rclone:` is
//! handed to rclone as the path it serves, so any remote rclone knows works.
//!
//! | location | what rclone serves |
//! | --- | --- |
//! | `rclone:gdrive:backups/cairn` | `backups/cairn` on the remote `gdrive` of the rclone config |
//! | `rclone:gdrive:` | the root of `gdrive` |
//! | `rclone:/srv/cairn` | a local directory (rclone's local backend) |
//! | `rclone::local:/srv/cairn` | the same through an on-the-fly remote (`:backend:path`) |

use std::fmt;

/// A parsed `rclone:` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RcloneLocation {
    /// What `rclone serve restic` gets as its remote path, e.g. `gdrive:backups/cairn`.
    pub target: String,
}

impl RcloneLocation {
    /// Parses what follows `rclone:`.
    pub fn parse(rest: &str) -> Result<RcloneLocation, String> {
        if rest.trim().is_empty() {
            return Err("no remote after rclone: (rclone:REMOTE:PATH, e.g. rclone:gdrive:backups/cairn)".into());
        }
        if rest != rest.trim() {
            return Err("leading or trailing spaces around the remote".into());
        }
        // rclone would read it as a flag, not as the remote.
        if rest.starts_with('-') {
            return Err("the remote starts with '-' (rclone:REMOTE:PATH)".into());
        }
        if rest.chars().any(char::is_control) {
            return Err("a control character in the remote".into());
        }
        Ok(RcloneLocation { target: rest.to_owned() })
    }
}

impl fmt::Display for RcloneLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rclone:{}", self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        // (after "rclone:", the target or an error's text)
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("gdrive:backups/cairn", Ok("gdrive:backups/cairn")),
            ("gdrive:", Ok("gdrive:")),
            ("b2:bucket/with spaces/x", Ok("b2:bucket/with spaces/x")),
            ("/srv/cairn", Ok("/srv/cairn")),
            ("relative/dir", Ok("relative/dir")),
            (":local:/srv/cairn", Ok(":local:/srv/cairn")),
            (":memory:bucket", Ok(":memory:bucket")),
            ("", Err("no remote after rclone:")),
            ("   ", Err("no remote after rclone:")),
            (" gdrive:x", Err("spaces")),
            ("--config=/x", Err("starts with '-'")),
            ("gdrive:a\nb", Err("control character")),
        ];
        for (rest, expected) in cases {
            match (RcloneLocation::parse(rest), expected) {
                (Ok(l), Ok(target)) => {
                    assert_eq!(l.target, *target, "{rest:?}");
                    assert_eq!(l.to_string(), format!("rclone:{target}"));
                }
                (Err(e), Err(text)) => assert!(e.contains(text), "{rest:?}: {e}"),
                (got, want) => panic!("{rest:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
