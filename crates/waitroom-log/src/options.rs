//! The one convention for backend options: URL query parameters (`file:/data/log?fsync=always`,
//! `redis://host:6379/0?prefix=tickets&keep-history=24h`). Each backend takes the options it
//! knows from a [`QueryOptions`] and then calls [`QueryOptions::finish`], which refuses any left
//! over, so a typo never silently falls back to a default. Messages name options, never values
//! or the URL (which may hold a password).

use std::fmt;

use crate::LogError;
use crate::limits::KEEP_HISTORY_MS_MAX;

/// Why an option's value was refused (see [`QueryOptions::take_parsed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionError(pub String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The query parameters of one backend URL, taken one by one by the backend that reads them.
#[derive(Debug)]
pub(crate) struct QueryOptions {
    backend: &'static str,
    pairs: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl QueryOptions {
    /// Splits `query` (what follows `?`, percent-decoded). An option given twice is refused.
    pub(crate) fn parse(backend: &'static str, query: &str) -> Result<Self, LogError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name.is_empty() {
                return Err(LogError::Rejected(format!(
                    "{backend} URL: an option without a name"
                )));
            }
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(LogError::Rejected(format!(
                    "{backend} URL option {name} is given twice"
                )));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self {
            backend,
            pairs,
            known: Vec::new(),
        })
    }

    /// The value of option `name`, removed from what is left.
    pub(crate) fn take(&mut self, name: &'static str) -> Option<String> {
        self.known.push(name);
        let index = self.pairs.iter().position(|(seen, _)| seen == name)?;
        Some(self.pairs.remove(index).1)
    }

    /// The value of option `name` parsed by `parse`; a value that does not parse is refused with
    /// the parser's reason.
    pub(crate) fn take_parsed<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, OptionError>,
    ) -> Result<Option<T>, LogError> {
        let backend = self.backend;
        self.take(name)
            .map(|value| {
                parse(&value).map_err(|why| {
                    LogError::Rejected(format!("{backend} URL option {name}: {why}"))
                })
            })
            .transpose()
    }

    /// `keep-history`: how long trimmed history is kept for audit (see [`parse_duration_ms`]).
    pub(crate) fn take_keep_history_ms(&mut self) -> Result<u64, LogError> {
        Ok(self
            .take_parsed("keep-history", |text| {
                let ms = parse_duration_ms(text)?;
                if ms > KEEP_HISTORY_MS_MAX {
                    return Err(OptionError(format!(
                        "at most {} hours",
                        KEEP_HISTORY_MS_MAX / 3_600_000
                    )));
                }
                Ok(ms)
            })?
            .unwrap_or(0))
    }

    /// Options not taken, for backends that pass them through (Kafka client properties).
    #[allow(dead_code)]
    pub(crate) fn into_rest(self) -> Vec<(String, String)> {
        self.pairs
    }

    /// Refuses options nobody took.
    pub(crate) fn finish(self) -> Result<(), LogError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((name, _)) => {
                let mut known = self.known;
                known.sort_unstable();
                known.dedup();
                Err(LogError::Rejected(format!(
                    "unknown {} URL option {name:?} (known: {})",
                    self.backend,
                    known.join(", ")
                )))
            }
        }
    }
}

/// A duration with a unit: `0`, `500ms`, `90s`, `30m`, `24h`, `7d` (whole numbers), in
/// milliseconds.
///
/// # Errors
/// Text that is not a whole number followed by one of those units.
pub fn parse_duration_ms(text: &str) -> Result<u64, OptionError> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(OptionError(
                "a duration is a whole number with a unit: ms, s, m, h or d (e.g. 24h)".to_owned(),
            ));
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| OptionError("a duration starts with a whole number (e.g. 24h)".to_owned()))?;
    number
        .checked_mul(unit_ms)
        .ok_or_else(|| OptionError("duration out of range".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
        assert_eq!(parse_duration_ms("24h"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        for bad in [
            "",
            "h",
            "24",
            "24 h",
            "1.5h",
            "-1s",
            "24hours",
            "99999999999999999999d",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_are_taken_once_and_leftovers_refused() {
        let mut options = QueryOptions::parse("test", "a=1&b=x%20y").unwrap();
        assert_eq!(options.take("b").as_deref(), Some("x y"));
        assert_eq!(options.take("c"), None);
        let error = options.finish().unwrap_err().to_string();
        assert!(error.contains("\"a\"") && error.contains("b, c"), "{error}");
        assert!(QueryOptions::parse("test", "a=1&a=2").is_err());
        let mut options = QueryOptions::parse("test", "keep-history=8d").unwrap();
        assert!(options.take_keep_history_ms().is_err());
        let mut options = QueryOptions::parse("test", "n=x").unwrap();
        let error = options
            .take_parsed("n", |v| {
                v.parse::<u32>().map_err(|e| OptionError(e.to_string()))
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("option n"), "{error}");
    }
}
