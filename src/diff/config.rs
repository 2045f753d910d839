//! Owns: the field-level diff of two JSON documents (image configs;
//! pure). Objects are compared key by key, arrays element by element
//! (extra elements are added/removed); each leaf that differs is one
//! finding with its path (`config.Env[2]`, `history[3].created`,
//! `rootfs.diff_ids[0]`). A diff_id that differs is a consequence of its
//! layer (explained by the layer's causes), everything else a cause.
use serde_json::Value;

use super::{Cause, Level};

/// One differing leaf: path, A's value (None: absent), B's value.
pub type JsonChange = (String, Option<Value>, Option<Value>);

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Every leaf that differs between `a` and `b`, in document order.
pub fn json_changes(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<JsonChange>) {
    match (a, b) {
        (Some(Value::Object(ma)), Some(Value::Object(mb))) => {
            for (key, va) in ma {
                json_changes(&join(path, key), Some(va), mb.get(key), out);
            }
            for (key, vb) in mb {
                if !ma.contains_key(key) {
                    json_changes(&join(path, key), None, Some(vb), out);
                }
            }
        }
        (Some(Value::Array(la)), Some(Value::Array(lb))) => {
            for i in 0..la.len().max(lb.len()) {
                json_changes(&format!("{path}[{i}]"), la.get(i), lb.get(i), out);
            }
        }
        (a, b) if a != b => out.push((path.to_string(), a.cloned(), b.cloned())),
        _ => {}
    }
}

fn show(value: &Option<Value>) -> String {
    match value {
        None => "(absent)".to_string(),
        Some(v) => v.to_string(),
    }
}

/// The config causes of one image pair (`scope`: its platform).
pub fn config_causes(scope: &str, a: &[u8], b: &[u8]) -> Vec<Cause> {
    let parse = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).ok();
    let (va, vb) = (parse(a), parse(b));
    let mut changes = Vec::new();
    json_changes("", va.as_ref(), vb.as_ref(), &mut changes);
    changes
        .into_iter()
        .map(|(path, a, b)| {
            let detail = format!("config {path}: {} -> {}", show(&a), show(&b));
            let cause = Cause::new(Level::Config, scope, "field", detail)
                .path(path.clone())
                .values(a, b);
            if path.starts_with("rootfs.diff_ids[") {
                cause.consequence()
            } else {
                cause
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_are_named_by_path() {
        let a = json!({"created": "1", "config": {"Env": ["A=1", "B=2"]}, "x": 1});
        let b = json!({"created": "2", "config": {"Env": ["A=1", "B=3", "C=4"]}, "y": 1});
        let mut out = Vec::new();
        json_changes("", Some(&a), Some(&b), &mut out);
        let paths: Vec<&str> = out.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            paths,
            ["created", "config.Env[1]", "config.Env[2]", "x", "y"]
        );
        assert_eq!(out[2].1, None);
    }
}
