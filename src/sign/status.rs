//! Owns: the release status matrix, packages x trusted maintainers (signed,
//! invalid with its reason, missing), the quorum per package and the totals
//! per maintainer, sorted with the packages short of the quorum first; and
//! its two renderings: a compact terminal table and ONE self-contained
//! static HTML page (inline CSS, no scripts, nothing fetched from elsewhere).
//! Pure: verification reports and the keyring's maintainers in, text out.
use serde::Serialize;

use super::check::ImageReport;

/// A trusted maintainer, a column of the matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Maintainer {
    pub fingerprint: String,
    pub name: String,
    /// Packages this maintainer validly signed.
    pub signed: usize,
    /// Packages where this maintainer's signature is invalid.
    pub invalid: usize,
}

/// One cell: what a maintainer did for a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Cell {
    Signed,
    Invalid { reason: String },
    Missing,
}

/// One row: a package image of the release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub image: String,
    pub platform: Option<String>,
    pub digest: String,
    /// One per maintainer, in the order of `Status::maintainers`.
    pub cells: Vec<Cell>,
    pub valid: usize,
    pub quorum: bool,
    /// Invalid files no trusted key could be named for, and read errors.
    pub other_problems: Vec<String>,
}

/// The whole release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub threshold: usize,
    pub packages: usize,
    pub quorum_met: usize,
    pub quorum_short: usize,
    pub maintainers: Vec<Maintainer>,
    pub rows: Vec<Row>,
}

/// Builds the matrix from `reports` for `maintainers` (fingerprint, name).
pub fn status(
    reports: &[ImageReport],
    maintainers: &[(String, String)],
    threshold: usize,
) -> Status {
    let mut columns: Vec<Maintainer> = maintainers
        .iter()
        .map(|(fingerprint, name)| Maintainer {
            fingerprint: fingerprint.clone(),
            name: name.clone(),
            signed: 0,
            invalid: 0,
        })
        .collect();
    let mut rows: Vec<Row> = reports
        .iter()
        .map(|report| row(report, &mut columns))
        .collect();
    rows.sort_by(|a, b| {
        a.quorum
            .cmp(&b.quorum)
            .then_with(|| a.image.cmp(&b.image))
            .then_with(|| a.platform.cmp(&b.platform))
    });
    let quorum_met = rows.iter().filter(|r| r.quorum).count();
    Status {
        threshold,
        packages: rows.len(),
        quorum_met,
        quorum_short: rows.len() - quorum_met,
        maintainers: columns,
        rows,
    }
}

fn row(report: &ImageReport, columns: &mut [Maintainer]) -> Row {
    let mut other_problems: Vec<String> = report.error.iter().cloned().collect();
    let cells = columns
        .iter_mut()
        .map(|column| {
            if report
                .signers
                .iter()
                .any(|s| s.fingerprint == column.fingerprint)
            {
                column.signed += 1;
                return Cell::Signed;
            }
            let reasons: Vec<String> = report
                .invalid
                .iter()
                .filter(|i| i.key.as_deref() == Some(column.fingerprint.as_str()))
                .map(|i| format!("{}: {}", i.file, i.reason))
                .collect();
            if reasons.is_empty() {
                Cell::Missing
            } else {
                column.invalid += 1;
                Cell::Invalid {
                    reason: reasons.join("; "),
                }
            }
        })
        .collect();
    other_problems.extend(
        report
            .invalid
            .iter()
            .filter(|i| {
                !columns
                    .iter()
                    .any(|c| i.key.as_deref() == Some(c.fingerprint.as_str()))
            })
            .map(|i| format!("{}: {}", i.file, i.reason)),
    );
    Row {
        image: report.image.clone(),
        platform: report.platform.clone(),
        digest: report.digest.clone(),
        cells,
        valid: report.valid_signers,
        quorum: report.quorum,
        other_problems,
    }
}

/// The compact terminal table: one column per maintainer (numbered, with a
/// legend), `+` signed, `x` invalid, `.` missing.
pub fn table(status: &Status) -> String {
    let mut out = String::new();
    for (i, m) in status.maintainers.iter().enumerate() {
        out += &format!(
            "M{:<2} {} {} (signed {}, invalid {})\n",
            i + 1,
            m.fingerprint,
            m.name,
            m.signed,
            m.invalid
        );
    }
    let width = status
        .rows
        .iter()
        .map(|r| label(r).len())
        .max()
        .unwrap_or(7)
        .max(7);
    out += &format!("\n{:width$}  ", "PACKAGE");
    for i in 0..status.maintainers.len() {
        out += &format!("M{:<2} ", i + 1);
    }
    out += "QUORUM\n";
    for row in &status.rows {
        out += &format!("{:width$}  ", label(row));
        for cell in &row.cells {
            out += match cell {
                Cell::Signed => " +  ",
                Cell::Invalid { .. } => " x  ",
                Cell::Missing => " .  ",
            };
        }
        out += &format!(
            "{}/{} {}\n",
            row.valid,
            status.threshold,
            if row.quorum { "met" } else { "SHORT" }
        );
    }
    out += &format!(
        "\n{} package(s): {} meet the quorum of {}, {} short\n",
        status.packages, status.quorum_met, status.threshold, status.quorum_short
    );
    out
}

fn label(row: &Row) -> String {
    match &row.platform {
        Some(platform) => format!("{} ({platform})", row.image),
        None => row.image.clone(),
    }
}

/// The self-contained HTML page.
pub fn html(status: &Status, title: &str) -> String {
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{t}</title>\n<style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(title)
    );
    page += &format!(
        "<p class=\"summary\"><span id=\"packages\">{}</span> packages: <span id=\"met\">{}</span> meet the quorum of <span id=\"threshold\">{}</span> distinct signers, <span id=\"short\">{}</span> short.</p>\n",
        status.packages, status.quorum_met, status.threshold, status.quorum_short
    );
    page += "<table><thead><tr><th>package</th><th>signers</th>";
    for m in &status.maintainers {
        page += &format!(
            "<th class=\"m\" title=\"{}\"><span>{}</span></th>",
            escape(&m.fingerprint),
            escape(&m.name)
        );
    }
    page += "</tr></thead><tbody>\n";
    for row in &status.rows {
        page += &html_row(row, status.threshold);
    }
    page += "</tbody><tfoot><tr><th>signed (invalid)</th><th></th>";
    for m in &status.maintainers {
        page += &format!("<td class=\"total\">{} ({})</td>", m.signed, m.invalid);
    }
    page += "</tr></tfoot></table>\n</body></html>\n";
    page
}

fn html_row(row: &Row, threshold: usize) -> String {
    let class = if row.quorum { "met" } else { "short" };
    let problems = if row.other_problems.is_empty() {
        String::new()
    } else {
        format!(
            " <span class=\"problem\" title=\"{}\">!</span>",
            escape(&row.other_problems.join("\n"))
        )
    };
    let mut html = format!(
        "<tr class=\"{class}\"><th title=\"{}\">{}{problems}</th><td class=\"count\">{}/{threshold}</td>",
        escape(&row.digest),
        escape(&label(row)),
        row.valid
    );
    for cell in &row.cells {
        html += &match cell {
            Cell::Signed => "<td class=\"signed\" title=\"signed\">&#10003;</td>".to_string(),
            Cell::Invalid { reason } => format!(
                "<td class=\"invalid\" title=\"{}\">&#10007;</td>",
                escape(reason)
            ),
            Cell::Missing => "<td class=\"missing\" title=\"missing\"></td>".to_string(),
        };
    }
    html + "</tr>\n"
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:2px 6px;text-align:center}\
tbody th{text-align:left;font-weight:normal;font-family:monospace;white-space:nowrap}\
thead th{position:sticky;top:0;background:#f6f6f6}th.m span{writing-mode:vertical-rl;transform:rotate(180deg)}\
tr.short th,tr.short td.count{background:#fde8e8;font-weight:bold}td.signed{background:#e3f6e3;color:#17691b}\
td.invalid{background:#f9d0d0;color:#9b1111;cursor:help}td.missing{background:#fafafa}\
.problem{color:#9b1111;cursor:help}.summary{font-size:1.1em}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::check::{InvalidEntry, SignerEntry};

    fn report(image: &str, signers: &[&str], invalid: &[(&str, &str)]) -> ImageReport {
        ImageReport {
            image: image.to_string(),
            platform: None,
            digest: format!("sha256:{image}"),
            reference: String::new(),
            signers: signers
                .iter()
                .map(|f| SignerEntry {
                    fingerprint: f.to_string(),
                    name: None,
                    files: vec!["signature-1".into()],
                })
                .collect(),
            invalid: invalid
                .iter()
                .map(|(key, reason)| InvalidEntry {
                    file: "signature-9".into(),
                    code: "key-expired".into(),
                    reason: reason.to_string(),
                    key: Some(key.to_string()),
                })
                .collect(),
            hidden: Vec::new(),
            capped: false,
            error: None,
            valid_signers: signers.len(),
            threshold: 2,
            quorum: signers.len() >= 2,
            accepted: Vec::new(),
        }
    }

    #[test]
    fn short_packages_come_first_and_cells_say_who_did_what() {
        let maintainers = [
            ("A".to_string(), "Alice".to_string()),
            ("B".to_string(), "Bob <b&b>".to_string()),
        ];
        let reports = [
            report("core-a", &["A", "B"], &[]),
            report("core-b", &["A"], &[("B", "expired <then>")]),
        ];
        let status = status(&reports, &maintainers, 2);
        assert_eq!((status.quorum_met, status.quorum_short), (1, 1));
        assert_eq!(status.rows[0].image, "core-b");
        assert_eq!(
            status.rows[0].cells[1],
            Cell::Invalid {
                reason: "signature-9: expired <then>".into()
            }
        );
        assert_eq!(
            (status.maintainers[1].signed, status.maintainers[1].invalid),
            (1, 1)
        );
        let page = html(&status, "StageX 2026.03.0");
        assert!(page.contains("title=\"signature-9: expired &lt;then&gt;\""));
        assert!(page.contains("Bob &lt;b&amp;b&gt;"));
        assert!(!page.contains("<script") && !page.contains("http"));
        assert!(
            table(&status).contains("core-b    +   x  1/2 SHORT"),
            "{}",
            table(&status)
        );
    }
}
