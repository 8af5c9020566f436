//! A real browser for the tests: Debian's Chromium, headless, loads a page
//! from disk and prints its DOM after its scripts ran.
//!
//! Pages made for this (the `cairn report` page) check themselves in a small
//! inline script and leave the verdict in `<body data-check="...">`:
//! `ok ...` or `fail: ...`. [`render_and_check`] returns it, and fails on
//! anything the page wrote to the console (a CSP violation, a script error).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the browser may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium to use (`$CHROMIUM`, else `chromium` on the PATH). Without
/// one, under `CI=true` this panics (CI must run the browser tests);
/// elsewhere it says the test is skipped and returns `None`.
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM").map(PathBuf::from).filter(|p| p.is_file()).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file())
    });
    if found.is_none() {
        let why = "chromium not found (install the Debian package `chromium`, or set CHROMIUM)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}: the browser tests must run under CI");
        }
        eprintln!("skipping: {why}");
    }
    found
}

/// Opens `page` in headless `chromium` and returns its `body[data-check]`
/// when it starts with `ok`; an error for a `fail: ...` verdict, a missing
/// one, any console message, a browser that fails or runs over a minute.
pub fn render_and_check(chromium: &Path, page: &Path) -> Result<String, String> {
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = profile.path().join("dom.html");
    let err = profile.path().join("stderr.txt");
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| e.to_string());
    let page = page.canonicalize().map_err(|e| format!("{}: {e}", page.display()))?;
    let mut child = std::os::unix::process::CommandExt::process_group(
        Command::new(chromium)
            // Without the background-networking flags it waits for the
            // network at startup, which a closed network never answers.
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
            // Console messages go to stderr, to be caught.
            .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
            .arg(format!("file://{}", page.display()))
            .stdin(Stdio::null())
            .stdout(file(&out)?)
            .stderr(file(&err)?),
        // Its own process group, so a hung browser goes with all its children.
        0,
    )
    .spawn()
    .map_err(|e| format!("cannot start {}: {e}", chromium.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if started.elapsed() > TIMEOUT => {
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
                let _ = child.wait();
                return Err(format!("chromium ran over {TIMEOUT:?} and was killed"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let dom = std::fs::read_to_string(&out).unwrap_or_default();
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    if !status.success() {
        return Err(format!("chromium failed ({status}): {log}"));
    }
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    if !console.is_empty() {
        return Err(format!("the page wrote to the console:\n{}", console.join("\n")));
    }
    let verdict = dom
        .split_once("data-check=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.replace("&amp;", "&").replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">"))
        .ok_or_else(|| format!("no data-check on the body: the page's script did not run\n{log}"))?;
    if verdict.starts_with("ok") { Ok(verdict) } else { Err(verdict) }
}
