//! Writing injected workloads back as YAML that Kubernetes' own tools read
//! the same way. kubectl and the API server read YAML 1.1, where `on`, `off`,
//! `yes`, `no`, `y` and `n` are booleans, so a general YAML 1.2 writer would
//! let a label value `"on"` come back as `true`. Here every string that is
//! not plainly a string in both YAML versions is written double-quoted (in
//! JSON's escaping, which YAML shares), and everything else in block style
//! with keys in order, for diffs that are easy to review.

use std::fmt::Write;

use serde_json::Value;

/// `value` as a YAML document (no leading `---`), ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

/// YAML readers refuse implicit keys longer than this; longer ones are
/// written in the explicit form (`? key` then `: value`).
const LONGEST_IMPLICIT_KEY: usize = 1000;

fn write_mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        pad(out, indent);
        let key = string_text(key);
        if key.len() > LONGEST_IMPLICIT_KEY {
            out.push_str("? ");
            out.push_str(&key);
            out.push('\n');
            pad(out, indent);
        } else {
            out.push_str(&key);
        }
        out.push(':');
        write_nested(out, value, indent, false);
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push('-');
        write_nested(out, item, indent, true);
    }
}

/// Writes the value after `key:` or `-`. A non-empty mapping in a sequence
/// starts on the dash's line (`- name: x`), as kubectl writes it.
fn write_nested(out: &mut String, value: &Value, indent: usize, in_sequence: bool) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            if in_sequence {
                out.push(' ');
                let mut nested = String::new();
                write_mapping(&mut nested, map, indent + 2);
                out.push_str(nested.trim_start());
            } else {
                out.push('\n');
                write_mapping(out, map, indent + 2);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            // Sequences under a key sit at the key's indentation, as kubectl's.
            let child = if in_sequence { indent + 2 } else { indent };
            write_sequence(out, items, child);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push(' ');
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string_text(text),
        Value::Object(_) => "{}".to_string(),
        Value::Array(_) => "[]".to_string(),
    }
}

/// A string plain when both YAML 1.1 and 1.2 read it back as that string,
/// double-quoted otherwise.
fn string_text(text: &str) -> String {
    if is_plain_safe(text) {
        text.to_string()
    } else {
        let mut quoted = String::with_capacity(text.len() + 2);
        // JSON's string escapes are valid in YAML double-quoted scalars.
        let _ = write!(quoted, "{}", Value::String(text.to_string()));
        quoted
    }
}

/// Words YAML 1.1 or 1.2 read as booleans or null, in any case.
const RESERVED: [&str; 13] = [
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "=", "<<", "",
];

fn is_plain_safe(text: &str) -> bool {
    if RESERVED.contains(&text.to_ascii_lowercase().as_str()) || looks_numeric(text) {
        return false;
    }
    let first = text.chars().next().unwrap_or(' ');
    // A dash starts a plain scalar unless a space follows (`- x` is a list
    // item) or it opens a document marker; flags like `--port` stay plain.
    let dash_ok =
        first == '-' && !text.starts_with("- ") && !text.starts_with("---") && text.len() > 1;
    let starts_well = first.is_ascii_alphanumeric() || matches!(first, '/' | '.' | '_') || dash_ok;
    starts_well
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-./:=@+()$*".contains(c))
}

/// Anything a YAML reader might take for a number (ints, floats, octal,
/// hex, sexagesimal, `.inf`): quoted to be safe.
fn looks_numeric(text: &str) -> bool {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), ".inf" | ".nan") {
        return true;
    }
    body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body
            .chars()
            .all(|c| c.is_ascii_hexdigit() || "._:xXoOeE+-".contains(c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strings_yaml_1_1_reads_otherwise_are_quoted() {
        let value = json!({"labels": {"a": "on", "b": "yes", "c": "N", "d": "1.20", "e": "0x1F",
            "f": "12:30", "g": "", "h": "null", "i": "web", "j": "docker.io/istio/x:1.2"}});
        let text = to_yaml(&value);
        for quoted in [
            "\"on\"",
            "\"yes\"",
            "\"N\"",
            "\"1.20\"",
            "\"0x1F\"",
            "\"12:30\"",
            "\"\"",
            "\"null\"",
        ] {
            assert!(text.contains(quoted), "{quoted} not quoted in\n{text}");
        }
        assert!(
            text.contains("i: web\n") && text.contains("j: docker.io/istio/x:1.2\n"),
            "{text}"
        );
    }

    #[test]
    fn long_keys_use_the_explicit_form() {
        let long = "\"".repeat(600);
        let value = json!({"spec": {long.clone(): true, "short": [{long: 1}]}});
        let back: Value = serde_yaml_ng::from_str(&to_yaml(&value)).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn block_style_round_trips() {
        let value = json!({
            "apiVersion": "apps/v1",
            "spec": {"containers": [{"name": "web", "args": ["a: b", "--x", "-", "- y", "---", "multi\nline"], "ports": [{"containerPort": 80}]}],
                     "volumes": [], "empty": {}, "n": null, "t": true, "f": 1.5},
        });
        let text = to_yaml(&value);
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, value, "{text}");
        assert!(text.contains("  containers:\n  - args:\n    - \"a: b\"\n    - --x\n    - \"-\"\n    - \"- y\"\n    - \"---\"\n"), "{text}");
    }
}
