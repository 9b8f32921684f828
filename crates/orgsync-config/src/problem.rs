//! Configuration problems: each names the file, the field and its position, and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

/// A line and column in a file, both 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
            before[nl + 1..].chars().count()
        }) + 1;
        Position { line, column }
    }

    /// Where the key `dotted`'s last segment is first assigned in `text` (`name = ...`), as a
    /// best effort for problems serde reports without a position.
    pub fn of_key(text: &str, dotted: &str) -> Option<Position> {
        // `section.key` is looked for under `[section]`; a bare key before any section header.
        let (section, key) = match dotted.rsplit_once('.') {
            Some((section, key)) => (section, key),
            None => ("", dotted),
        };
        let mut current = String::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim_start();
            let here = || Position::of_offset(text, offset + line.len() - trimmed.len());
            if let Some(header) = trimmed.strip_prefix('[') {
                current = header.split(']').next().unwrap_or("").trim().to_owned();
                if current == dotted {
                    return Some(here());
                }
            } else if current == section {
                let rest = trimmed
                    .strip_prefix(key)
                    .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")));
                if rest.is_some_and(|r| r.trim_start().starts_with('=')) {
                    return Some(here());
                }
            }
            offset += line.len();
        }
        None
    }
}

/// One problem (or warning) in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file (or directory) concerned.
    pub file: PathBuf,
    /// The field, dotted (`guards.max_deactivations`); empty for the file as a whole.
    pub field: String,
    /// Where in the file, when known.
    pub position: Option<Position>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Problem {
    /// A problem with a whole file or directory.
    pub fn file(file: &Path, message: impl Into<String>) -> Problem {
        Problem {
            file: file.to_owned(),
            field: String::new(),
            position: None,
            message: message.into(),
        }
    }

    /// A problem with one field.
    pub fn at(
        file: &Path,
        field: &str,
        position: Option<Position>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            file: file.to_owned(),
            field: field.to_owned(),
            position,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The field names a struct deriving `Deserialize` knows, read from what serde's derive hands
/// to `deserialize_struct` (so the list cannot drift from the struct).
pub(crate) fn struct_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    struct Capture<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Capture<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields captured"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// The known name closest to `unknown` when it is close enough to be a typo (`nmae` → `name`).
pub(crate) fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// The message for an unknown key: the nearest known one when there is one, else where the
/// known ones are documented.
pub(crate) fn unknown_key_message(dotted: &str, known: &[&str], documented_in: &str) -> String {
    let leaf = dotted.rsplit('.').next().unwrap_or(dotted);
    match nearest(leaf, known) {
        Some(suggestion) => format!("unknown field; did you mean `{suggestion}`?"),
        None => format!(
            "unknown field; the known ones here are {}; every one is documented in {documented_in}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The dotted key assigned on the line holding byte `offset` of `text` (`[defaults]` then
/// `language = 1` gives `defaults.language`), to name the field of a problem the TOML parser
/// reports by position only (for example a number where a string is expected).
pub(crate) fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix('[').and_then(|h| h.split(']').next()))
        .map(|h| h.trim_matches('[').trim().to_owned());
    Some(match section {
        Some(section) if !section.is_empty() => format!("{section}.{key}"),
        _ => key.to_owned(),
    })
}

/// Every problem found in one load, at least one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbø = 2\n";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, text.find('=').unwrap()),
            Position { line: 1, column: 3 }
        );
        let second = text.rfind('=').unwrap();
        assert_eq!(
            Position::of_offset(text, second),
            Position { line: 2, column: 4 }
        );
    }

    #[test]
    fn a_typo_gets_the_nearest_known_key_and_nonsense_gets_the_list() {
        assert_eq!(nearest("nmae", &["cvr", "name", "domains"]), Some("name"));
        assert_eq!(
            nearest("jitter_secs", &["jitter_seconds", "enabled"]),
            Some("jitter_seconds")
        );
        assert_eq!(nearest("zzz", &["cvr", "name"]), None);
        let message = unknown_key_message("guards.qq", &["max_deactivations"], "x.toml");
        assert!(message.contains("`max_deactivations`"), "{message}");
    }

    #[test]
    fn the_key_of_a_line_is_found_with_its_section() {
        let text = "cvr = 1\n[defaults]\nlanguage = 2\n# x = 1\n";
        assert_eq!(
            key_at(text, text.find('1').unwrap()).as_deref(),
            Some("cvr")
        );
        assert_eq!(
            key_at(text, text.find('2').unwrap()).as_deref(),
            Some("defaults.language")
        );
        assert_eq!(key_at(text, text.find('#').unwrap()), None);
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Two {
        alpha: u8,
        beta: u8,
    }

    #[test]
    fn struct_fields_come_from_the_derive() {
        assert_eq!(struct_fields::<Two>(), &["alpha", "beta"]);
    }

    #[test]
    fn a_key_is_found_in_its_own_section() {
        let text = "timezone = 1\n[defaults]\ntimezone = 2\n[guards]\n  max_x = 1\n";
        let at = |line, column| Some(Position { line, column });
        assert_eq!(Position::of_key(text, "guards.max_x"), at(5, 3));
        assert_eq!(Position::of_key(text, "guards"), at(4, 1));
        assert_eq!(Position::of_key(text, "defaults.timezone"), at(3, 1));
        assert_eq!(Position::of_key(text, "timezone"), at(1, 1));
        assert_eq!(Position::of_key(text, "nothing"), None);
    }
}
