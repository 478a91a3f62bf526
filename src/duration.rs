//! Durations on the command line: `500ms`, `10s`, `2m`, `1h`, or plain seconds.

use std::time::Duration;

/// Parse a Go-style duration (`500ms`, `10s`, `2m`, `1h30m`, `1.5h`; units ns, us, µs, ms, s,
/// m, h), or plain seconds.
pub fn parse(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = value
            .parse()
            .map_err(|_| format!("{value:?} is not a duration such as 500ms, 10s or 2m"))?;
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{value:?}: {e}"));
    }
    parse_go(value)
}

/// Parse a Go-style duration, which needs a unit on every number (`5m`, `1h30m`, `90s`).
pub fn parse_go(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a duration such as 30s, 5m or 1h30m");
    if value.is_empty() {
        return Err(bad());
    }
    let mut rest = value;
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let factor = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "{value:?}: unknown unit {unit:?}; use ms, s, m or h"
                ));
            }
        };
        total += number * factor;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{value:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert!(parse("ten").is_err());
        assert!(parse("5d").unwrap_err().contains("unit"));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_go("5").is_err(), "Go durations need a unit");
        assert!(parse_go("").is_err());
        assert!(parse_go("m").is_err());
    }
}
