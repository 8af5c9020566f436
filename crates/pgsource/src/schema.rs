//! The schema, through PostgreSQL's own programs: `pg_dump` writes it from
//! the backup's exported snapshot as one custom-format archive of the
//! pre-data and post-data sections (table definitions, types, functions,
//! large object entries with their owners, comments and privileges; then
//! indexes, constraints, triggers, `REFRESH MATERIALIZED VIEW`), and
//! `pg_restore` replays one section at a time. Using pg_dump keeps DDL
//! fidelity with every server version without re-implementing it, and the
//! custom format avoids the `\restrict` lines of recent plain-text dumps.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::connect::ConnSpec;
use crate::error::{Error, Result};

/// Where the PostgreSQL client programs are.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// A directory holding pg_dump and pg_restore (`--pg-bindir`); `None`
    /// searches (see [`Tools::find`]).
    pub bindir: Option<PathBuf>,
}

/// A located program and its version.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Its path.
    pub path: PathBuf,
    /// Its `--version` line, e.g. `pg_dump (PostgreSQL) 15.18`.
    pub version_line: String,
    /// Its major version.
    pub major: i32,
}

impl Tools {
    /// Finds `program` (`pg_dump`, `pg_restore`) for a server of major
    /// version `server_major`: in `--pg-bindir` if given; else the newest
    /// `/usr/lib/postgresql/N/bin` with N at least the server's (Debian and
    /// Ubuntu install several versions side by side), else `PATH`. A
    /// program older than the server cannot read it: that is an error that
    /// names the fix.
    pub async fn find(&self, program: &str, server_major: i32) -> Result<Tool> {
        let candidates: Vec<PathBuf> = match &self.bindir {
            Some(dir) => vec![dir.join(program)],
            None => {
                let mut versioned: Vec<(i32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let major = e.file_name().to_str()?.parse::<i32>().ok()?;
                        let path = e.path().join("bin").join(program);
                        path.exists().then_some((major, path))
                    })
                    .filter(|(major, _)| *major >= server_major)
                    .collect();
                versioned.sort();
                let mut c: Vec<PathBuf> = versioned.into_iter().rev().map(|(_, p)| p).collect();
                c.extend(search_path(program));
                c
            }
        };
        let install = format!(
            "install the PostgreSQL {server_major} client programs (e.g. apt-get install postgresql-client-{server_major}) \
             or name their directory with --pg-bindir"
        );
        let Some(path) = candidates.into_iter().find(|p| p.exists()) else {
            let where_ = match &self.bindir {
                Some(dir) => format!("in {}", dir.display()),
                None => "on PATH or in /usr/lib/postgresql/*/bin".to_owned(),
            };
            return Err(Error::Tool(format!("{program} not found {where_}: {install}")));
        };
        let out = Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::Tool(format!("cannot run {}: {e} ({install})", path.display())))?;
        let version_line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let major = parse_major(&version_line).ok_or_else(|| {
            Error::Tool(format!("{} --version printed {version_line:?}, not a PostgreSQL version", path.display()))
        })?;
        if major < server_major {
            return Err(Error::Tool(format!(
                "{} is version {major}, older than the server (PostgreSQL {server_major}); it cannot handle a newer server: {install}",
                path.display()
            )));
        }
        Ok(Tool { path, version_line, major })
    }
}

fn search_path(program: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect()).unwrap_or_default()
}

/// The major version in `pg_dump (PostgreSQL) 15.18 (Debian ...)`: 15;
/// `9.6.24` is 9 (before 10, majors had two parts, all older than 10).
pub fn parse_major(line: &str) -> Option<i32> {
    let version = line.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

/// Runs pg_dump for the schema archive of the exported snapshot `snapshot_id`
/// and returns the archive's bytes. `tables`/`exclude` are exact
/// `"schema"."name"` relations to pass as `-t`/`-T`; large objects are
/// included unless `tables` is given (pg_dump's own rule).
pub async fn dump_schema(
    tool: &Tool,
    conn: &ConnSpec,
    snapshot_id: &str,
    tables: &[String],
    exclude: &[String],
) -> Result<Vec<u8>> {
    let mut cmd = Command::new(&tool.path);
    cmd.args(["--format=custom", "--section=pre-data", "--section=post-data", "--no-password"]);
    cmd.arg(format!("--snapshot={snapshot_id}"));
    if tables.is_empty() {
        cmd.arg("--blobs");
    }
    for t in tables {
        cmd.arg(format!("--table={t}"));
    }
    for t in exclude {
        cmd.arg(format!("--exclude-table={t}"));
    }
    cmd.envs(conn.libpq_env()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::Tool(format!("cannot run {}: {e}", tool.path.display())))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut archive = Vec::new();
    let mut messages = Vec::new();
    let (a, b) = tokio::join!(stdout.read_to_end(&mut archive), stderr.read_to_end(&mut messages));
    a.map_err(|e| Error::io("reading pg_dump's output", e))?;
    b.map_err(|e| Error::io("reading pg_dump's messages", e))?;
    let status = child.wait().await.map_err(|e| Error::io("waiting for pg_dump", e))?;
    if !status.success() {
        return Err(Error::Tool(format!(
            "pg_dump failed ({status}): {}",
            String::from_utf8_lossy(&messages).trim().replace('\n', "; ")
        )));
    }
    Ok(archive)
}

/// Runs `pg_dumpall --globals-only` (roles with their passwords,
/// memberships and settings; tablespaces) against `conn`'s server,
/// connecting to `conn`'s database, and returns the SQL script. Reading
/// role passwords needs a superuser; `no_role_passwords` leaves them out
/// (`--no-role-passwords`), which any role may do.
pub async fn dump_globals(tool: &Tool, conn: &ConnSpec, no_role_passwords: bool) -> Result<Vec<u8>> {
    let mut cmd = Command::new(&tool.path);
    cmd.args(["--globals-only", "--no-password"]);
    // pg_dumpall ignores PGDATABASE and the database of --dbname: -l/--database names it.
    cmd.arg(format!("--database={}", conn.dbname()));
    if no_role_passwords {
        cmd.arg("--no-role-passwords");
    }
    cmd.envs(conn.libpq_env()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd.output().await.map_err(|e| Error::Tool(format!("cannot run {}: {e}", tool.path.display())))?;
    if !out.status.success() {
        let messages = String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ");
        let hint = if messages.contains("pg_authid") {
            " (reading role passwords needs a superuser: connect as one, or pass --no-role-passwords)"
        } else {
            ""
        };
        return Err(Error::Tool(format!("pg_dumpall --globals-only failed ({}): {messages}{hint}", out.status)));
    }
    Ok(out.stdout)
}

/// What replaying a globals script did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScriptOutcome {
    /// Errors that were expected on a server that already has the objects
    /// (`role "x" already exists`), as psql printed them.
    pub tolerated: Vec<String>,
}

/// Replays a SQL script the way its reader is meant to (`psql -f`, going on
/// after an error, as pg_dumpall's output expects): a role or tablespace
/// that already exists on the target is reported, not fatal, and the
/// script's next statements (`ALTER ROLE ...`) still run. Any other error
/// fails, naming every message.
pub async fn run_script(psql: &Tool, conn: &ConnSpec, script: &Path) -> Result<ScriptOutcome> {
    let mut cmd = Command::new(&psql.path);
    cmd.args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0", "-f"]).arg(script);
    let name = conn.dbname().replace('\\', "\\\\").replace('\'', "\\'");
    cmd.arg(format!("--dbname=dbname='{name}'"));
    cmd.envs(conn.libpq_env()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let out = cmd.output().await.map_err(|e| Error::Tool(format!("cannot run {}: {e}", psql.path.display())))?;
    let messages = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<String> =
        messages.lines().filter(|l| l.contains("ERROR:") || l.contains("FATAL:")).map(str::to_owned).collect();
    let (tolerated, fatal): (Vec<String>, Vec<String>) = errors.into_iter().partition(|l| l.contains("already exists"));
    if !out.status.success() || !fatal.is_empty() {
        let shown = if fatal.is_empty() { messages.trim().replace('\n', "; ") } else { fatal.join("; ") };
        return Err(Error::Tool(format!("replaying {} with psql failed ({}): {shown}", script.display(), out.status)));
    }
    Ok(ScriptOutcome { tolerated })
}

/// Options of one `pg_restore` pass.
#[derive(Debug, Clone, Default)]
pub struct RestorePass<'a> {
    /// `pre-data` or `post-data`.
    pub section: &'a str,
    /// `--clean --if-exists`.
    pub clean: bool,
    /// `--no-owner`.
    pub no_owner: bool,
    /// `-j N` (post-data only; pg_restore runs N connections).
    pub jobs: usize,
    /// `-t NAME` for each (only these tables' definitions).
    pub tables: Vec<String>,
    /// `-L FILE`: only the entries of this list (see [`list_toc`]).
    pub list: Option<&'a Path>,
}

/// Replays one section of the schema archive `archive` into `conn`'s
/// database, stopping at the first error.
pub async fn restore_section(tool: &Tool, conn: &ConnSpec, archive: &Path, pass: &RestorePass<'_>) -> Result<()> {
    let mut cmd = Command::new(&tool.path);
    cmd.arg(format!("--section={}", pass.section)).args(["--exit-on-error", "--no-password"]);
    // pg_restore writes a script unless given a database; as a conninfo
    // string the name cannot be mistaken for one.
    let name = conn.dbname().replace('\\', "\\\\").replace('\'', "\\'");
    cmd.arg(format!("--dbname=dbname='{name}'"));
    if pass.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if pass.no_owner {
        cmd.arg("--no-owner");
    }
    if pass.jobs > 1 {
        cmd.arg(format!("--jobs={}", pass.jobs));
    }
    for t in &pass.tables {
        cmd.arg(format!("--table={t}"));
    }
    if let Some(list) = pass.list {
        cmd.arg("--use-list").arg(list);
    }
    cmd.arg(archive);
    cmd.envs(conn.libpq_env()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let out = cmd.output().await.map_err(|e| Error::Tool(format!("cannot run {}: {e}", tool.path.display())))?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "pg_restore --section={} failed ({}): {}",
            pass.section,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ")
        )));
    }
    Ok(())
}

/// One entry of an archive's table of contents (`pg_restore -l`).
#[derive(Debug, Clone, PartialEq)]
pub struct TocEntry {
    /// The line as pg_restore printed it (what a `-L` list file holds).
    pub line: String,
    /// The object's catalog OID in the source database.
    pub oid: u32,
    /// Whether it is an `INDEX` or a `CONSTRAINT` (not `FK CONSTRAINT`,
    /// not `INDEX ATTACH`): an entry that depends on its table alone when
    /// that table is a plain one.
    pub index_or_constraint: bool,
}

/// Parses one line of `pg_restore -l` (`215; 1259 16412 INDEX public events_at app`);
/// `None` for comments and blank lines. A line of another shape is kept
/// (OID 0, not an index) so that the final post-data pass still replays it.
pub fn parse_toc_line(line: &str) -> Option<TocEntry> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with(';') {
        return None;
    }
    let parsed = || -> Option<(u32, bool)> {
        let (id, rest) = line.split_once(';')?;
        id.trim().parse::<u32>().ok()?;
        let mut words = rest.trim_start().splitn(3, ' ');
        let _table_oid: u32 = words.next()?.parse().ok()?;
        let oid: u32 = words.next()?.parse().ok()?;
        let desc = words.next()?;
        let index_or_constraint =
            (desc.starts_with("INDEX ") && !desc.starts_with("INDEX ATTACH ")) || desc.starts_with("CONSTRAINT ");
        Some((oid, index_or_constraint))
    };
    let (oid, index_or_constraint) = parsed().unwrap_or((0, false));
    Some(TocEntry { line: line.to_owned(), oid, index_or_constraint })
}

/// The table of contents of a custom-format archive (`pg_restore -l`).
pub async fn list_toc(tool: &Tool, archive: &Path) -> Result<Vec<TocEntry>> {
    let out = Command::new(&tool.path)
        .arg("--list")
        .arg(archive)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Tool(format!("cannot run {}: {e}", tool.path.display())))?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "pg_restore --list failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(parse_toc_line).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("pg_restore (PostgreSQL) 17devel"), Some(17));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 16beta2"), Some(16));
        assert_eq!(parse_major("nonsense"), None);
    }

    #[test]
    fn toc_lines() {
        let e = parse_toc_line("215; 1259 16412 INDEX public events_at app").unwrap();
        assert_eq!((e.oid, e.index_or_constraint), (16412, true));
        let e = parse_toc_line("3340; 2606 16390 CONSTRAINT public events events_pkey app").unwrap();
        assert!(e.index_or_constraint && e.oid == 16390);
        assert!(
            !parse_toc_line("3341; 2606 16391 FK CONSTRAINT app orders orders_kind_fkey app")
                .unwrap()
                .index_or_constraint
        );
        assert!(!parse_toc_line("3342; 0 0 INDEX ATTACH app m_2023_idx app").unwrap().index_or_constraint);
        assert!(!parse_toc_line("3343; 2606 16392 TABLE public \"INDEX x\" app").unwrap().index_or_constraint);
        assert_eq!(parse_toc_line(";"), None);
        assert_eq!(parse_toc_line("; Archive created at 2026-12-01"), None);
        assert_eq!(parse_toc_line(""), None);
        let odd = parse_toc_line("strange line").unwrap();
        assert!(!odd.index_or_constraint && odd.line == "strange line", "kept for the final pass");
    }
}
