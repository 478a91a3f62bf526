//! Logs and command-line output. Pods (webhook, agent) log one JSON object per line by default;
//! a person running `inject` reads `warning: …` and `error: …` lines. `--log-format` chooses.

use std::fmt;
use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Logging flags, shared by every subcommand.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log format [default: human for inject, json for webhook and agent].
    #[arg(long, global = true, env = "SECRET_INJECT_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log level or filter directives (e.g. `info`, `secret_inject=debug`); RUST_LOG also works.
    #[arg(
        long,
        global = true,
        env = "SECRET_INJECT_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
}

/// How log records are written to stderr.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Timestamped text lines.
    Plain,
    /// `warning: …` and `error: …` lines for a person at a terminal.
    Human,
}

/// Where a fatal error goes once logging is set up.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print fatal errors as `error: …` (a person reads them), else log them.
    human: bool,
}

impl Output {
    /// Report the error that ends the command.
    pub fn fatal(self, error: &anyhow::Error) {
        if self.human {
            eprintln!("error: {error:#}");
        } else {
            tracing::error!("{error:#}");
        }
    }
}

/// Install the subscriber.
pub fn init(log: &LogArgs, default_format: LogFormat) -> anyhow::Result<Output> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(&log.log_level),
    }
    .with_context(|| format!("--log-level {:?} is not a level or filter", log.log_level))?;
    let terminal = std::io::stderr().is_terminal();
    let format = log.log_format.unwrap_or(default_format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Plain => builder.init(),
        LogFormat::Human => builder.event_format(HumanFormat).init(),
    }
    // A fatal error at a terminal is for a person, unless JSON was asked for explicitly.
    let human = format == LogFormat::Human || (terminal && log.log_format.is_none());
    Ok(Output { human })
}

/// `level: message key=value ...`, the way compilers and kubectl talk to people.
struct HumanFormat;

impl<S, N> FormatEvent<S, N> for HumanFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(writer, "{level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
