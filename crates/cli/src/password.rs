//! Where passwords come from.
//!
//! To open a repository: `--password-file` / `CAIRN_PASSWORD_FILE`, then
//! `--password-command` / `CAIRN_PASSWORD_COMMAND`, then `CAIRN_PASSWORD`,
//! then a prompt without echo when a terminal is attached.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::args::{GlobalArgs, NewPasswordArgs};

pub use cairn::secret::Password;

pub fn from_file(path: &Path) -> Result<Password> {
    Ok(cairn::secret::from_file(path)?)
}

pub fn from_command(cmd: &str) -> Result<Password> {
    Ok(cairn::secret::from_command(cmd)?)
}

fn prompt(question: &str) -> Result<Password> {
    let pw = rpassword::prompt_password(question).context("cannot read the password from the terminal")?;
    Ok(Zeroizing::new(pw.into_bytes()))
}

fn prompt_twice(what: &str) -> Result<Password> {
    let first = prompt(&format!("enter {what}: "))?;
    if first.is_empty() {
        bail!("an empty password is not allowed");
    }
    let second = prompt(&format!("enter {what} again: "))?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

fn configured(global: &GlobalArgs) -> Result<Option<Password>> {
    if let Some(f) = &global.password_file {
        return from_file(f).map(Some);
    }
    if let Some(c) = &global.password_command {
        return from_command(c).map(Some);
    }
    if let Ok(pw) = std::env::var("CAIRN_PASSWORD") {
        if pw.is_empty() {
            bail!("CAIRN_PASSWORD is set but empty");
        }
        return Ok(Some(Zeroizing::new(pw.into_bytes())));
    }
    Ok(None)
}

/// Whether a password source is configured (file, command or variable).
pub fn is_configured(global: &GlobalArgs) -> bool {
    global.password_file.is_some() || global.password_command.is_some() || std::env::var_os("CAIRN_PASSWORD").is_some()
}

const NO_PASSWORD: &str = "no password given: use --password-file, CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD (or run on a terminal to be asked)";

fn configured_or_asked(global: &GlobalArgs, ask: impl FnOnce() -> Result<Password>) -> Result<Password> {
    if let Some(pw) = configured(global)? {
        return Ok(pw);
    }
    if std::io::stdin().is_terminal() {
        return ask();
    }
    bail!(NO_PASSWORD)
}

/// The password that opens the repository.
pub fn repository_password(global: &GlobalArgs) -> Result<Password> {
    configured_or_asked(global, || prompt("enter password for repository: "))
}

/// The password of a repository being created (asked twice on a terminal).
pub fn new_repository_password(global: &GlobalArgs) -> Result<Password> {
    configured_or_asked(global, || prompt_twice("password for the new repository"))
}

/// The password of a key being added: `--generate-password`, then
/// `--new-password-file`, then
/// `CAIRN_NEW_PASSWORD`, then a prompt (twice).
pub fn new_key_password(args: &NewPasswordArgs) -> Result<Password> {
    if let Some(f) = &args.generate_password {
        return Ok(cairn::secret::generate_into(f)?);
    }
    if let Some(f) = &args.new_password_file {
        return from_file(f);
    }
    if let Ok(pw) = std::env::var("CAIRN_NEW_PASSWORD") {
        if pw.is_empty() {
            bail!("CAIRN_NEW_PASSWORD is set but empty");
        }
        return Ok(Zeroizing::new(pw.into_bytes()));
    }
    if std::io::stdin().is_terminal() {
        return prompt_twice("the new password");
    }
    bail!("no new password given: use --new-password-file or CAIRN_NEW_PASSWORD (or run on a terminal to be asked)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_and_commands() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "secret\r\n# comment\n").unwrap();
        assert_eq!(&from_file(&f).unwrap()[..], b"secret");
        std::fs::write(&f, "\n").unwrap();
        assert!(from_file(&f).is_err());
        assert_eq!(&from_command("printf 'hunter2\\n'").unwrap()[..], b"hunter2");
        assert!(from_command("exit 3").is_err());
    }
}
