//! Runs the generated CRDs' CEL rules the way the API server does (every
//! `x-kubernetes-validations` rule, with `self` bound to the value its schema
//! node describes) over our documents: each `tests/fixtures/cel/` fixture must
//! break the rule it is named after, and valid configuration (the bookinfo
//! samples, the repository's own config) must break none. Together with
//! `crd_cel_rules.rs` (galley refuses the same fixtures at the same fields)
//! this shows the two enforcement points agree.
//!
//! The interpreter is cel-rust with its strings extension; the Kubernetes
//! library functions the rules use (`isURL`, `url(..).getScheme()`) are
//! approximated below.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::extractors::This;
use cel::{Context, Env, Program};
use mesh_config::crd::cel_rules;
use mesh_config::{Kind, crd};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// A JSON value serialized the way the API server's CEL sees it: every
/// integer an `int`.
struct AsCel<'a>(&'a Value);

impl Serialize for AsCel<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Number(n) => match n.as_i64() {
                Some(i) => serializer.serialize_i64(i),
                None => serializer.serialize_f64(n.as_f64().unwrap()),
            },
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&AsCel(item))?;
                }
                seq.end()
            }
            Value::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, &AsCel(value))?;
                }
                map.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// The scheme of `scheme://rest`, or "" (Kubernetes' `url(..).getScheme()`).
fn scheme(text: &str) -> &str {
    match text.split_once("://") {
        Some((scheme, rest))
            if !rest.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            scheme
        }
        _ => "",
    }
}

struct Rules {
    env: Arc<Env>,
}

impl Rules {
    fn new() -> Rules {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings).unwrap();
        Rules { env: Arc::new(env) }
    }

    /// Whether `rule` holds for `value`; an evaluation error counts as a
    /// violation, as it does at the API server.
    fn holds(&self, rule: &str, value: &Value) -> Result<bool, String> {
        let program: Program = self.env.compile(rule).map_err(|e| e.to_string())?;
        let mut context = Context::with_env(Arc::clone(&self.env));
        context
            .add_function("isURL", |s: Arc<String>| !scheme(&s).is_empty())
            .unwrap();
        context.add_function("url", |s: Arc<String>| s).unwrap();
        context
            .add_function("getScheme", |This(s): This<Arc<String>>| {
                scheme(&s).to_string()
            })
            .unwrap();
        context.add_variable("self", AsCel(value)).unwrap();
        match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("{rule}: not a bool: {other:?}")),
            Err(error) => Err(format!("{rule}: {error}")),
        }
    }

    /// Every `(document path, rule, outcome)` of the rules in `schema` that
    /// do not hold for `doc`.
    fn violations(
        &self,
        schema: &Value,
        doc: &Value,
        at: &str,
        out: &mut Vec<(String, String, String)>,
    ) {
        for v in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let rule = v["rule"].as_str().unwrap();
            match self.holds(rule, doc) {
                Ok(true) => {}
                Ok(false) => out.push((at.into(), rule.into(), "false".into())),
                Err(error) => out.push((at.into(), rule.into(), error)),
            }
        }
        match doc {
            Value::Object(fields) => {
                for (name, value) in fields {
                    let child = &schema["properties"][name];
                    let child = if child.is_object() {
                        child
                    } else {
                        &schema["additionalProperties"]
                    };
                    if child.is_object() {
                        self.violations(child, value, &format!("{at}.{name}"), out);
                    }
                }
            }
            Value::Array(items) if schema["items"].is_object() => {
                for (i, item) in items.iter().enumerate() {
                    self.violations(&schema["items"], item, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
}

/// YAML to JSON as the API server converts it: map keys become strings.
fn to_json(yaml: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).unwrap(),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other).unwrap().trim().to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => to_json(tagged.value),
    }
}

fn kind_named(name: &str) -> Kind {
    *Kind::ALL
        .iter()
        .find(|k| k.info().kind == name)
        .unwrap_or_else(|| panic!("unknown kind {name}"))
}

/// The rules every document of a file breaks, as `(kind, path, rule, outcome)`.
fn violations_in(rules: &Rules, path: &Path) -> Vec<Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut all = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let yaml = serde_yaml_ng::Value::deserialize(document).unwrap();
        if yaml.is_null() {
            continue;
        }
        let doc = to_json(yaml);
        let kind = kind_named(doc["kind"].as_str().unwrap());
        let crd = crd::custom_resource_definition(kind);
        let mut found = Vec::new();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            rules.violations(schema, &doc["spec"], "spec", &mut found);
        }
        found.sort();
        found.dedup();
        all.push(found);
    }
    all
}

use serde::Deserialize;

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn each_fixture_breaks_the_cel_rule_it_is_named_after() {
    let rules = Rules::new();
    let all_rules = cel_rules::all_rules();
    let mut failures = Vec::new();
    for path in yaml_files(&manifest_dir().join("tests/fixtures/cel")) {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let rule = all_rules
            .iter()
            .filter(|r| stem == r.id || stem.starts_with(&format!("{}-", r.id)))
            .max_by_key(|r| r.id.len())
            .unwrap();
        let found = violations_in(&rules, &path).remove(0);
        // Broken by evaluating to false, not by failing to evaluate.
        if !found
            .iter()
            .any(|(_, r, outcome)| r == rule.rule && outcome == "false")
        {
            failures.push(format!(
                "{stem}: {} holds; broken instead: {found:#?}",
                rule.id
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_configuration_breaks_no_cel_rule() {
    let rules = Rules::new();
    let mut failures = Vec::new();
    let mut documents = 0;
    for dir in [
        "tests/fixtures/istio-bookinfo",
        "tests/fixtures/bookinfo",
        "../../deploy/local/config",
    ] {
        for path in yaml_files(&manifest_dir().join(dir)) {
            for (i, found) in violations_in(&rules, &path).into_iter().enumerate() {
                documents += 1;
                if !found.is_empty() {
                    failures.push(format!("{}: document {i}: {found:#?}", path.display()));
                }
            }
        }
    }
    assert!(documents >= 20, "only {documents} documents");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_kubernetes_url_helpers_read_schemes() {
    let rules = Rules::new();
    let rule = "isURL(self) && url(self).getScheme() in ['http', 'https']";
    assert_eq!(
        rules.holds(rule, &"https://example.com/jwks".into()),
        Ok(true)
    );
    assert_eq!(
        rules.holds(rule, &"ftp://example.com/jwks".into()),
        Ok(false)
    );
    assert_eq!(rules.holds(rule, &"example.com".into()), Ok(false));
}
