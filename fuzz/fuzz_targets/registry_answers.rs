#![no_main]
//! Owns: fuzzing what a registry answers besides documents: status,
//! headers (`WWW-Authenticate` as oci-client's challenge parser reads it,
//! `Retry-After`, `Link`) and the OCI error body, through the one place
//! that turns an answer into a typed error and the decisions made on it.
//! Input: `STATUS\n`, then `name: value` lines, an empty line, the body.
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use stagex::net::error::{has_oci_code, parse_retry_after};
use stagex::net::NetError;

fuzz_target!(|data: &[u8]| {
    let Some((status, headers, body)) = split(data) else {
        return;
    };
    let error = NetError::from_status("127.0.0.1:5000", "manifest x", status, &headers, body);
    let _ = (
        error.to_string(),
        error.is_not_found(),
        error.is_retryable(),
    );
    let _ = (error.retry_after(), error.host());
    let _ = has_oci_code(body, "MANIFEST_UNKNOWN");
    for value in headers.get_all(WWW_AUTHENTICATE) {
        if let Ok(text) = value.to_str() {
            challenges(text);
        }
    }
    for value in headers.get_all(reqwest::header::RETRY_AFTER) {
        if let Ok(text) = value.to_str() {
            let _ = parse_retry_after(text);
        }
    }
});

/// The challenges, read as oci-client reads them (it takes the first
/// Bearer one that parses) and all at once.
fn challenges(text: &str) {
    for challenge in http_auth::ChallengeParser::new(text).flatten() {
        if challenge.scheme.eq_ignore_ascii_case("bearer") {
            for (name, value) in &challenge.params {
                let _ = (name, value.to_unescaped());
            }
        }
    }
    let _ = http_auth::parse_challenges(text);
}

fn split(data: &[u8]) -> Option<(StatusCode, HeaderMap, &[u8])> {
    let text_end = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let (head, body) = data.split_at(text_end);
    let body = body.get(2..).unwrap_or_default();
    let mut lines = head.split(|&b| b == b'\n');
    let status = std::str::from_utf8(lines.next()?)
        .ok()?
        .trim()
        .parse::<u16>()
        .ok()?;
    let status = StatusCode::from_u16(status).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    Some((status, headers, body))
}
