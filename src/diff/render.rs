//! Owns: the human text of a diff report (pure): a verdict line first
//! (`identical` / `differ: N causes`), then each cause innermost first,
//! then one line naming the consequences (digests that differ because
//! what they name differs).
use std::fmt::Write;

use super::{Cause, Report};

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// The verdict line.
pub fn verdict(report: &Report) -> String {
    if report.identical {
        format!(
            "identical: {} and {} are the same image",
            report.a, report.b
        )
    } else {
        format!(
            "differ: {} ({} -> {})",
            plural(report.cause_count, "cause", "causes"),
            report.a,
            report.b
        )
    }
}

/// One cause as an indented line (its `--all` paths below it).
pub fn cause_line(cause: &Cause) -> String {
    let mut line = format!("  {:<11} ", cause.level.name());
    if !cause.scope.is_empty() {
        let _ = write!(line, "[{}] ", cause.scope);
    }
    line.push_str(&cause.detail);
    for path in &cause.paths {
        let _ = write!(line, "\n                {path}");
    }
    line
}

/// The whole report as text (ends with a newline).
pub fn render(report: &Report) -> String {
    let mut text = verdict(report);
    text.push('\n');
    for cause in report.causes.iter().filter(|c| !c.consequence) {
        text.push_str(&cause_line(cause));
        text.push('\n');
    }
    let consequences: Vec<String> = report
        .causes
        .iter()
        .filter(|c| c.consequence)
        .map(|c| match c.path.as_deref() {
            Some(path) if !c.scope.is_empty() => format!("{} {path}", c.scope),
            Some(path) => path.to_string(),
            None if c.scope.is_empty() => c.kind.clone(),
            None => format!("{} {}", c.scope, c.kind),
        })
        .collect();
    if !consequences.is_empty() {
        let _ = writeln!(
            text,
            "  and, as a consequence, these digests differ: {}",
            consequences.join(", ")
        );
    }
    text
}
