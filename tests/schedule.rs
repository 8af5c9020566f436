//! `cairn schedule`: the units it prints and writes are ones systemd
//! accepts (where `systemd-analyze` is installed), and `status` shows the
//! next run and the last run's result. Nothing is enabled: the tests use
//! `--print` and `--dir`, never `systemctl`.

mod support;

use std::path::Path;
use std::process::Command;

use cairn::job::{JobState, RunReport, StateDir, Step, StepReport, StepStatus};
use support::{ok, run};

fn cairn(home: &Path, args: &[&str]) -> Command {
    let mut c = support::cairn(&home.join("cache"));
    c.env_remove("STATE_DIRECTORY").env("HOME", home).args(args);
    c
}

/// A one-job config in `home`; returns its path.
fn config(home: &Path) -> String {
    let path = home.join("cairn.toml");
    std::fs::write(
        &path,
        format!(
            r#"version = 1
[repository.local]
location = "{home}/repo"
password-file = "{home}/password"
init = true

[job.nightly]
into = "local"
schedule = "*-*-* 02:30"
spread = "10m"

[[job.nightly.source]]
files = ["{home}/data"]
"#,
            home = home.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// `systemd-analyze verify` on `units`; `None` when it is not installed.
fn verify(units: &[std::path::PathBuf], user: bool, runtime: &Path) -> Option<std::process::Output> {
    let mut c = Command::new("systemd-analyze");
    if user {
        c.arg("--user").env("XDG_RUNTIME_DIR", runtime);
    }
    match c.arg("verify").args(units).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: no systemd-analyze here; the units are not verified");
            None
        }
        Err(e) => panic!("systemd-analyze: {e}"),
    }
}

#[test]
fn install_print_dir_verify_status_remove() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path().canonicalize().unwrap();
    let config = config(&home);

    let printed = ok(run(&mut cairn(&home, &["schedule", "install", "--system", "--config", &config, "--print"])));
    let exe = Path::new(env!("CARGO_BIN_EXE_cairn")).canonicalize().unwrap();
    assert!(printed.contains("# /etc/systemd/system/cairn-nightly.service\n"), "{printed}");
    assert!(printed.contains(&format!("ExecStart={} run nightly --config {config}\n", exe.display())), "{printed}");
    assert!(printed.contains("OnCalendar=*-*-* 02:30\n") && printed.contains("RandomizedDelaySec=600\n"), "{printed}");

    // A relative --config is written absolute.
    let mut relative = cairn(&home, &["schedule", "install", "--cron", "--user", "--config", "cairn.toml", "--print"]);
    let line = ok(run(relative.current_dir(&home)));
    assert!(line.contains(&format!("run nightly --config {config} --if-due")), "{line}");

    let runtime = tempfile::tempdir().unwrap();
    for (scope, user) in [("--system", false), ("--user", true)] {
        let units = home.join(format!("units{scope}"));
        let dir = units.display().to_string();
        let out = run(&mut cairn(&home, &["schedule", "install", scope, "--config", &config, "--dir", &dir]));
        let said = ok(out.clone()) + &support::stderr(&out);
        assert!(said.contains("nothing was enabled"), "{said}");
        let files = [units.join("cairn-nightly.service"), units.join("cairn-nightly.timer")];
        assert!(files.iter().all(|f| f.exists()), "{said}");
        if let Some(output) = verify(&files, user, runtime.path()) {
            assert!(
                output.status.success() && output.stderr.is_empty(),
                "{scope}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    // Status: the next run from the calendar, the last run from the state.
    let state_dir = home.join("state");
    let state = StateDir::new(&state_dir);
    let mut report = RunReport::new("nightly");
    report.steps.push(StepReport::new(Step::Sources, "files", StepStatus::Warning, "1 file unreadable"));
    state.record("nightly", JobState::default(), report).unwrap();
    let units = home.join("units--system").display().to_string();
    let state_arg = state_dir.display().to_string();
    let args = ["schedule", "status", "--system", "--config", &config, "--dir", &units, "--state-dir", &state_arg];
    let status = ok(run(cairn(&home, &args).env("TZ", "UTC")));
    assert!(status.contains("installed: yes"), "{status}");
    assert!(status.contains("02:30:00 UTC (from the calendar and the last run)"), "{status}");
    assert!(status.contains("exit 3 (warnings)"), "{status}");

    let removed = run(&mut cairn(&home, &["schedule", "remove", "--system", "--config", &config, "--dir", &units]));
    assert!(support::stderr(&removed).contains("deleted"), "{}", support::stderr(&removed));
    let status = ok(run(cairn(&home, &args).env("TZ", "UTC")));
    assert!(status.contains("installed: no"), "{status}");
}
