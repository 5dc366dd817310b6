//! Istio's `discoverySelectors` (mesh config): label selectors on
//! namespaces. A namespace is part of the mesh if it matches any selector;
//! with no selectors every namespace is.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A list of namespace label selectors, checked when built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverySelectors {
    selectors: Vec<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    labels: BTreeMap<String, String>,
    expressions: Vec<Expression>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expression {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl DiscoverySelectors {
    /// Reads Kubernetes label selectors; an unknown operator, or `In`/`NotIn`
    /// without values (Kubernetes rejects both), is an error.
    pub fn new(selectors: &[LabelSelector]) -> Result<DiscoverySelectors, String> {
        let selectors = selectors
            .iter()
            .map(|selector| {
                let expressions = selector
                    .match_expressions
                    .iter()
                    .flatten()
                    .map(|requirement| {
                        let key = requirement.key.clone();
                        let values = requirement.values.clone().unwrap_or_default();
                        match requirement.operator.as_str() {
                            "In" | "NotIn" if values.is_empty() => Err(format!(
                                "{} on {key:?} needs at least one value",
                                requirement.operator
                            )),
                            "In" => Ok(Expression::In(key, values)),
                            "NotIn" => Ok(Expression::NotIn(key, values)),
                            "Exists" => Ok(Expression::Exists(key)),
                            "DoesNotExist" => Ok(Expression::DoesNotExist(key)),
                            other => Err(format!(
                                "unknown operator {other:?} on {key:?} (In, NotIn, Exists, DoesNotExist)"
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Selector {
                    labels: selector.match_labels.clone().unwrap_or_default(),
                    expressions,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DiscoverySelectors { selectors })
    }

    /// Reads a JSON (or flow-style YAML) list of label selectors, as written
    /// in mesh config: `[{"matchLabels": {"istio-discovery": "enabled"}}]`.
    pub fn parse(text: &str) -> Result<DiscoverySelectors, String> {
        let selectors: Vec<LabelSelector> =
            serde_json::from_str(text).map_err(|e| format!("discovery selectors: {e}"))?;
        DiscoverySelectors::new(&selectors)
    }

    /// Whether no selector is set (every namespace is selected).
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// Whether a namespace with these labels is selected. An empty selector
    /// (`{}`) matches every namespace, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.is_empty() || self.selectors.iter().any(|s| s.matches(labels))
    }
}

impl Selector {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| e.matches(labels))
    }
}

impl Expression {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Expression::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Expression::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Expression::Exists(key) => labels.contains_key(key),
            Expression::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_selectors_select_everything() {
        let selectors = DiscoverySelectors::default();
        assert!(selectors.matches(&labels(&[])));
    }

    #[test]
    fn any_selector_may_match() {
        let selectors = DiscoverySelectors::parse(
            r#"[{"matchLabels": {"istio-discovery": "enabled"}},
                {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]},
                                      {"key": "legacy", "operator": "DoesNotExist"}]}]"#,
        )
        .unwrap();
        assert!(selectors.matches(&labels(&[("istio-discovery", "enabled")])));
        assert!(selectors.matches(&labels(&[("env", "prod")])));
        assert!(!selectors.matches(&labels(&[("env", "prod"), ("legacy", "")])));
        assert!(!selectors.matches(&labels(&[("env", "dev")])));
        assert!(!selectors.matches(&labels(&[])));
    }

    #[test]
    fn not_in_matches_a_missing_label_and_exists_needs_it() {
        let selectors = DiscoverySelectors::parse(
            r#"[{"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["batch"]},
                                      {"key": "team", "operator": "Exists"}]}]"#,
        )
        .unwrap();
        assert!(selectors.matches(&labels(&[("team", "a")])));
        assert!(selectors.matches(&labels(&[("team", "a"), ("tier", "web")])));
        assert!(!selectors.matches(&labels(&[("team", "a"), ("tier", "batch")])));
        assert!(!selectors.matches(&labels(&[("tier", "web")])));
    }

    #[test]
    fn an_empty_selector_matches_all() {
        let selectors = DiscoverySelectors::parse("[{}]").unwrap();
        assert!(selectors.matches(&labels(&[("x", "y")])));
    }

    #[test]
    fn bad_selectors_are_rejected() {
        assert!(
            DiscoverySelectors::parse(
                r#"[{"matchExpressions": [{"key": "a", "operator": "Maybe"}]}]"#
            )
            .is_err()
        );
        assert!(
            DiscoverySelectors::parse(
                r#"[{"matchExpressions": [{"key": "a", "operator": "In"}]}]"#
            )
            .is_err()
        );
        assert!(DiscoverySelectors::parse("{").is_err());
    }
}
