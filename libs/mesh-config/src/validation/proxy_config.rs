//! ProxyConfig: selector and concurrency.

use super::{Checker, Path, selectors};
use crate::networking::ProxyConfig;

pub fn validate(v: &mut Checker, at: &Path, p: &ProxyConfig) {
    selectors::workload_selector(v, &at.field("selector"), p.selector.as_ref());
    if let Some(concurrency) = p.concurrency {
        v.require(
            &at.field("concurrency"),
            concurrency >= 0,
            "concurrency cannot be negative (0 means one worker per core)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn concurrency_and_selector() {
        let pc = |spec: &str| doc("networking.istio.io/v1beta1", "ProxyConfig", spec);
        assert_valid(&pc(
            "  concurrency: 0\n  selector: {matchLabels: {app: a}}\n",
        ));
        assert_one_error(&pc("  concurrency: -2\n"), "spec.concurrency");
        assert_one_error(
            &pc("  selector: {matchLabels: {app: '*'}}\n"),
            "spec.selector.matchLabels[app]",
        );
    }
}
