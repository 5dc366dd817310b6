//! Documents crafted to exhaust a parser (an alias expansion bomb, a huge
//! document) are refused quickly, before they are expanded or read.

use std::time::{Duration, Instant};

use mesh_config::{MAX_DOCUMENT_ALIASES, MAX_DOCUMENT_BYTES, parse_documents};

/// Generous: the refusal itself takes milliseconds; only a parser that
/// expanded the bomb would come near it.
const QUICKLY: Duration = Duration::from_secs(2);

fn refused_quickly(text: &str) -> String {
    let started = Instant::now();
    let results = parse_documents("hostile.yaml", text);
    let elapsed = started.elapsed();
    eprintln!("refused in {elapsed:?}");
    assert!(elapsed < QUICKLY * 5, "took {elapsed:?}");
    assert_eq!(results.len(), 1);
    let error = results.into_iter().next().unwrap().unwrap_err();
    error.to_string()
}

/// "Billion laughs": nine levels of nine aliases each, 9^9 strings expanded.
fn billion_laughs() -> String {
    let mut text = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: lol\n  annotations:\n    a0: &a0 \"lol\"\n",
    );
    for level in 1..=9 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        text.push_str(&format!("    a{level}: &a{level} [{refs}]\n"));
    }
    text.push_str("spec:\n  hosts: *a9\n");
    text
}

#[test]
fn an_alias_bomb_is_refused_before_expansion() {
    // 81 aliases: under the count limit, caught by the expansion walk.
    let message = refused_quickly(&billion_laughs());
    assert!(message.contains("alias expansion"), "{message}");
}

#[test]
fn a_document_with_many_aliases_is_refused() {
    let mut text = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: many\nspec:\n  hosts: &h [a]\n  exportTo:\n",
    );
    for _ in 0..=MAX_DOCUMENT_ALIASES {
        text.push_str("  - *h\n");
    }
    let message = refused_quickly(&text);
    assert!(
        message.contains(&format!("the limit is {MAX_DOCUMENT_ALIASES}")),
        "{message}"
    );
}

#[test]
fn a_wide_bomb_under_a_value_field_is_refused() {
    // One large anchor referenced through a doubling chain of few aliases;
    // `status` would keep whatever it expands to.
    let mut text = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: wide\nstatus:\n  big: &b0 [",
    );
    text.push_str(&vec!["x"; 10_000].join(","));
    text.push_str("]\n");
    for level in 1..=30 {
        text.push_str(&format!(
            "  b{level}: &b{level} [*b{}, *b{}]\n",
            level - 1,
            level - 1
        ));
    }
    let message = refused_quickly(&text);
    assert!(message.contains("alias expansion"), "{message}");
}

#[test]
fn a_few_aliases_are_still_read() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: &hosts [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n";
    let results = parse_documents("aliases.yaml", text);
    assert!(results[0].is_ok(), "{results:?}");
}

#[test]
fn a_ten_megabyte_document_is_refused_unread() {
    let mut text = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: huge\nspec:\n  hosts:\n",
    );
    while text.len() < 10 * 1024 * 1024 {
        text.push_str("  - a-host-name-that-takes-some-room.example.com\n");
    }
    let message = refused_quickly(&text);
    assert!(message.contains("document too large"), "{message}");
    assert!(
        message.contains(&format!("the limit is {MAX_DOCUMENT_BYTES}")),
        "{message}"
    );
}

#[test]
fn other_documents_of_the_file_are_still_read() {
    let text = format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers: []\n",
        billion_laughs()
    );
    let results = parse_documents("mixed.yaml", &text);
    assert_eq!(results.len(), 2);
    assert!(results[0].is_err());
    assert!(results[1].is_ok(), "{:?}", results[1]);
}
