//! PeerAuthentication: port-level mTLS needs a workload selector.

use super::{Checker, Path, selectors};
use crate::security::PeerAuthentication;

pub fn validate(v: &mut Checker, at: &Path, pa: &PeerAuthentication) {
    let empty_selector = pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    // The map cannot tell "absent" from "{}" once parsed; both mean no
    // port-level settings, which Istio accepts when absent.
    if empty_selector && !pa.port_level_mtls.is_empty() {
        v.error(&at.field("portLevelMtls"), "portLevelMtls needs a selector with labels: mesh- and namespace-wide policies cannot set it");
    }
    for port in pa.port_level_mtls.keys() {
        let valid = port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        v.require(
            &at.field("portLevelMtls").key(port),
            valid,
            format!("{port:?} is not a port number in 1..65535"),
        );
    }
    selectors::workload_selector(v, &at.field("selector"), pa.selector.as_ref());
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn pa(spec: &str) -> String {
        doc("security.istio.io/v1", "PeerAuthentication", spec)
    }

    #[test]
    fn port_level_mtls() {
        assert_valid(&pa(
            "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    '8080': {mode: DISABLE}\n",
        ));
        assert_one_error(
            &pa(
                "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    http: {mode: DISABLE}\n",
            ),
            "spec.portLevelMtls[http]",
        );
        assert_one_error(
            &pa(
                "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    '70000': {mode: DISABLE}\n",
            ),
            "spec.portLevelMtls[70000]",
        );
        assert_one_error(
            &pa("  selector: {}\n  portLevelMtls:\n    '8080': {mode: DISABLE}\n"),
            "spec.portLevelMtls",
        );
    }

    #[test]
    fn selectors() {
        assert_one_error(
            &pa("  selector: {matchLabels: {'app*': a}}\n"),
            "spec.selector.matchLabels[app*]",
        );
        assert_warning(
            &pa("  selector: {}\n  mtls: {mode: STRICT}\n"),
            "spec.selector.matchLabels",
        );
    }
}
