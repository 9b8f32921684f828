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
