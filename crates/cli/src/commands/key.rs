//! `cairn key list|add|remove|passwd`

use anyhow::Result;
use cairn_repo::{FileKind, KeyKind, KeyOptions};

use crate::args::{GlobalArgs, KdfArgs, KeyCommand};
use crate::commands::init::kdf_kib;
use crate::context;
use crate::password;

fn key_options(kdf: &KdfArgs, kind: KeyKind) -> Result<KeyOptions> {
    Ok(KeyOptions {
        kind,
        kdf_memory_kib: kdf_kib(kdf.kdf_memory)?,
        kdf_iterations: kdf.kdf_iterations,
        ..KeyOptions::default()
    })
}

pub async fn run(global: &GlobalArgs, command: KeyCommand) -> Result<()> {
    let repo = context::open(global).await?;
    match command {
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            let damaged = keys.iter().filter(|k| k.problem.is_some()).count();
            let fail_if_damaged = || -> Result<()> {
                if damaged > 0 {
                    anyhow::bail!(
                        "{damaged} key file(s) are damaged: their passwords no longer open the repository \
                         (remove them with `cairn key remove ID` once another key works)"
                    );
                }
                Ok(())
            };
            if global.json {
                context::print_json(&keys)?;
                return fail_if_damaged();
            }
            println!(" {:<10} {:<9} {:<12} {:<20} CREATED", "ID", "KIND", "USER", "HOST");
            for k in &keys {
                let created = k
                    .created
                    .map(|t| t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let kind = k.kind.map(|k| k.to_string()).unwrap_or_else(|| "damaged".into());
                println!(
                    "{}{:<10} {:<9} {:<12} {:<20} {}{}",
                    if k.current { "*" } else { " " },
                    k.id.short(),
                    kind,
                    k.username,
                    k.hostname,
                    created,
                    k.problem.as_deref().map(|p| format!("  ({p})")).unwrap_or_default()
                );
            }
            fail_if_damaged()?;
        }
        KeyCommand::Add(args) => {
            let pw = password::new_key_password(&args.password)?;
            let kind = if args.put_only { KeyKind::PutOnly } else { KeyKind::Full };
            let mut options = key_options(&args.password.kdf, kind)?;
            if let Some(h) = args.host {
                options.hostname = h;
            }
            if let Some(u) = args.user {
                options.username = u;
            }
            let id = repo.add_key(&pw, options).await?;
            report(global, "key_added", &id, &format!("added {kind} key {}", id.short()))?;
        }
        KeyCommand::Remove { id } => {
            let id = repo.find_id(FileKind::Key, &id).await?;
            repo.remove_key(&id).await?;
            report(global, "key_removed", &id, &format!("removed key {}", id.short()))?;
        }
        KeyCommand::Passwd(args) => {
            let pw = password::new_key_password(&args)?;
            let id = repo.change_password(&pw, key_options(&args.kdf, repo.keys().kind())?).await?;
            report(global, "password_changed", &id, &format!("password changed; the key is now {}", id.short()))?;
        }
    }
    Ok(())
}

fn report(global: &GlobalArgs, kind: &str, id: &cairn_repo::Id, text: &str) -> Result<()> {
    if global.json {
        context::print_json(&serde_json::json!({ "message_type": kind, "id": id }))
    } else {
        if !global.quiet {
            println!("{text}");
        }
        Ok(())
    }
}
