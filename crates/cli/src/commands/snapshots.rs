//! `cairn snapshots`

use anyhow::Result;
use indicatif::HumanBytes;

use crate::args::{GlobalArgs, SnapshotsArgs};
use crate::context;

pub async fn run(global: &GlobalArgs, args: SnapshotsArgs) -> Result<()> {
    let repo = context::open(global).await?;
    let mut snapshots = repo.snapshots_matching(&args.filter.filter()).await?;
    if let Some(n) = args.latest {
        snapshots = cairn_repo::latest_per_group(snapshots, cairn_repo::GroupBy::HOST_AND_PATHS, n);
    }
    if global.json {
        let list: Vec<serde_json::Value> = snapshots
            .iter()
            .map(|(id, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["id"] = serde_json::json!(id);
                v["short_id"] = serde_json::json!(id.short());
                v
            })
            .collect();
        return context::print_json(&list);
    }
    let tz = jiff::tz::TimeZone::system();
    let rows: Vec<[String; 6]> = snapshots
        .iter()
        .map(|(id, s)| {
            [
                id.short(),
                s.time.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
                crate::escape::human(&s.hostname).into_owned(),
                crate::escape::human(&s.tags.join(",")).into_owned(),
                s.summary.as_ref().map(|x| HumanBytes(x.total_bytes).to_string()).unwrap_or_default(),
                crate::escape::human(&s.paths.join(" ")).into_owned(),
            ]
        })
        .collect();
    let header = ["ID", "Time", "Host", "Tags", "Size", "Paths"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 5 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    println!("{}", line(header));
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 10));
    for row in &rows {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]));
    }
    println!("{} snapshots", rows.len());
    Ok(())
}
