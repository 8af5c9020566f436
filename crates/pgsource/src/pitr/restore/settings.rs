//! The recovery settings a restored data directory gets: rendered as pure
//! text (table-tested), appended to `postgresql.auto.conf`, plus
//! `recovery.signal`.
//!
//! `archive_mode = off` keeps the restored cluster from archiving its new
//! timeline into production's repository; `recovery_target_action =
//! promote` (the default here, PostgreSQL's is `pause`) ends recovery
//! without a manual `pg_wal_replay_resume()`.

use std::fmt::Write;

/// The point recovery stops at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// `recovery_target_time`: the first commit after it is not applied.
    Time(jiff::Timestamp),
    /// `recovery_target_lsn` (`X/Y`).
    Lsn(String),
    /// `recovery_target_xid`.
    Xid(u64),
    /// `recovery_target_name`: a `pg_create_restore_point` name.
    Name(String),
    /// No target: replay all the WAL the archive has.
    Latest,
}

/// What recovery does at its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetAction {
    /// Ends recovery: a new timeline, read-write.
    #[default]
    Promote,
    /// Stays read-only in recovery (resume with `pg_wal_replay_resume()`).
    Pause,
    /// Stops the server (start it again to promote or go on).
    Shutdown,
}

impl TargetAction {
    /// PostgreSQL's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// Everything written into `postgresql.auto.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    /// The `restore_command`, `%f` and `%p` left for PostgreSQL.
    pub restore_command: String,
    /// Where to stop.
    pub target: RecoveryTarget,
    /// Stop before the target transaction/time instead of after it.
    pub exclusive: bool,
    /// `recovery_target_timeline`: a number, or `None` for `latest`.
    pub timeline: Option<u32>,
    /// At the target.
    pub action: TargetAction,
    /// `port`, when the restored cluster must not take the source's.
    pub port: Option<u16>,
}

/// A string as a postgresql.conf value: single-quoted, `'` doubled.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The block appended to `postgresql.auto.conf` (later lines win over
/// earlier ones and over postgresql.conf).
pub fn render(s: &RecoverySettings) -> String {
    let mut out = String::from("\n# Recovery settings written by cairn pg restore\n");
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k} = {v}");
    };
    line("restore_command", quote(&s.restore_command));
    line("archive_mode", quote("off"));
    match &s.target {
        RecoveryTarget::Time(t) => {
            line("recovery_target_time", quote(&t.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string()))
        }
        RecoveryTarget::Lsn(l) => line("recovery_target_lsn", quote(l)),
        RecoveryTarget::Xid(x) => line("recovery_target_xid", quote(&x.to_string())),
        RecoveryTarget::Name(n) => line("recovery_target_name", quote(n)),
        RecoveryTarget::Latest => {}
    }
    if matches!(s.target, RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_) | RecoveryTarget::Xid(_)) {
        line("recovery_target_inclusive", quote(if s.exclusive { "off" } else { "on" }));
    }
    line("recovery_target_timeline", quote(&s.timeline.map(|t| t.to_string()).unwrap_or_else(|| "latest".into())));
    if s.target != RecoveryTarget::Latest {
        line("recovery_target_action", quote(s.action.as_str()));
    }
    if let Some(port) = s.port {
        line("port", port.to_string());
    }
    out
}

/// Quotes one word for `sh -c` (PostgreSQL runs `restore_command` through
/// the shell): unchanged when it is plain, else single-quoted.
pub fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `restore_command`: `PROGRAM ARGS... pg wal-get %f %p`, each word quoted
/// for the shell, and `%` doubled (PostgreSQL's escape) in all of them.
pub fn restore_command(program: &str, repository_args: &[String]) -> String {
    let mut words = vec![shell_word(program).replace('%', "%%")];
    words.extend(repository_args.iter().map(|a| shell_word(a).replace('%', "%%")));
    words.extend(["pg", "wal-get", "%f", "%p"].map(String::from));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(target: RecoveryTarget) -> RecoverySettings {
        RecoverySettings {
            restore_command: "cairn -r /srv/repo pg wal-get %f %p".into(),
            target,
            exclusive: false,
            timeline: None,
            action: TargetAction::Promote,
            port: None,
        }
    }

    #[test]
    fn each_target_renders_its_setting() {
        let t: jiff::Timestamp = "2026-12-06T01:40:00.25Z".parse().unwrap();
        let cases: [(RecoveryTarget, &[&str], &[&str]); 5] = [
            (
                RecoveryTarget::Time(t),
                &["recovery_target_time = '2026-12-06 01:40:00.250000+00'", "recovery_target_action = 'promote'"],
                &["recovery_target_lsn ="],
            ),
            (
                RecoveryTarget::Lsn("0/3000060".into()),
                &["recovery_target_lsn = '0/3000060'", "recovery_target_inclusive = 'on'"],
                &["recovery_target_time ="],
            ),
            (RecoveryTarget::Xid(742), &["recovery_target_xid = '742'"], &[]),
            (
                RecoveryTarget::Name("before 'upgrade'".into()),
                &["recovery_target_name = 'before ''upgrade'''"],
                &["recovery_target_inclusive"],
            ),
            (RecoveryTarget::Latest, &["recovery_target_timeline = 'latest'"], &["recovery_target_action"]),
        ];
        for (target, present, absent) in cases {
            let text = render(&settings(target.clone()));
            assert!(text.contains("restore_command = 'cairn -r /srv/repo pg wal-get %f %p'"), "{text}");
            assert!(text.contains("archive_mode = 'off'"), "{text}");
            for p in present {
                assert!(text.contains(p), "{target:?}: {p} missing in {text}");
            }
            for a in absent {
                assert!(!text.contains(a), "{target:?}: {a} present in {text}");
            }
        }
    }

    #[test]
    fn options_change_inclusive_timeline_action_and_port() {
        let mut s = settings(RecoveryTarget::Xid(9));
        s.exclusive = true;
        s.timeline = Some(3);
        s.action = TargetAction::Shutdown;
        s.port = Some(5433);
        let text = render(&s);
        for p in [
            "recovery_target_inclusive = 'off'",
            "recovery_target_timeline = '3'",
            "recovery_target_action = 'shutdown'",
            "port = 5433",
        ] {
            assert!(text.contains(p), "{p} missing in {text}");
        }
    }

    #[test]
    fn the_restore_command_is_quoted_for_the_shell() {
        let args = ["-r".to_string(), "/srv/my repo".into(), "--password-file".into(), "/etc/cairn/pw".into()];
        assert_eq!(
            restore_command("/usr/bin/cairn", &args),
            "/usr/bin/cairn -r '/srv/my repo' --password-file /etc/cairn/pw pg wal-get %f %p"
        );
        assert_eq!(
            restore_command("cairn", &["-r".into(), "/srv/100%".into()]),
            "cairn -r /srv/100%% pg wal-get %f %p"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
