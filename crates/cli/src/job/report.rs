//! The HTML report (`cairn report --html`): one self-contained page with
//! plots of each job's recent runs and the status tables it is given.
//!
//! The page needs no network: its CSS is inline, its plots are SVG drawn
//! here, and a Content-Security-Policy forbids every load, so a mail client
//! or an air-gapped host shows it as a browser does. Every string from the
//! state or the config goes through [`escape`] on its way in. Times are UTC,
//! so the page is the same wherever it is rendered.
//!
//! Each plot is an `<svg class="plot" data-points="N">` (N: the runs it has
//! data for) whose marks (points, bars) have the class `mark`. A small
//! inline script measures them once the page is laid out and writes the
//! verdict into `body[data-check]`, which the browser test reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use super::run::{RunReport, Step, StepStatus};
use super::state::JobState;

/// How a status row stands, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing to look at.
    Ok,
    /// Something to look at soon.
    Warning,
    /// Something to fix now.
    Failed,
}

/// A table of the page's status section (built by `cairn status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusTable {
    /// The heading above it.
    pub title: String,
    /// The column headings.
    pub headers: Vec<String>,
    /// The rows.
    pub rows: Vec<StatusRow>,
}

/// One row of a [`StatusTable`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusRow {
    /// Its cells, as many as the table has headers.
    pub cells: Vec<String>,
    /// How it stands.
    pub level: Level,
}

/// Runs shown in each job's table of last runs.
const RUNS_SHOWN: usize = 10;

/// The page: `generated` is when (shown at the top), `jobs` each job's
/// state by name, `tables` the status tables, shown first.
pub fn render_html(generated: Timestamp, jobs: &BTreeMap<String, JobState>, tables: &[StatusTable]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; \
         script-src 'unsafe-inline'\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>cairn report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>cairn report</h1>\n\
         <p class=\"generated\">Generated {} (times in UTC) by cairn {}.</p>\n",
        utc(generated, "%Y-%m-%d %H:%M:%S"),
        env!("CARGO_PKG_VERSION")
    );
    for table in tables {
        status_table(&mut out, table);
    }
    if jobs.is_empty() {
        out.push_str("<p class=\"no-data\">No jobs in the config.</p>\n");
    }
    for (name, state) in jobs {
        job_section(&mut out, name, state);
    }
    let _ = write!(out, "<script>{CHECK}</script>\n</body>\n</html>\n");
    out
}

/// `text` safe in HTML text and in quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn utc(t: Timestamp, format: &str) -> String {
    t.strftime(format).to_string()
}

fn level_class(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Failed => "failed",
    }
}

fn status_table(out: &mut String, table: &StatusTable) {
    let title = escape(&table.title);
    let _ = writeln!(out, "<section class=\"status\">\n<h2>{title}</h2>\n<table class=\"status\">\n<thead><tr>");
    for header in &table.headers {
        let _ = write!(out, "<th>{}</th>", escape(header));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        let _ = write!(out, "<tr class=\"{}\">", level_class(row.level));
        for cell in &row.cells {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn job_section(out: &mut String, name: &str, state: &JobState) {
    let _ = writeln!(out, "<section class=\"job\">\n<h2>Job {}</h2>", escape(name));
    // Dry runs are not recorded today; should one be, it changed nothing.
    let runs: Vec<&RunReport> = state.runs.iter().filter(|r| !r.dry_run).collect();
    if runs.is_empty() {
        out.push_str("<p class=\"no-data\">No runs yet.</p>\n</section>\n");
        return;
    }
    let plots = plots(&runs);
    // One time axis for all of a job's plots, so they line up.
    let times = runs.iter().map(|r| seconds(r.finished));
    let (first, last) = times.fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    out.push_str("<div class=\"plots\">\n");
    for plot in &plots {
        plot.render(out, (first, last));
    }
    out.push_str("</div>\n");
    runs_table(out, &runs);
    out.push_str("</section>\n");
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The last runs, newest first.
fn runs_table(out: &mut String, runs: &[&RunReport]) {
    out.push_str(
        "<h3>Last runs</h3>\n<table class=\"runs\">\n<thead><tr><th>Started</th><th>Duration</th>\
         <th>Exit code</th><th>Worst step</th></tr></thead>\n<tbody>\n",
    );
    for run in runs.iter().rev().take(RUNS_SHOWN) {
        let level = match run.status() {
            StepStatus::Failed => Level::Failed,
            StepStatus::Warning => Level::Warning,
            StepStatus::Ok | StepStatus::Skipped => Level::Ok,
        };
        let worst = run
            .steps
            .iter()
            .filter(|s| s.status == run.status())
            .map(|s| format!("{} {}: {}", s.step.name(), s.subject, s.message))
            .next()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            level_class(level),
            utc(run.started, "%Y-%m-%d %H:%M:%S"),
            format_seconds(run.finished.duration_since(run.started).as_secs_f64()),
            run.exit_code(),
            escape(&worst)
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// What a plot's values are.
#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Seconds,
}

/// One named line (or set of bars) of a plot: (time in seconds, value).
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

struct Plot {
    id: String,
    title: &'static str,
    unit: Unit,
    bars: bool,
    series: Vec<Series>,
}

/// A job's four plots.
fn plots(runs: &[&RunReport]) -> Vec<Plot> {
    let mut sizes: BTreeMap<(String, bool), Vec<(f64, f64)>> = BTreeMap::new();
    for run in runs {
        for size in &run.sizes {
            let t = seconds(run.finished);
            sizes.entry((size.repository.clone(), false)).or_default().push((t, size.stored_bytes as f64));
            sizes.entry((size.repository.clone(), true)).or_default().push((t, size.logical_bytes as f64));
        }
    }
    let sizes = sizes
        .into_iter()
        .map(|((repository, logical), points)| Series {
            name: format!("{repository} {}", if logical { "logical" } else { "stored" }),
            points,
            dashed: logical,
        })
        .collect();
    let added = runs
        .iter()
        .filter_map(|run| {
            let added: Vec<u64> =
                run.steps.iter().filter(|s| s.step == Step::Sources).filter_map(|s| s.bytes_added).collect();
            (!added.is_empty()).then(|| (seconds(run.finished), added.iter().sum::<u64>() as f64))
        })
        .collect();
    let durations =
        runs.iter().map(|r| (seconds(r.finished), r.finished.duration_since(r.started).as_secs_f64())).collect();
    let mut drills: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for run in runs {
        for step in run.steps.iter().filter(|s| s.step == Step::Drill) {
            if let Some(restore) = step.restore_seconds {
                drills.entry(step.subject.clone()).or_default().push((seconds(run.finished), restore));
            }
        }
    }
    let one = |name: &str, points| vec![Series { name: name.to_owned(), points, dashed: false }];
    vec![
        Plot { id: "size".into(), title: "Repository size", unit: Unit::Bytes, bars: false, series: sizes },
        Plot {
            id: "added".into(),
            title: "Bytes added per run",
            unit: Unit::Bytes,
            bars: true,
            series: one("added", added),
        },
        Plot {
            id: "duration".into(),
            title: "Run duration",
            unit: Unit::Seconds,
            bars: false,
            series: one("duration", durations),
        },
        Plot {
            id: "drill".into(),
            title: "Drill restore time",
            unit: Unit::Seconds,
            bars: false,
            series: drills.into_iter().map(|(name, points)| Series { name, points, dashed: false }).collect(),
        },
    ]
}

// The plot's geometry, in SVG user units.
const WIDTH: f64 = 460.0;
const HEIGHT: f64 = 230.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

impl Plot {
    /// The runs with data: distinct times over all series.
    fn data_points(&self) -> usize {
        let mut times: Vec<u64> = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0.to_bits())).collect();
        times.sort_unstable();
        times.dedup();
        times.len()
    }

    fn render(&self, out: &mut String, (first, last): (f64, f64)) {
        let n = self.data_points();
        let _ = write!(out, "<figure class=\"plot-box\">\n<figcaption>{}</figcaption>\n", self.title);
        if n == 0 {
            out.push_str("<p class=\"no-data\">no data yet</p>\n</figure>\n");
            return;
        }
        let _ = writeln!(
            out,
            "<svg class=\"plot\" data-plot=\"{}\" data-points=\"{n}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
             role=\"img\" aria-label=\"{}\">",
            self.id, self.title
        );
        // One run: a span of an hour around it, so it sits in the middle.
        let (first, last) = if last - first < 1.0 { (first - 1800.0, last + 1800.0) } else { (first, last) };
        let max = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
        let y_axis = value_ticks(max, self.unit);
        let top = y_axis.last().map_or(1.0, |t| t.0).max(f64::MIN_POSITIVE);
        let plot_width = WIDTH - LEFT - RIGHT;
        let plot_height = HEIGHT - TOP - BOTTOM;
        // Bars need room on both sides of the first and last run.
        let pad = if self.bars { plot_width * 0.04 } else { 0.0 };
        let x = |t: f64| LEFT + pad + (t - first) / (last - first) * (plot_width - 2.0 * pad);
        let y = |v: f64| TOP + plot_height - v / top * plot_height;
        for (value, label) in &y_axis {
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\"/>\
                 <text class=\"tick\" x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{label}</text>",
                WIDTH - RIGHT,
                y(*value),
                LEFT - 6.0,
                y(*value) + 4.0
            );
        }
        for (t, label) in time_ticks(first, last) {
            // A label at an edge would be cut off: it ends (or starts) there.
            let anchor = match x(t) {
                at if at > WIDTH - RIGHT - 36.0 => "end",
                at if at < LEFT + 36.0 => "start",
                _ => "middle",
            };
            let _ = writeln!(
                out,
                "<line class=\"axis\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\"/>\
                 <text class=\"tick\" x=\"{0:.1}\" y=\"{3:.1}\" text-anchor=\"{anchor}\">{label}</text>",
                x(t),
                TOP + plot_height,
                TOP + plot_height + 4.0,
                TOP + plot_height + 16.0
            );
        }
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\"/>",
            WIDTH - RIGHT,
            TOP + plot_height
        );
        let bar_width = self.bar_width(&x);
        for (i, series) in self.series.iter().enumerate() {
            let colour = i % 6;
            if !self.bars && series.points.len() > 1 {
                let path: Vec<String> =
                    series.points.iter().map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v))).collect();
                let dash = if series.dashed { " dashed" } else { "" };
                let _ = writeln!(out, "<polyline class=\"line c{colour}{dash}\" points=\"{}\"/>", path.join(" "));
            }
            for &(t, v) in &series.points {
                let tip = format!("{}: {} at {}", series.name, format_value(v, self.unit), time_label(t, 0.0));
                if self.bars {
                    let _ = writeln!(
                        out,
                        "<rect class=\"mark bar c{colour}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar_width:.1}\" \
                         height=\"{:.1}\"><title>{}</title></rect>",
                        x(t) - bar_width / 2.0,
                        y(v),
                        y(0.0) - y(v),
                        escape(&tip)
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "<circle class=\"mark c{colour}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{}</title></circle>",
                        x(t),
                        y(v),
                        escape(&tip)
                    );
                }
            }
        }
        if self.series.len() > 1 || self.series.iter().any(|s| s.dashed) {
            for (i, series) in self.series.iter().enumerate() {
                let dash = if series.dashed { " dashed" } else { "" };
                let (lx, ly) = (LEFT + 4.0 + (i as f64 % 3.0) * 130.0, 8.0 + (i / 3) as f64 * 11.0);
                let _ = writeln!(
                    out,
                    "<line class=\"line c{}{dash}\" x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\"/>\
                     <text class=\"legend\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    i % 6,
                    lx + 14.0,
                    lx + 18.0,
                    ly + 3.5,
                    escape(&series.name)
                );
            }
        }
        out.push_str("</svg>\n</figure>\n");
    }

    /// Wide enough to see, narrow enough not to touch a neighbour.
    fn bar_width(&self, x: &dyn Fn(f64) -> f64) -> f64 {
        let mut xs: Vec<f64> = self.series.iter().flat_map(|s| s.points.iter().map(|p| x(p.0))).collect();
        xs.sort_by(f64::total_cmp);
        let closest = xs.windows(2).map(|w| w[1] - w[0]).filter(|gap| *gap > 0.0).fold(f64::MAX, f64::min);
        (closest * 0.7).clamp(2.0, 24.0)
    }
}

/// Ticks from 0 to a round value at or above `max`, labelled in the unit
/// that suits `max`.
fn value_ticks(max: f64, unit: Unit) -> Vec<(f64, String)> {
    let (scale, name) = match unit {
        Unit::Bytes => byte_unit(max),
        Unit::Seconds if max >= 7200.0 => (3600.0, "h"),
        Unit::Seconds if max >= 120.0 => (60.0, "min"),
        Unit::Seconds => (1.0, "s"),
    };
    // Nothing but zeros still gets an axis up to one unit.
    let scaled = if max > 0.0 { max / scale } else { 1.0 };
    let raw = scaled / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step =
        [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(magnitude * 10.0);
    if scale == 1.0 && matches!(unit, Unit::Bytes) {
        // No fractions of a byte.
        step = step.max(1.0);
    }
    let count = (scaled / step - 1e-9).ceil().max(1.0) as usize;
    // Every label in the axis's unit: 0.5 MiB, 1 MiB, not 512 KiB, 1 MiB.
    (0..=count).map(|i| (i as f64 * step * scale, format!("{} {name}", trim(i as f64 * step)))).collect()
}

/// The binary unit for `bytes`: (its size, its name).
fn byte_unit(bytes: f64) -> (f64, &'static str) {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut size = 1.0;
    for (i, name) in UNITS.iter().enumerate() {
        if bytes < size * 1024.0 || i == UNITS.len() - 1 {
            return (size, name);
        }
        size *= 1024.0;
    }
    (1.0, "B")
}

/// A value with its unit, at most two decimals, trailing zeros dropped.
fn format_value(value: f64, unit: Unit) -> String {
    let (scaled, name) = match unit {
        Unit::Bytes => {
            let (size, name) = byte_unit(value);
            (value / size, name)
        }
        Unit::Seconds => return format_seconds(value),
    };
    format!("{} {name}", trim(scaled))
}

fn format_seconds(seconds: f64) -> String {
    if seconds >= 7200.0 {
        format!("{} h", trim(seconds / 3600.0))
    } else if seconds >= 120.0 {
        format!("{} min", trim(seconds / 60.0))
    } else {
        format!("{} s", trim(seconds))
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Ticks on the time axis at round times between `first` and `last`.
fn time_ticks(first: f64, last: f64) -> Vec<(f64, String)> {
    const STEPS: [f64; 17] = [
        1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0, 86400.0, 172800.0,
        604800.0, 2592000.0, 31536000.0,
    ];
    let span = last - first;
    let step = STEPS.iter().copied().find(|s| span / s <= 5.0).unwrap_or(span / 4.0);
    let mut ticks = Vec::new();
    let mut t = (first / step).ceil() * step;
    while t <= last + 1e-6 && ticks.len() < 8 {
        ticks.push((t, time_label(t, step)));
        t += step;
    }
    ticks
}

/// A time for a tick `step` seconds from the next: the date when steps are
/// days, the time of day when they are hours, with seconds when seconds.
fn time_label(t: f64, step: f64) -> String {
    let Ok(time) = Timestamp::from_millisecond((t * 1000.0).round() as i64) else { return String::new() };
    let format = match step {
        s if s >= 86400.0 => "%Y-%m-%d",
        s if s >= 60.0 => "%m-%d %H:%M",
        _ => "%m-%d %H:%M:%S",
    };
    utc(time, format)
}

/// The page's look: light, or dark when the reader prefers it.
const STYLE: &str = "
:root { color-scheme: light dark; --fg: #1d2330; --muted: #5d6675; --bg: #fbfbfd; --panel: #fff;
  --line: #d9dde5; --ok: #2e7d32; --warning: #b26a00; --failed: #c62828;
  --c0: #1f77b4; --c1: #e4572e; --c2: #2ca02c; --c3: #9467bd; --c4: #8c564b; --c5: #17becf; }
@media (prefers-color-scheme: dark) { :root { --fg: #e4e7ee; --muted: #9aa3b2; --bg: #14171c; --panel: #1c2028;
  --line: #343a46; --ok: #66bb6a; --warning: #ffb74d; --failed: #ef5350;
  --c0: #5fa8e8; --c1: #ff8a65; --c2: #81c784; --c3: #b39ddb; --c4: #bcaaa4; --c5: #4dd0e1; } }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 2em auto;
  max-width: 1000px; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid var(--line); }
.generated, .no-data { color: var(--muted); }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1em; }
figure { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 0.5em; }
figcaption { font-weight: 600; }
svg.plot { width: 100%; height: auto; display: block; }
svg text { fill: var(--muted); font-size: 10px; } svg .legend { fill: var(--fg); }
.grid { stroke: var(--line); stroke-width: 0.5; } .axis { stroke: var(--muted); stroke-width: 1; }
.line { fill: none; stroke-width: 1.8; } .dashed { stroke-dasharray: 4 3; }
.c0 { stroke: var(--c0); } .c1 { stroke: var(--c1); } .c2 { stroke: var(--c2); }
.c3 { stroke: var(--c3); } .c4 { stroke: var(--c4); } .c5 { stroke: var(--c5); }
circle.c0, rect.c0 { fill: var(--c0); } circle.c1, rect.c1 { fill: var(--c1); } circle.c2, rect.c2 { fill: var(--c2); }
circle.c3, rect.c3 { fill: var(--c3); } circle.c4, rect.c4 { fill: var(--c4); } circle.c5, rect.c5 { fill: var(--c5); }
table { border-collapse: collapse; width: 100%; background: var(--panel); }
th, td { text-align: left; padding: 0.3em 0.6em; border-bottom: 1px solid var(--line); vertical-align: top; }
tr.ok td:first-child { border-left: 4px solid var(--ok); }
tr.warning td:first-child { border-left: 4px solid var(--warning); }
tr.failed td:first-child { border-left: 4px solid var(--failed); }
tr.failed { color: var(--failed); }
";

/// Measures the plots once laid out: each must have data and a size, and
/// each of its marks a box; the verdict goes into `body[data-check]`.
const CHECK: &str = "
(function () {
  var problems = [], marks = 0, plots = document.querySelectorAll('svg.plot');
  plots.forEach(function (plot, i) {
    var name = (plot.dataset.plot || 'plot') + ' ' + i, n = Number(plot.dataset.points);
    var box = plot.getBoundingClientRect();
    if (!(n > 0)) problems.push(name + ': data-points is ' + plot.dataset.points);
    if (!(box.width > 0 && box.height > 0)) problems.push(name + ': not rendered');
    var seen = 0;
    plot.querySelectorAll('.mark').forEach(function (mark) {
      var b = mark.getBBox();
      if (b.width > 0 || b.height > 0) seen++;
    });
    if (seen < n) problems.push(name + ': ' + seen + ' marks for ' + n + ' points');
    marks += seen;
  });
  document.body.dataset.check = problems.length ? 'fail: ' + problems.join('; ') :
    'ok ' + plots.length + ' plots, ' + marks + ' marks, ' +
    document.querySelectorAll('.no-data').length + ' empty, ' +
    document.querySelectorAll('table.runs tbody tr').length + ' runs, ' +
    document.querySelectorAll('table.status').length + ' status tables';
})();
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::run::{RepositorySize, StepReport};

    fn run_at(minute: i64, added: u64, stored: u64) -> RunReport {
        let started = Timestamp::from_second(1_700_000_000 + minute * 60).unwrap();
        let mut run = RunReport::new("nightly");
        run.started = started;
        run.finished = started.checked_add(jiff::SignedDuration::from_secs(42)).unwrap();
        run.steps.push(StepReport {
            bytes_added: Some(added),
            ..StepReport::new(Step::Sources, "files /srv", StepStatus::Ok, "snapshot 1234abcd")
        });
        run.sizes.push(RepositorySize {
            repository: "local".into(),
            snapshots: 1,
            logical_bytes: stored * 3,
            raw_bytes: stored * 2,
            stored_bytes: stored,
            from_copy_records: false,
        });
        run
    }

    fn page(runs: Vec<RunReport>) -> String {
        let mut jobs = BTreeMap::new();
        jobs.insert("nightly".to_owned(), JobState { runs, ..Default::default() });
        render_html(Timestamp::UNIX_EPOCH, &jobs, &[])
    }

    /// The `data-points` of the plot named `plot`, if it is drawn.
    fn points(html: &str, plot: &str) -> Option<usize> {
        let at = html.find(&format!("data-plot=\"{plot}\" data-points=\""))?;
        let rest = &html[at..].split_once("data-points=\"")?.1;
        rest.split('"').next()?.parse().ok()
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("<script>alert(1)</script>"), "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(escape("\"&'"), "&quot;&amp;&#39;");
        assert_eq!(escape("plain ünïcödé"), "plain ünïcödé");

        let hostile = "<script>alert(\"&'\")</script>";
        let mut run = run_at(0, 1, 1);
        run.steps[0].status = StepStatus::Failed;
        run.steps[0].message = hostile.into();
        run.steps[0].subject = hostile.into();
        run.sizes[0].repository = hostile.into();
        let mut jobs = BTreeMap::new();
        jobs.insert(hostile.to_owned(), JobState { runs: vec![run], ..Default::default() });
        let table = StatusTable {
            title: hostile.into(),
            headers: vec![hostile.into()],
            rows: vec![StatusRow { cells: vec![hostile.into()], level: Level::Failed }],
        };
        let html = render_html(Timestamp::UNIX_EPOCH, &jobs, &[table]);
        assert_eq!(html.matches("<script>").count(), 1, "only the page's own script: {html}");
        assert!(!html.contains("alert(\""), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;&amp;&#39;&quot;)&lt;/script&gt;"));
        assert!(html.contains("<tr class=\"failed\"><td>&lt;script&gt;"));
    }

    #[test]
    fn no_data_yet() {
        let html = page(Vec::new());
        assert!(html.contains("No runs yet."));
        assert!(!html.contains("class=\"plot\""));

        // Runs without sizes or drills: those two plots say so.
        let mut run = run_at(0, 10, 10);
        run.sizes.clear();
        let html = page(vec![run]);
        assert_eq!(html.matches("no data yet").count(), 2, "{html}");
        assert_eq!(points(&html, "size"), None);
        assert_eq!(points(&html, "drill"), None);
        assert_eq!(points(&html, "duration"), Some(1));
    }

    #[test]
    fn n_runs_are_n_points() {
        let mut runs: Vec<RunReport> = (0..5).map(|i| run_at(i * 1440, 1 << 20, (i as u64 + 1) << 30)).collect();
        runs[3].steps.push(StepReport {
            restore_seconds: Some(12.5),
            ..StepReport::new(Step::Drill, "files /srv", StepStatus::Ok, "restored")
        });
        let html = page(runs);
        for plot in ["size", "added", "duration"] {
            assert_eq!(points(&html, plot), Some(5), "{plot}");
        }
        assert_eq!(points(&html, "drill"), Some(1));
        // Stored and logical lines of one repository: two marks a run.
        assert_eq!(html.matches("<circle class=\"mark").count(), 5 * 2 + 5 + 1);
        assert_eq!(html.matches("<rect class=\"mark bar").count(), 5);
        assert_eq!(html.matches("<table class=\"runs\">").count(), 1);
        assert_eq!(html.matches("<tr class=\"ok\">").count(), 5);
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
    }

    #[test]
    fn ticks_in_human_units() {
        let html = page(vec![run_at(0, 300 << 10, 3 << 20), run_at(60 * 24 * 5, 700 << 10, 5 << 20)]);
        assert!(html.contains(">5 MiB</text>") || html.contains(">6 MiB</text>"), "{html}");
        assert!(html.contains(">15 MiB</text>"), "logical is 3 times stored: {html}");
        assert!(html.contains(">200 KiB</text>"), "{html}");
        assert!(html.contains(">40 s</text>"), "{html}");
        assert!(html.contains(">2023-11-15</text>"), "days apart: dates on the time axis: {html}");

        let labels = |max: f64, unit| value_ticks(max, unit).into_iter().map(|t| t.1).collect::<Vec<_>>();
        assert_eq!(labels(3.5 * (1u64 << 30) as f64, Unit::Bytes), ["0 GiB", "1 GiB", "2 GiB", "3 GiB", "4 GiB"]);
        assert_eq!(labels(700.0, Unit::Bytes), ["0 B", "200 B", "400 B", "600 B", "800 B"]);
        assert_eq!(labels(0.0, Unit::Bytes)[0], "0 B");
        assert_eq!(labels(5400.0, Unit::Seconds), ["0 min", "25 min", "50 min", "75 min", "100 min"]);
        assert_eq!(labels(1.15 * (1 << 20) as f64, Unit::Bytes), ["0 MiB", "0.5 MiB", "1 MiB", "1.5 MiB"]);
        assert_eq!(format_value(1536.0, Unit::Bytes), "1.5 KiB");
    }
}
