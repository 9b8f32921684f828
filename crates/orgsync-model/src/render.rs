//! Renders a [`Plan`] for people (text) and scripts (JSON).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::ids::UnitId;
use crate::plan::{Action, Changes, Plan};

impl Plan {
    /// The plan as pretty JSON (the format README documents).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The plan as text for people: a summary, then every change, one per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let s = &self.summary;
        let _ = writeln!(out, "Plan for CVR {}", self.cvr);
        let _ = writeln!(
            out,
            "  departments: {} create, {} update, {} reactivate, {} deactivate, {} unchanged",
            s.departments.create,
            s.departments.update,
            s.departments.reactivate,
            s.departments.deactivate,
            s.departments.unchanged
        );
        let _ = writeln!(
            out,
            "  users:       {} create, {} update, {} reactivate, {} deactivate, {} unchanged, {} skipped",
            s.users.create,
            s.users.update,
            s.users.reactivate,
            s.users.deactivate,
            s.users.unchanged,
            s.skipped
        );
        if s.kept_outside_domains > 0 {
            let _ = writeln!(
                out,
                "  {} target users absent from STS are left alone: their e-mail is outside the customer's domains",
                s.kept_outside_domains
            );
        }
        if let Some(held) = &self.held {
            let _ = writeln!(
                out,
                "  HELD: {} deactivations, because {}",
                held.deactivations, held.reason
            );
        }

        let titles: HashMap<UnitId, &str> = self
            .departments
            .iter()
            .map(|d| (d.external_id, d.fields.title.as_str()))
            .collect();
        let name = |id: &Option<UnitId>| match id {
            None => "(top)".to_owned(),
            Some(id) => titles
                .get(id)
                .map_or_else(|| id.to_string(), |t| format!("{t:?}")),
        };

        if !self.departments.is_empty() {
            let _ = writeln!(out, "\nDepartments");
            for item in &self.departments {
                let _ = write!(
                    out,
                    "  {} {:?} {}",
                    marker(item.action),
                    item.fields.title,
                    item.external_id
                );
                match item.action {
                    Action::Create => {
                        let _ = write!(out, " under {}", name(&item.fields.parent));
                    }
                    Action::Update | Action::Reactivate => {
                        write_changes(&mut out, item.changes.as_ref())
                    }
                    Action::Deactivate => {}
                }
                out.push('\n');
            }
        }
        if !self.users.is_empty() {
            let _ = writeln!(out, "\nUsers");
            for item in &self.users {
                let person = [
                    item.fields.first_name.as_deref(),
                    item.fields.last_name.as_deref(),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
                let _ = write!(
                    out,
                    "  {} {} ({person})",
                    marker(item.action),
                    item.fields.user_name
                );
                match item.action {
                    Action::Create => {
                        let _ = write!(out, " in {}", name(&item.fields.primary_department));
                    }
                    Action::Update | Action::Reactivate => {
                        write_changes(&mut out, item.changes.as_ref())
                    }
                    Action::Deactivate => {}
                }
                out.push('\n');
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "\nSkipped STS users");
            for (reason, n) in &self.skipped {
                let _ = writeln!(out, "  {:<17} {n}", reason.as_str());
            }
        }
        if let Some(held) = &self.held {
            let _ = writeln!(out, "\nHeld deactivations (release the run to apply them)");
            for item in &held.departments {
                let _ = writeln!(
                    out,
                    "  - department {:?} {}",
                    item.fields.title, item.external_id
                );
            }
            for item in &held.users {
                let _ = writeln!(out, "  - user {}", item.fields.user_name);
            }
        }
        if !self.issues.is_empty() {
            let _ = writeln!(out, "\nIssues in the STS data");
            for issue in &self.issues {
                let _ = writeln!(out, "  {:?}: {}", issue.code, issue.message);
            }
        }
        if self.is_empty() && self.held.is_none() {
            let _ = writeln!(out, "\nNothing to change.");
        }
        out
    }
}

fn marker(action: Action) -> &'static str {
    match action {
        Action::Create => "+ create    ",
        Action::Update => "~ update    ",
        Action::Reactivate => "↺ reactivate",
        Action::Deactivate => "- deactivate",
    }
}

fn write_changes(out: &mut String, changes: Option<&Changes>) {
    let Some(changes) = changes.filter(|c| !c.is_empty()) else {
        return;
    };
    let parts: Vec<String> = changes
        .iter()
        .map(|(field, (old, new))| format!("{field}: {} → {}", short(old), short(new)))
        .collect();
    let _ = write!(out, ": {}", parts.join(", "));
}

fn short(value: &Value) -> String {
    match value {
        Value::Null => "∅".to_owned(),
        Value::Array(items) if items.len() > 3 => format!("[{} items]", items.len()),
        other => other.to_string(),
    }
}
