//! `cairn report --html`: the page of a job's real runs, rendered in a real
//! headless browser (Chromium), where its plots must be drawn with data.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use support::{ok, run, stderr};

fn cairn(home: &Path, args: &[&str]) -> Command {
    let mut c = support::cairn(&home.join("cache"));
    c.env_remove("STATE_DIRECTORY").env("HOME", home).args(args);
    c
}

/// The number after `label` in the verdict `ok 4 plots, 12 marks, ...`.
fn count(verdict: &str, label: &str) -> usize {
    let words: Vec<&str> = verdict.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let at = words.iter().position(|w| *w == label).unwrap_or_else(|| panic!("no {label} in {verdict}"));
    words[at - 1].parse().unwrap()
}

#[test]
fn report_of_three_runs_renders_in_a_browser() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let data = home.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let password = home.join("password");
    std::fs::write(&password, "report password\n").unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = home.join("cairn.toml");
    // A job name and a path that need escaping in HTML.
    std::fs::write(
        &config,
        format!(
            r#"version = 1
[repository.local]
location = "{repo}"
password-file = "{password}"
init = true

[job."<b>&nightly"]
into = "local"

[[job."<b>&nightly".source]]
files = ["{data}"]
"#,
            repo = home.join("repo").display(),
            password = password.display(),
            data = data.display(),
        ),
    )
    .unwrap();
    let (config, state) = (config.to_str().unwrap(), home.join("state"));
    let state = state.to_str().unwrap();

    // Three runs, with new data each time.
    for night in 0..3u64 {
        support::noise_file(&data.join(format!("night-{night}.bin")), night, 200_000 * (night as usize + 1));
        let out = run(&mut cairn(home, &["run", "--config", config, "--state-dir", state]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }

    let page = home.join("out.html");
    let printed = ok(run(&mut cairn(
        home,
        &["report", "--html", page.to_str().unwrap(), "--config", config, "--state-dir", state],
    )));
    assert_eq!(printed.trim(), page.to_str().unwrap());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Job &lt;b&gt;&amp;nightly") && !html.contains("<b>&"), "the job name is escaped");
    assert!(html.contains("data-plot=\"added\" data-points=\"3\""), "{html}");
    assert!(html.contains("data-plot=\"duration\" data-points=\"3\""), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing to load");
    let leftovers: Vec<_> = std::fs::read_dir(home)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".out.html"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file left: {leftovers:?}");

    // --html is required (a --json may join it).
    let missing = run(&mut cairn(home, &["report", "--config", config]));
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("--html <FILE>"), "{}", stderr(&missing));

    let Some(chromium) = support::browser::chromium() else { return };
    let started = Instant::now();
    let verdict = support::browser::render_and_check(&chromium, &page).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{verdict} (browser: {:.1}s)", started.elapsed().as_secs_f64());
    // Bytes added and durations have data now; sizes and drills, when the
    // runs record them. Every plot drawn has a mark per point (checked in
    // the page), and there are at least the bars and points of three runs.
    assert!(count(&verdict, "plots") >= 2, "{verdict}");
    assert!(count(&verdict, "marks") >= 6, "{verdict}");
    assert_eq!(count(&verdict, "plots") + count(&verdict, "empty"), 4, "four plots, drawn or said empty: {verdict}");
    assert_eq!(count(&verdict, "runs"), 3, "{verdict}");
}

/// Every plot drawn, a status table, hostile names: the page passes its own
/// check in the browser, and the check fails a plot that lost its marks.
#[test]
fn all_plots_and_a_status_table_in_a_browser() {
    use cairn::job::{
        JobState, Level, RepositorySize, RunReport, StatusRow, StatusTable, Step, StepReport, StepStatus,
    };
    let Some(chromium) = support::browser::chromium() else { return };
    let hostile = "<script>alert(\"&'\")</script>";
    let runs = (0..6i64)
        .map(|day| {
            let mut run = RunReport::new(hostile);
            run.started = jiff::Timestamp::from_second(1_700_000_000 + day * 86_400).unwrap();
            run.finished = run.started.checked_add(jiff::SignedDuration::from_secs(600 + day * 30)).unwrap();
            let step = |step, status| StepReport::new(step, hostile, status, hostile);
            run.steps
                .push(StepReport { bytes_added: Some((day as u64 * 5) << 20), ..step(Step::Sources, StepStatus::Ok) });
            run.steps
                .push(StepReport { restore_seconds: Some(30.0 + day as f64), ..step(Step::Drill, StepStatus::Ok) });
            if day == 4 {
                run.steps.push(step(Step::Check, StepStatus::Failed));
            }
            for (repository, factor) in [("local", 1), (hostile, 2)] {
                run.sizes.push(RepositorySize {
                    repository: repository.into(),
                    snapshots: day as u64 + 1,
                    logical_bytes: ((day as u64 + 1) * factor) << 30,
                    raw_bytes: ((day as u64 + 1) * factor) << 29,
                    stored_bytes: ((day as u64 + 1) * factor) << 28,
                    from_copy_records: false,
                });
            }
            run
        })
        .collect();
    let jobs = [(hostile.to_owned(), JobState { runs, ..Default::default() })].into_iter().collect();
    let table = StatusTable {
        title: "Jobs".into(),
        headers: vec!["job".into(), "last run".into()],
        rows: vec![StatusRow { cells: vec![hostile.into(), "failed".into()], level: Level::Failed }],
    };
    let html = cairn::job::render_html(jiff::Timestamp::now(), &jobs, &[table]);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("all.html");
    std::fs::write(&page, &html).unwrap();
    let verdict = support::browser::render_and_check(&chromium, &page).unwrap_or_else(|e| panic!("{e}"));
    // Sizes: stored and logical of two repositories; bars; durations; drills.
    assert_eq!(verdict, "ok 4 plots, 42 marks, 0 empty, 6 runs, 1 status tables");

    // A plot that claims more points than it draws fails the page's check.
    let broken = html.replacen("data-points=\"6\"", "data-points=\"60\"", 1);
    std::fs::write(&page, broken).unwrap();
    let error = support::browser::render_and_check(&chromium, &page).unwrap_err();
    assert!(error.starts_with("fail: size 0: 24 marks for 60 points"), "{error}");
}
