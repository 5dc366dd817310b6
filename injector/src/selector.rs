//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), as the
//! injector config's `alwaysInjectSelector` / `neverInjectSelector` use them.

use std::collections::BTreeMap;

use serde::Deserialize;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement. As in Kubernetes, an
    /// empty selector matches everything.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self
                .match_expressions
                .iter()
                .all(|requirement| requirement.matches(labels))
    }
}

impl LabelSelectorRequirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let selector = selector(
            "matchLabels: {app: build}\nmatchExpressions:\n- {key: tier, operator: In, values: [ci, cd]}\n- {key: debug, operator: DoesNotExist}",
        );
        assert!(selector.matches(&labels(&[("app", "build"), ("tier", "ci")])));
        assert!(!selector.matches(&labels(&[("app", "build"), ("tier", "prod")])));
        assert!(!selector.matches(&labels(&[("app", "build"), ("tier", "ci"), ("debug", "1")])));
        assert!(!selector.matches(&labels(&[("tier", "ci")])));
    }

    #[test]
    fn not_in_matches_absent_keys_and_empty_matches_all() {
        let not_in = selector("matchExpressions: [{key: env, operator: NotIn, values: [prod]}]");
        assert!(not_in.matches(&labels(&[])));
        assert!(!not_in.matches(&labels(&[("env", "prod")])));
        assert!(LabelSelector::default().matches(&labels(&[("any", "thing")])));
        let exists = selector("matchExpressions: [{key: env, operator: Exists}]");
        assert!(exists.matches(&labels(&[("env", "")])));
    }

    #[test]
    fn an_unknown_operator_is_refused() {
        let error = serde_yaml_ng::from_str::<LabelSelector>(
            "matchExpressions: [{key: env, operator: Like}]",
        )
        .unwrap_err();
        assert!(error.to_string().contains("Like"), "{error}");
    }
}
