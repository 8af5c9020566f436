//! The Debian package: scripts/package.sh builds it around the binary the
//! tests were built with (under the `package-test` profile: CI makes no
//! second, optimised build for this one test), then `dpkg -i` installs it
//! on this machine, the installed cairn answers `--version` and backs up a
//! directory, `man` finds its pages, the completions load, the example
//! units are there, and `dpkg --purge` leaves none of its files behind.
//!
//! It installs into the real /usr, so it needs root. Without root (or
//! without dpkg or cargo-deb) it is skipped with a message, except under
//! `CI=true`, where it fails: CI must prove the package installs. It also
//! refuses to run where a cairn package is already installed, rather than
//! replace and then remove someone's cairn.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every file the package must install (man pages are gzipped by cargo-deb).
const INSTALLED: [&str; 10] = [
    "/usr/bin/cairn",
    "/usr/share/man/man1/cairn.1.gz",
    "/usr/share/man/man1/cairn-backup.1.gz",
    "/usr/share/man/man1/cairn-schedule-install.1.gz",
    "/usr/share/bash-completion/completions/cairn",
    "/usr/share/zsh/vendor-completions/_cairn",
    "/usr/share/fish/vendor_completions.d/cairn.fish",
    "/usr/share/doc/cairn/examples/systemd/cairn-nightly.service",
    "/usr/share/doc/cairn/examples/systemd/cairn-nightly.timer",
    "/usr/share/doc/cairn/README.md",
];

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn found(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: dpkg -i needs root".into());
    }
    for program in ["dpkg", "dpkg-deb", "dpkg-shlibdeps", "cargo-deb", "man"] {
        if !found(program) {
            return Some(format!("{program} not found (scripts/test.sh installs it)"));
        }
    }
    None
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

#[track_caller]
fn succeeds(cmd: &mut Command) -> String {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn package_installed() -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "cairn"])).stdout.starts_with(b"install ok installed")
}

/// Purges the package when the test ends, also when it fails half-way, so
/// that a failed run leaves the machine as it found it.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if package_installed() {
            let _ = Command::new("dpkg").args(["--purge", "cairn"]).output();
        }
    }
}

fn build_package(out: &Path) -> PathBuf {
    succeeds(
        Command::new(support::root().join("scripts/package.sh"))
            .args(["--profile", "package-test", "--binary", env!("CARGO_BIN_EXE_cairn"), "--out"])
            .arg(out)
            // Quicker compression: this package is installed once and deleted.
            .args(["--", "--fast"]),
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("the output directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "expected one .deb in {}: {debs:?}", out.display());
    debs.into_iter().next().expect("one .deb")
}

#[test]
fn the_package_installs_works_and_purges_cleanly() {
    if let Some(why) = missing_prerequisite() {
        assert!(!in_ci(), "the package test cannot run under CI: {why}");
        eprintln!("skipping the package test: {why}");
        return;
    }
    assert!(
        !package_installed() && !Path::new("/usr/bin/cairn").exists(),
        "cairn is already installed on this machine: the test would replace and remove it"
    );
    let tmp = tempfile::tempdir().expect("temporary directory");
    let deb = build_package(tmp.path());

    // The package's metadata and contents, before installing anything.
    let fields = succeeds(Command::new("dpkg-deb").arg("--field").arg(&deb).args([
        "Package",
        "Version",
        "Depends",
        "Recommends",
        "Section",
        "Description",
    ]));
    assert!(fields.contains("Package: cairn\n"), "{fields}");
    assert!(fields.contains(&format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"))), "{fields}");
    assert!(fields.contains("Depends: libc6"), "no libc dependency from $auto: {fields}");
    assert!(fields.contains("Recommends: ca-certificates\n"), "{fields}");
    assert!(fields.contains("Description: cairn: fast, encrypted, deduplicated backups"), "{fields}");
    let contents = succeeds(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in INSTALLED {
        assert!(contents.contains(&format!(".{path}\n")), "{path} is not in the package:\n{contents}");
    }

    let _purge = Purge;
    succeeds(Command::new("dpkg").arg("--install").arg(&deb));
    assert!(package_installed());
    for path in INSTALLED {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path} not installed: {e}"));
        assert!(meta.len() > 0, "{path} is empty");
    }

    // The installed binary, not the one in the target directory.
    let version = succeeds(Command::new("/usr/bin/cairn").arg("--version"));
    assert!(version.starts_with(&format!("cairn {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains("\nbackends: local, s3"), "{version}");

    let page = succeeds(Command::new("man").args(["-w", "cairn"]));
    assert_eq!(page.trim(), "/usr/share/man/man1/cairn.1.gz");
    let page = succeeds(Command::new("man").args(["-w", "cairn-backup"]));
    assert_eq!(page.trim(), "/usr/share/man/man1/cairn-backup.1.gz");

    // The bash completion loads and registers a function for cairn.
    let registered = succeeds(
        Command::new("bash").args(["-c", "source /usr/share/bash-completion/completions/cairn && complete -p cairn"]),
    );
    assert!(registered.contains("_cairn"), "{registered}");
    let service =
        std::fs::read_to_string("/usr/share/doc/cairn/examples/systemd/cairn-nightly.service").expect("service");
    assert!(service.contains("\nExecStart=/usr/bin/cairn run nightly --config /etc/cairn/cairn.toml\n"), "{service}");

    // A backup and its restore with the installed binary.
    let home = tmp.path().join("home");
    let data = home.join("data");
    std::fs::create_dir_all(&data).expect("data directory");
    std::fs::write(data.join("hello.txt"), "installed from a .deb\n").expect("a file");
    std::fs::write(home.join("password"), "package-test\n").expect("password file");
    let installed = |args: &[&str]| {
        let mut c = Command::new("/usr/bin/cairn");
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("CAIRN_CACHE_DIR", home.join("cache"))
            .env("CAIRN_PASSWORD_FILE", home.join("password"))
            .env("CAIRN_REPOSITORY", home.join("repo"))
            .args(args);
        c
    };
    succeeds(&mut installed(&["init", "--kdf-memory", "8MiB", "--kdf-iterations", "1"]));
    succeeds(&mut installed(&["backup", data.to_str().expect("a UTF-8 path")]));
    let restored = home.join("restored");
    succeeds(&mut installed(&["restore", "latest", "--target", restored.to_str().expect("a UTF-8 path")]));
    assert_eq!(std::fs::read_to_string(restored.join("hello.txt")).expect("restored file"), "installed from a .deb\n");

    // Removal leaves none of the package's files; purge forgets it.
    succeeds(Command::new("dpkg").args(["--remove", "cairn"]));
    for path in INSTALLED {
        assert!(!Path::new(path).exists(), "{path} is still there after dpkg --remove");
    }
    assert!(!Path::new("/usr/share/doc/cairn").exists(), "/usr/share/doc/cairn is still there");
    succeeds(Command::new("dpkg").args(["--purge", "cairn"]));
    let status = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "cairn"]));
    assert!(
        !status.status.success() || String::from_utf8_lossy(&status.stdout).contains("not-installed"),
        "dpkg still knows cairn: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    let not_found = output(Command::new("man").args(["-w", "cairn"]));
    assert!(!not_found.status.success(), "man still finds cairn after the purge");
}
