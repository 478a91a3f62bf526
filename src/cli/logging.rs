//! Logs and command-line output. Pods (webhook, agent) log one JSON object per line by default;
//! a person running `inject` reads `warning: …` and `error: …` lines. `--log-format` chooses.

use std::fmt;
use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Logging flags, shared by every subcommand.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log format [default: human for inject, json for webhook and agent].
    #[arg(long, global = true, env = "SECRET_INJECT_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log level or filter directives (e.g. `info`, `secret_inject=debug`); RUST_LOG also works.
    /// The AWS SDK's configuration loader logs errors only unless named (`aws_config=debug`).
    #[arg(
        long,
        global = true,
        env = crate::contract::env::LOG_LEVEL,
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
            eprintln!("error: {}", escaped(&format!("{error:#}")));
        } else {
            tracing::error!("{error:#}");
        }
    }
}

/// Check a log level or filter as `--log-level` reads it: a level (off, error, warn, info, debug,
/// trace) or filter directives (`secret_inject=debug,aws_config=warn`). A bare word that is no
/// level is refused: the filter would read it as a module's name and log nothing new.
pub fn check_level(value: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bare = !value.contains(['=', ',', '[']);
    if bare && !LEVELS.contains(&value.trim().to_ascii_lowercase().as_str()) {
        return Err(format!(
            "is not a level ({}) or filter directives such as secret_inject=debug",
            LEVELS.join(", ")
        ));
    }
    tracing_subscriber::EnvFilter::try_new(value)
        .map(drop)
        .map_err(|e| format!("is not a level or filter: {e}"))
}

/// Install the subscriber.
pub fn init(log: &LogArgs, default_format: LogFormat) -> anyhow::Result<Output> {
    use tracing_subscriber::EnvFilter;
    let directives = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => directives,
        _ => log.log_level.clone(),
    };
    let filter = EnvFilter::try_new(quiet_sdk(&directives))
        .with_context(|| format!("--log-level {:?} is not a level or filter", log.log_level))?;
    let terminal = std::io::stderr().is_terminal();
    let format = log.log_format.unwrap_or(default_format);
    tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stderr, terminal))
        .context("cannot install the log subscriber")?;
    // A fatal error at a terminal is for a person, unless JSON was asked for explicitly.
    let human = format == LogFormat::Human || (terminal && log.log_format.is_none());
    Ok(Output { human })
}

/// `directives`, with the AWS SDK's own configuration loader (`aws_config`) limited to errors
/// unless they name it: its credential providers log every failure at warn level with the
/// error's Debug form (`ProviderError(ProviderError { … })`), a second line beside each retry
/// line of ours, which already says the same in words. `aws_config=debug` brings them back.
fn quiet_sdk(directives: &str) -> String {
    if directives.contains("aws_config") {
        directives.to_owned()
    } else if directives.trim().is_empty() {
        "aws_config=error".to_owned()
    } else {
        format!("{directives},aws_config=error")
    }
}

/// The subscriber for `format`, writing to `writer`. Every format writes one event as one line:
/// JSON escapes by itself; `plain` and `human` escape control characters in messages and field
/// values ([`EscapedFields`]), so a value such as a pod name holding a newline cannot forge a
/// line of its own.
fn subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        LogFormat::Plain => Box::new(builder.fmt_fields(EscapedFields).finish()),
        LogFormat::Human => Box::new(
            builder
                .fmt_fields(EscapedFields)
                .event_format(HumanFormat)
                .finish(),
        ),
    }
}

/// Fields as `message key=value ...` (the default text layout), with every character that could
/// end or rewrite a line escaped as Rust escapes it (`\n`, `\r`, `\u{1b}`, `\u{2028}`).
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            separator: "",
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    separator: &'static str,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, name: &str, value: &dyn fmt::Debug) -> fmt::Result {
        self.writer.write_str(self.separator)?;
        self.separator = " ";
        if name != "message" {
            write!(self.writer, "{name}=")?;
        }
        fmt::Write::write_fmt(&mut Escaping(&mut self.writer), format_args!("{value:?}"))
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self.write(name, value);
    }
}

/// Whether `c` could end a line or change how one reads: control characters (C0, DEL, C1),
/// the Unicode line and paragraph separators, and the bidirectional overrides and isolates.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Escape `text` for a one-line log record.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing into a String cannot fail.
    let _ = fmt::Write::write_str(&mut Escaping(&mut out), text);
    out
}

/// A writer that escapes what [`needs_escape`] into the one below.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| needs_escape(*c)) {
            self.0.write_str(&rest[..at])?;
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// A pod name that would forge a second record in a text log.
    const FORGED: &str =
        "web-1\n2026-01-01T00:00:00.000000Z  INFO admission review outcome=mutated";

    /// What one event with hostile values logs in `format`.
    fn log_one(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let filter = tracing_subscriber::EnvFilter::new("info");
        let subscriber = subscriber(format, filter, buffer.clone(), false);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("review", uid = %"u\r\n1");
            let _entered = span.enter();
            tracing::warn!(
                name = %FORGED,
                namespace = "ns\u{1b}[2J\u{2028}",
                reason = ?"r\n",
                "denied pod {}: bad\nannotation",
                FORGED
            );
        });
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn assert_one_line(format: LogFormat, out: &str) {
        assert_eq!(out.matches('\n').count(), 1, "{format:?}: {out:?}");
        assert!(out.ends_with('\n'), "{format:?}: {out:?}");
        // JSON may hold U+2028 as it is: JSON lines are split at newlines only.
        let raw: &[char] = match format {
            LogFormat::Json => &['\r', '\u{1b}'],
            _ => &['\r', '\u{1b}', '\u{2028}'],
        };
        for raw in raw {
            assert!(!out.contains(*raw), "{format:?} kept {raw:?}: {out:?}");
        }
    }

    #[test]
    fn text_formats_escape_field_values_and_messages_to_one_line() {
        for format in [LogFormat::Plain, LogFormat::Human] {
            let out = log_one(format);
            assert_one_line(format, &out);
            // Escaped where it was, in the message and in the Display value.
            assert!(
                out.contains("name=web-1\\n2026-01-01T00:00:00.000000Z  INFO admission"),
                "{format:?}: {out}"
            );
            assert!(out.contains("denied pod web-1\\n2026"), "{format:?}: {out}");
            assert!(out.contains("bad\\nannotation"), "{format:?}: {out}");
            assert!(out.contains("\\u{1b}[2J\\u{2028}"), "{format:?}: {out}");
        }
        // The span's fields are escaped too (plain shows them).
        assert!(log_one(LogFormat::Plain).contains("u\\r\\n1"));
        assert!(log_one(LogFormat::Human).starts_with("warning: denied pod"));
    }

    #[test]
    fn json_is_one_object_per_line_with_the_values_intact() {
        let out = log_one(LogFormat::Json);
        assert_one_line(LogFormat::Json, &out);
        let record: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(record["name"], FORGED);
        assert_eq!(record["namespace"], "ns\u{1b}[2J\u{2028}");
        assert_eq!(
            record["message"],
            format!("denied pod {FORGED}: bad\nannotation")
        );
    }

    #[test]
    fn the_sdks_own_loader_logs_errors_only_unless_named() {
        assert_eq!(quiet_sdk("info"), "info,aws_config=error");
        assert_eq!(quiet_sdk("debug"), "debug,aws_config=error");
        assert_eq!(quiet_sdk(""), "aws_config=error");
        assert_eq!(quiet_sdk("info,aws_config=debug"), "info,aws_config=debug");
        for directives in ["info", "trace", "secret_inject=debug"] {
            assert!(tracing_subscriber::EnvFilter::try_new(quiet_sdk(directives)).is_ok());
        }
    }

    #[test]
    fn escaping_leaves_ordinary_text_alone() {
        assert_eq!(
            escaped("pod web-1 in ns: ünïcode ✓"),
            "pod web-1 in ns: ünïcode ✓"
        );
        assert_eq!(
            escaped("a\nb\rc\td\u{7f}e\u{85}f\u{202e}g"),
            "a\\nb\\rc\\td\\u{7f}e\\u{85}f\\u{202e}g"
        );
    }
}
