//! Notifications: what a run tells the people who look after it, in each
//! service's own format.
//!
//! | `type` | what is sent |
//! | --- | --- |
//! | `discord` | an execute-webhook body: `content` (≤ 2,000 characters) and one embed with a colour and a field per step that needs attention |
//! | `slack` | an incoming-webhook body: `text` and one `mrkdwn` section block |
//! | `ntfy` | the message as the body, with `Title`, `Priority` (5 for a failure) and `Tags` headers |
//! | `healthchecks` | `/start` when the run starts and `/<exit code>` when it ends (both with the same `rid`), the end with the log's tail as body: a job that never ran is noticed by the service |
//! | `webhook` | the whole run as JSON: event, job, host, exit code, steps |
//! | `command` | a command run with `CAIRN_EVENT`, `CAIRN_JOB`, `CAIRN_HOST`, `CAIRN_EXIT_CODE` and `CAIRN_MESSAGE`, and the run's JSON on its standard input |
//!
//! Events: `failure` (a step failed), `warning` (a step has warnings),
//! `recovered` (the first good run after a run that was not), and `success`
//! (every good run; off by default). A notification that cannot be
//! delivered is recorded in the run and never changes its exit code.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::run::{RunReport, StepStatus};

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Discord's limit on `content`.
const DISCORD_CONTENT: usize = 2000;
/// Discord's limit on an embed's description.
const DISCORD_DESCRIPTION: usize = 4096;
/// What Healthchecks keeps of a ping's body.
const HEALTHCHECKS_BODY: usize = 100_000;

/// What happened, as far as notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// A step failed.
    Failure,
    /// A step finished with warnings.
    Warning,
    /// The first good run after one that was not.
    Recovered,
    /// A good run.
    Success,
    /// `cairn notify test`.
    Test,
    /// The "still alive" summary, on its calendar.
    Heartbeat,
}

impl Event {
    /// The event's name.
    pub fn name(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Warning => "warning",
            Event::Recovered => "recovered",
            Event::Success => "success",
            Event::Test => "test",
            Event::Heartbeat => "heartbeat",
        }
    }

    /// The event of `run`, given whether the run before it was good.
    pub fn of(run: &RunReport, previous_good: Option<bool>) -> Event {
        match run.status() {
            StepStatus::Failed => Event::Failure,
            StepStatus::Warning => Event::Warning,
            _ if previous_good == Some(false) => Event::Recovered,
            _ => Event::Success,
        }
    }
}

/// The kinds of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    /// A Discord webhook.
    Discord,
    /// A Slack incoming webhook.
    Slack,
    /// An ntfy topic URL.
    Ntfy,
    /// A Healthchecks check URL (`https://hc-ping.com/UUID`).
    Healthchecks,
    /// Any URL that takes the run as JSON.
    Webhook,
    /// A local command.
    Command,
}

/// One place notifications go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyTarget {
    /// What kind of service.
    #[serde(rename = "type")]
    pub kind: TargetType,
    /// The URL (webhook URLs carry their token: prefer `url-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file whose first line is the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// A file whose first line is an ntfy access token (`tk_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// For `command`: the program and its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The events sent (default `failure`, `warning`, `recovered`,
    /// `heartbeat`); Healthchecks is pinged on every run whatever this
    /// says, and gets no heartbeat (its pings are one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<Event>>,
}

impl NotifyTarget {
    /// What is wrong with this target, if anything.
    pub fn problem(&self) -> Option<String> {
        let has_url = self.url.is_some() || self.url_file.is_some();
        match self.kind {
            TargetType::Command if self.command.as_ref().is_none_or(|c| c.is_empty()) => {
                Some("a `command` target needs `command = [\"program\", ...]`".into())
            }
            TargetType::Command if has_url => Some("a `command` target takes no `url`".into()),
            TargetType::Command => None,
            _ if self.url.is_some() && self.url_file.is_some() => Some("give `url` or `url-file`, not both".into()),
            _ if !has_url => Some("give `url` or `url-file`".into()),
            _ if self.command.is_some() => Some("only a `command` target takes `command`".into()),
            _ if self.token_file.is_some() && self.kind != TargetType::Ntfy => {
                Some("only an `ntfy` target takes `token-file`".into())
            }
            _ => match &self.url {
                Some(url) if !url.starts_with("http://") && !url.starts_with("https://") => {
                    Some(format!("url {:?} is not an http(s) URL", redact_url(url)))
                }
                _ => None,
            },
        }
    }

    /// Whether this target wants `event` (Healthchecks has its own rules).
    pub fn wants(&self, event: Event) -> bool {
        event == Event::Test
            || match &self.on {
                Some(events) => events.contains(&event),
                None => matches!(event, Event::Failure | Event::Warning | Event::Recovered | Event::Heartbeat),
            }
    }

    /// A name for reports: the type and the URL's host (never its token).
    pub fn label(&self) -> String {
        let kind = serde_json::to_value(self.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        match (&self.url, &self.command) {
            (Some(url), _) => format!("{kind} {}", redact_url(url)),
            (None, Some(command)) => format!("{kind} {}", command.first().cloned().unwrap_or_default()),
            _ => format!("{kind} (url from file)"),
        }
    }

    /// The copy printed by `config check`: the URL's path and query (where
    /// tokens live) hidden.
    pub fn redacted(&self) -> NotifyTarget {
        NotifyTarget { url: self.url.as_deref().map(redact_url), ..self.clone() }
    }

    fn url(&self) -> Result<String, String> {
        match (&self.url, &self.url_file) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(file)) => crate::secret::from_file(file)
                .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
                .map_err(|e| e.to_string()),
            (None, None) => Err("no url".into()),
        }
    }
}

/// `https://host/REDACTED`: a URL with everything after its host hidden.
fn redact_url(url: &str) -> String {
    let rest = url.split_once("://");
    match rest {
        Some((scheme, rest)) => {
            let host = rest.split('/').next().unwrap_or_default();
            if rest.len() > host.len() { format!("{scheme}://{host}/REDACTED") } else { url.to_owned() }
        }
        None => "REDACTED".into(),
    }
}

/// What one delivery did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The target (type and host).
    pub target: String,
    /// The event sent (`start` for a Healthchecks start ping).
    pub event: String,
    /// Delivered.
    pub ok: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Sends the start of a run where a target wants it (Healthchecks).
pub async fn started(targets: &[NotifyTarget], rid: &str) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    for target in targets.iter().filter(|t| t.kind == TargetType::Healthchecks) {
        let result = match target.url() {
            Ok(url) => post(&format!("{}/start?rid={rid}", url.trim_end_matches('/')), Vec::new(), &[]).await,
            Err(e) => Err(e),
        };
        deliveries.push(delivery(target, "start", result));
    }
    deliveries
}

/// Sends `event` about `run` to every target that wants it, and the end
/// ping to Healthchecks targets. `log` is the run's log (its tail goes to
/// Healthchecks).
pub async fn finished(
    targets: &[NotifyTarget],
    run: &RunReport,
    event: Event,
    host: &str,
    rid: &str,
    log: &str,
) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    for target in targets {
        let wanted = target.kind == TargetType::Healthchecks || target.wants(event);
        if !wanted {
            continue;
        }
        let result = send(target, run, event, host, rid, log).await;
        deliveries.push(delivery(target, event.name(), result));
    }
    deliveries
}

fn delivery(target: &NotifyTarget, event: &str, result: Result<(), String>) -> Delivery {
    let (ok, error) = match result {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e),
    };
    Delivery { target: target.label(), event: event.to_owned(), ok, error }
}

/// `cairn notify test`: a test message to every target (Healthchecks gets
/// it at `/log`, which changes nothing there).
pub async fn test(targets: &[NotifyTarget], host: &str) -> Vec<Delivery> {
    let mut run = RunReport::new("test");
    run.steps.push(super::run::StepReport::new(
        super::run::Step::Sources,
        "cairn notify test",
        StepStatus::Ok,
        "if you can read this, notifications reach you",
    ));
    finished(targets, &run, Event::Test, host, "00000000-0000-4000-8000-000000000000", "cairn notify test\n").await
}

/// The one-line headline: `cairn: job nightly failed on db1`.
pub fn headline(run: &RunReport, event: Event, host: &str) -> String {
    let what = match event {
        Event::Failure => "failed",
        Event::Warning => "finished with warnings",
        Event::Recovered => "recovered",
        Event::Success => "succeeded",
        Event::Test => "sent a test notification",
        Event::Heartbeat => "is alive",
    };
    format!("cairn: job {} {what} on {host}", run.job)
}

/// The steps that need attention, one line each (all steps if none do).
fn step_lines(run: &RunReport) -> Vec<String> {
    let attention: Vec<_> =
        run.steps.iter().filter(|s| matches!(s.status, StepStatus::Failed | StepStatus::Warning)).collect();
    let steps = if attention.is_empty() { run.steps.iter().collect() } else { attention };
    steps
        .into_iter()
        .map(|s| {
            let status = serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(str::to_owned));
            format!("{} {} {}: {}", status.unwrap_or_default(), s.step.name(), s.subject, s.message)
        })
        .collect()
}

/// At most `limit` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(limit.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What a notification says, whatever the service.
struct Message {
    event: Event,
    title: String,
    lines: Vec<String>,
    time: jiff::Timestamp,
    /// The body for JSON receivers (webhook, command).
    json: serde_json::Value,
}

/// The body (and headers) each service takes; pure, so it is tested
/// against the services' documented formats.
pub fn payload(kind: TargetType, run: &RunReport, event: Event, host: &str) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let title = headline(run, event, host);
    let json = serde_json::json!({
        "event": event.name(),
        "job": run.job,
        "host": host,
        "exit_code": run.exit_code(),
        "summary": title,
        "run": run,
    });
    let message = Message { event, title, lines: step_lines(run), time: run.finished, json };
    render(kind, &message)
}

/// A heartbeat's body (and headers) for each service (pure).
pub fn heartbeat_payload(kind: TargetType, heartbeat: &Heartbeat) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let message = Message {
        event: Event::Heartbeat,
        title: heartbeat.headline(),
        lines: heartbeat.lines(),
        time: heartbeat.status.generated,
        json: serde_json::json!({
            "event": Event::Heartbeat.name(),
            "job": heartbeat.job,
            "host": heartbeat.host,
            "summary": heartbeat.headline(),
            "heartbeat": heartbeat,
        }),
    };
    render(kind, &message)
}

fn render(kind: TargetType, message: &Message) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let (title, lines, event) = (&message.title, &message.lines, message.event);
    let json =
        |value: serde_json::Value| (value.to_string().into_bytes(), vec![("Content-Type", "application/json".into())]);
    match kind {
        TargetType::Discord => {
            let colour = match event {
                Event::Failure => 0xd93025,
                Event::Warning => 0xf9ab00,
                Event::Heartbeat => 0x1a73e8,
                _ => 0x1e8e3e,
            };
            let description = clip(&lines.join("\n"), DISCORD_DESCRIPTION);
            json(serde_json::json!({
                "content": clip(title, DISCORD_CONTENT),
                "embeds": [{
                    "title": clip(title, 256),
                    "description": description,
                    "color": colour,
                    "timestamp": message.time.to_string(),
                }],
            }))
        }
        TargetType::Slack => {
            let text = format!("*{title}*\n{}", lines.join("\n"));
            json(serde_json::json!({
                "text": title,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3000)}}],
            }))
        }
        TargetType::Ntfy => {
            let (priority, tags) = match event {
                Event::Failure => ("5", "rotating_light"),
                Event::Warning => ("4", "warning"),
                Event::Heartbeat => ("2", "heartbeat"),
                _ => ("3", "white_check_mark"),
            };
            (
                lines.join("\n").into_bytes(),
                vec![("Title", title.clone()), ("Priority", priority.into()), ("Tags", tags.into())],
            )
        }
        TargetType::Healthchecks => (Vec::new(), Vec::new()),
        TargetType::Webhook | TargetType::Command => json(message.json.clone()),
    }
}

/// The "still alive" summary of a job since the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The job.
    pub job: String,
    /// This host.
    pub host: String,
    /// When the last heartbeat went (or the first recorded run).
    pub since: Option<jiff::Timestamp>,
    /// Runs since then.
    pub runs: usize,
    /// Of which failed.
    pub failed: usize,
    /// Of which had warnings.
    pub warnings: usize,
    /// The job's status and its repositories' sizes, growth and cost.
    pub status: super::StatusReport,
}

impl Heartbeat {
    /// The one-line headline.
    pub fn headline(&self) -> String {
        let trouble = self.status.jobs.iter().map(|j| j.problems.len()).sum::<usize>();
        let verdict = if trouble == 0 { "is alive" } else { "is alive, with problems" };
        format!("cairn: job {} {verdict} on {}", self.job, self.host)
    }

    /// The summary, one fact a line: the runs since the last heartbeat,
    /// then the status as `cairn status` prints it.
    pub fn lines(&self) -> Vec<String> {
        let now = self.status.generated;
        let since = self
            .since
            .map(|t| format!(" in the last {}", super::human_age(now.duration_since(t).as_secs())))
            .unwrap_or_default();
        let mut lines = vec![format!(
            "{} run(s){since}: {} good, {} with warnings, {} failed",
            self.runs,
            self.runs - self.failed - self.warnings,
            self.warnings,
            self.failed
        )];
        lines.extend(self.status.lines());
        lines
    }
}

/// Sends `heartbeat` to every target that wants it (not Healthchecks).
pub async fn heartbeat(targets: &[NotifyTarget], heartbeat: &Heartbeat) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    for target in targets.iter().filter(|t| t.kind != TargetType::Healthchecks && t.wants(Event::Heartbeat)) {
        let (body, headers) = heartbeat_payload(target.kind, heartbeat);
        let result = match target.kind {
            TargetType::Command => {
                let argv = target.command.clone().unwrap_or_default();
                let env = [
                    ("CAIRN_EVENT", Event::Heartbeat.name().to_owned()),
                    ("CAIRN_JOB", heartbeat.job.clone()),
                    ("CAIRN_HOST", heartbeat.host.clone()),
                    ("CAIRN_EXIT_CODE", "0".to_owned()),
                    ("CAIRN_MESSAGE", heartbeat.headline()),
                ];
                run_command(&argv, &body, &env).await
            }
            _ => send_body(target, body, headers).await,
        };
        deliveries.push(delivery(target, Event::Heartbeat.name(), result));
    }
    deliveries
}

/// Posts `body` to a URL target (ntfy with its token).
async fn send_body(
    target: &NotifyTarget,
    body: Vec<u8>,
    mut headers: Vec<(&'static str, String)>,
) -> Result<(), String> {
    if target.kind == TargetType::Ntfy
        && let Some(file) = &target.token_file
    {
        let token = crate::secret::from_file(file).map_err(|e| e.to_string())?;
        headers.push(("Authorization", format!("Bearer {}", String::from_utf8_lossy(&token).trim())));
    }
    post(&target.url()?, body, &headers).await
}

async fn send(
    target: &NotifyTarget,
    run: &RunReport,
    event: Event,
    host: &str,
    rid: &str,
    log: &str,
) -> Result<(), String> {
    let (body, headers) = payload(target.kind, run, event, host);
    match target.kind {
        TargetType::Command => {
            let argv = target.command.clone().unwrap_or_default();
            let env = [
                ("CAIRN_EVENT", event.name().to_owned()),
                ("CAIRN_JOB", run.job.clone()),
                ("CAIRN_HOST", host.to_owned()),
                ("CAIRN_EXIT_CODE", run.exit_code().to_string()),
                ("CAIRN_MESSAGE", headline(run, event, host)),
            ];
            run_command(&argv, &body, &env).await
        }
        TargetType::Healthchecks => {
            let url = target.url()?;
            let tail = log.len().saturating_sub(HEALTHCHECKS_BODY);
            let start = (tail..log.len()).find(|i| log.is_char_boundary(*i)).unwrap_or(log.len());
            // A test goes to `/log`, which records without changing the check's state.
            let outcome = if event == Event::Test { "log".to_owned() } else { run.exit_code().to_string() };
            let end = format!("{}/{outcome}?rid={rid}", url.trim_end_matches('/'));
            post(&end, log.as_bytes()[start..].to_vec(), &[("Content-Type", "text/plain".into())]).await
        }
        _ => send_body(target, body, headers).await,
    }
}

async fn post(url: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| e.to_string())?;
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(|e| format!("cannot reach {}: {e}", redact_url(url)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(format!("{} answered {status}: {}", redact_url(url), clip(text.trim(), 300)))
}

async fn run_command(argv: &[String], body: &[u8], env: &[(&str, String)]) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let Some((program, args)) = argv.split_first() else { return Err("empty command".into()) };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(body).await;
    }
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .map_err(|_| format!("{program} did not finish within {}s", TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("{program} failed ({status})")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::run::{Step, StepReport};

    fn run(statuses: &[StepStatus]) -> RunReport {
        let mut run = RunReport::new("nightly");
        run.steps = statuses
            .iter()
            .map(|&status| StepReport {
                seconds: 1.0,
                ..StepReport::new(Step::Sources, "postgres dbname=app", status, "x".repeat(3000))
            })
            .collect();
        run
    }

    #[test]
    fn events() {
        let table: &[(&[StepStatus], Option<bool>, Event)] = &[
            (&[StepStatus::Ok], None, Event::Success),
            (&[StepStatus::Ok], Some(true), Event::Success),
            (&[StepStatus::Ok, StepStatus::Skipped], Some(false), Event::Recovered),
            (&[StepStatus::Warning], Some(false), Event::Warning),
            (&[StepStatus::Ok, StepStatus::Failed], Some(true), Event::Failure),
        ];
        for (statuses, previous, event) in table {
            assert_eq!(Event::of(&run(statuses), *previous), *event, "{statuses:?} after {previous:?}");
        }
    }

    /// Discord: `content` ≤ 2,000 characters, one embed, description ≤ 4,096.
    #[test]
    fn discord_bodies_keep_discords_limits() {
        let (body, headers) = payload(TargetType::Discord, &run(&[StepStatus::Failed; 3]), Event::Failure, "db1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["content"].as_str().unwrap().chars().count() <= 2000);
        assert_eq!(v["embeds"].as_array().unwrap().len(), 1);
        assert!(v["embeds"][0]["description"].as_str().unwrap().chars().count() <= 4096);
        assert_eq!(v["embeds"][0]["color"], 0xd93025);
        assert_eq!(headers, vec![("Content-Type", "application/json".to_owned())]);
    }

    #[test]
    fn targets_are_checked_and_redacted() {
        let target = |text: &str| -> NotifyTarget { toml::from_str(text).unwrap() };
        assert_eq!(target("type = \"discord\"\nurl = \"https://discord.com/api/webhooks/1/tok\"").problem(), None);
        assert!(target("type = \"discord\"").problem().unwrap().contains("url"));
        assert!(target("type = \"slack\"\nurl = \"ftp://x\"").problem().unwrap().contains("http"));
        assert!(target("type = \"command\"").problem().unwrap().contains("command"));
        let t = target("type = \"discord\"\nurl = \"https://discord.com/api/webhooks/1/tok\"");
        assert_eq!(t.redacted().url.as_deref(), Some("https://discord.com/REDACTED"));
        assert!(!t.label().contains("tok"));
        assert!(toml::from_str::<NotifyTarget>("type = \"pagerduty\"\nurl = \"https://x\"").is_err());
    }

    #[test]
    fn default_events_leave_out_success() {
        let t: NotifyTarget = toml::from_str("type = \"ntfy\"\nurl = \"https://ntfy.sh/t\"").unwrap();
        assert!(t.wants(Event::Failure) && t.wants(Event::Recovered) && !t.wants(Event::Success));
    }
}
