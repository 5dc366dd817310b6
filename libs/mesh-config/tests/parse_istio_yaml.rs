//! Reading Istio YAML as users write it: Istio's own samples must parse, and a
//! mistake must be reported with file, document, field path and line.

use std::path::PathBuf;

use mesh_config::{AnyResource, Kind, parse_all, parse_documents};

fn bookinfo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-bookinfo")
}

#[test]
fn every_istio_bookinfo_sample_parses() {
    let mut files = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(bookinfo_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let resources = parse_all(&name, &text).unwrap_or_else(|errors| {
            panic!(
                "{name} did not parse:\n{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert!(!resources.is_empty(), "{name} held no resources");
        kinds.extend(resources.iter().map(|r| r.resource.kind()));
        files += 1;
    }
    assert!(files >= 20, "only {files} sample files found");
    for expected in [
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
    ] {
        assert!(
            kinds.contains(&expected),
            "no {expected:?} among the samples"
        );
    }
}

#[test]
fn sample_values_are_read_not_just_accepted() {
    let text =
        std::fs::read_to_string(bookinfo_dir().join("virtual-service-reviews-80-20.yaml")).unwrap();
    let resources = parse_all("virtual-service-reviews-80-20.yaml", &text).unwrap();
    let AnyResource::VirtualService(vs) = &resources[0].resource else {
        panic!("expected a VirtualService");
    };
    assert_eq!(vs.metadata.name, "reviews");
    assert_eq!(vs.spec.hosts, vec!["reviews".to_string()]);
    let weights: Vec<_> = vs.spec.http[0].route.iter().map(|r| r.weight).collect();
    assert_eq!(weights, vec![Some(80), Some(20)]);
}

const TWO_DOCS_SECOND_BAD: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      wieght: 80
";

#[test]
fn unknown_field_names_file_document_path_and_line() {
    let results = parse_documents("reviews.yaml", TWO_DOCS_SECOND_BAD);
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok(), "the good document is still read");
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.location.document, 2);
    assert_eq!(
        error.field_path.as_deref(),
        Some("spec.http[0].route[0].wieght")
    );
    assert_eq!(error.line, 20);
    let text = error.to_string();
    assert!(
        text.starts_with("reviews.yaml: document 2, line 20"),
        "{text}"
    );
    assert!(text.contains("unknown field `wieght`"), "{text}");
}

#[test]
fn wrong_type_names_the_field_and_line() {
    let text = TWO_DOCS_SECOND_BAD.replace("wieght: 80", "weight: eighty");
    let results = parse_documents("reviews.yaml", &text);
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(
        error.field_path.as_deref(),
        Some("spec.http[0].route[0].weight")
    );
    assert_eq!(error.line, 20);
    assert!(error.message.contains("invalid type"), "{error}");
}

#[test]
fn bad_api_version_is_reported_on_its_line() {
    let text = TWO_DOCS_SECOND_BAD.replace("networking.istio.io/v1beta1", "networking.istio.io/v2");
    let results = parse_documents("reviews.yaml", &text);
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.field_path.as_deref(), Some("apiVersion"));
    assert_eq!(error.line, 8);
    assert!(
        error.to_string().contains("networking.istio.io/v1alpha3"),
        "{error}"
    );
}

#[test]
fn unknown_kind_and_missing_type_are_errors() {
    let results = parse_documents(
        "x.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualServise\n---\nmetadata: {}\n",
    );
    let first = results[0].as_ref().unwrap_err();
    assert_eq!(first.field_path.as_deref(), Some("kind"));
    assert!(first.message.contains("unknown kind"), "{first}");
    let second = results[1].as_ref().unwrap_err();
    assert_eq!(second.field_path.as_deref(), Some("apiVersion"));
    assert_eq!(second.line, 4);
}

#[test]
fn malformed_yaml_is_an_error_with_a_line() {
    let results = parse_documents(
        "x.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nspec:\n  selector: [unclosed\n",
    );
    let error = results[0].as_ref().unwrap_err();
    assert!(error.line >= 4, "{error}");
}

#[test]
fn json_documents_parse_with_the_same_errors() {
    let json = r#"{
  "apiVersion": "security.istio.io/v1",
  "kind": "PeerAuthentication",
  "metadata": {"name": "default", "namespace": "istio-system"},
  "spec": {"mtls": {"mode": "STRICT"}}
}"#;
    let resources = parse_all("pa.json", json).unwrap();
    assert_eq!(resources[0].resource.kind(), Kind::PeerAuthentication);
    assert_eq!(
        resources[0].resource.metadata().namespace.as_deref(),
        Some("istio-system")
    );

    let bad = json.replace("\"mode\": \"STRICT\"", "\"mode\": \"STRICTER\"");
    let error = &parse_all("pa.json", &bad).unwrap_err()[0];
    assert_eq!(error.field_path.as_deref(), Some("spec.mtls.mode"));
    assert_eq!(error.line, 5);
}
