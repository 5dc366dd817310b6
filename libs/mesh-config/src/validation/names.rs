//! Name syntaxes shared by Kubernetes and Istio: DNS-1123 labels and
//! subdomains, label keys and values.

use std::collections::BTreeMap;

use super::{Checker, Path};

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A DNS-1123 label as Istio checks it (letters of either case, digits and
/// inner `-`, at most 63 characters). Istio accepts upper case where
/// Kubernetes would not; we follow Istio for fields inside `spec`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= LABEL_MAX
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
        && s.chars().all(|c| is_alnum(c) || c == '-')
}

/// A DNS-1123 label as Kubernetes requires for namespaces: lower case only.
pub fn is_k8s_label(s: &str) -> bool {
    is_dns_label(s) && !s.chars().any(|c| c.is_ascii_uppercase())
}

/// A DNS-1123 subdomain as Kubernetes requires for most object names.
pub fn is_k8s_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= SUBDOMAIN_MAX && s.split('.').all(is_k8s_label)
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, the name part of a label key
/// and the whole of a non-empty label value.
fn is_qualified_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= LABEL_MAX
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
        && s.chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a
/// qualified name.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.len() > SUBDOMAIN_MAX || !prefix.split('.').all(is_dns_label))
    {
        return Err(format!("label key {key:?} has an invalid DNS prefix"));
    }
    if !is_qualified_name(name) {
        return Err(format!(
            "label key {key:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or a qualified name.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Checks a map of labels (subset labels, source labels, endpoint labels).
pub fn labels(v: &mut Checker, at: &Path, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        let at = at.key(key);
        v.check(&at, label_key(key));
        v.check(&at, label_value(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(is_dns_label("v1"));
        assert!(is_dns_label("Reviews-V2"));
        assert!(!is_dns_label("-v1"));
        assert!(!is_dns_label("v1.2"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(!is_k8s_label("Default"));
        assert!(is_k8s_subdomain("reviews.v1"));
        assert!(!is_k8s_subdomain("reviews..v1"));
        assert!(!is_k8s_subdomain("Reviews"));
    }

    #[test]
    fn label_keys_and_values() {
        assert!(label_key("app").is_ok());
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("bad key").is_err());
        assert!(label_key("/name").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_b").is_ok());
        assert!(label_value("v1*").is_err());
    }
}
