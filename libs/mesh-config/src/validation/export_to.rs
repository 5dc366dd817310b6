//! `exportTo`: `.` (own namespace), `*` (everyone), `~` (no one; ServiceEntry
//! only) or namespace names, without duplicates or contradictions.

use std::collections::BTreeSet;

use super::{Checker, Path, names::is_dns_label};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    ServiceEntry,
    DestinationRuleWithSelector,
    Other,
}

pub fn validate(v: &mut Checker, at: &Path, export_to: &[String], owner: Owner) {
    let own_namespace = v.namespace().map(str::to_string);
    let mut seen = BTreeSet::new();
    for (i, entry) in export_to.iter().enumerate() {
        let at = at.index(i);
        // `.` and the resource's own namespace name the same thing.
        let key = match (entry.as_str(), &own_namespace) {
            (".", Some(ns)) => ns.clone(),
            _ => entry.clone(),
        };
        if !seen.insert(key) {
            v.error(&at, format!("{entry:?} is listed twice"));
            continue;
        }
        match entry.as_str() {
            "." | "*" => {}
            "~" if owner == Owner::ServiceEntry => {}
            "~" => v.error(
                &at,
                "\"~\" (export to no one) is only allowed on ServiceEntry",
            ),
            ns => v.require(
                &at,
                is_dns_label(ns),
                format!("{ns:?} is not a namespace name, \".\" or \"*\""),
            ),
        }
    }
    if export_to.len() > 1 {
        if seen.contains("*") {
            v.error(
                at,
                "\"*\" exports to every namespace and cannot be combined with others",
            );
        }
        if seen.contains("~") {
            v.error(
                at,
                "\"~\" exports to no namespace and cannot be combined with others",
            );
        }
    }
    if owner == Owner::DestinationRuleWithSelector && !export_to.is_empty() {
        let local = export_to
            .iter()
            .all(|e| e == "." || Some(e) == own_namespace.as_ref());
        v.require(
            at,
            local && seen.len() == 1,
            "a DestinationRule with a workloadSelector may only be exported to its own namespace",
        );
    }
}
