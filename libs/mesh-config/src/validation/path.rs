//! Field paths such as `spec.http[0].route[1].weight`, built while walking a
//! resource so that every finding names the field it is about.

use std::fmt;

/// A path into a document, cheap to extend: each step returns a new path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn root(name: &str) -> Path {
        Path(name.to_string())
    }

    /// `a` -> `a.name`
    pub fn field(&self, name: &str) -> Path {
        Path(format!("{}.{name}", self.0))
    }

    /// `a` -> `a[3]`
    pub fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }

    /// `a` -> `a[key]`, for map entries (labels, headers, ports).
    pub fn key(&self, key: &str) -> Path {
        Path(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_kubernetes_style_paths() {
        let spec = Path::root("spec");
        let weight = spec
            .field("http")
            .index(0)
            .field("route")
            .index(1)
            .field("weight");
        assert_eq!(weight.to_string(), "spec.http[0].route[1].weight");
        assert_eq!(
            spec.field("portLevelMtls").key("8080").to_string(),
            "spec.portLevelMtls[8080]"
        );
    }
}
