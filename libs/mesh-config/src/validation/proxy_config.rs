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
