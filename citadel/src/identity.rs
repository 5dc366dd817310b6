//! SPIFFE workload identities of the form
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";

/// The longest SPIFFE ID we accept; the SPIFFE spec caps URIs at 2048 bytes.
const MAX_ID_LEN: usize = 2048;

/// Kubernetes caps namespace and service-account names at 253 characters.
const MAX_NAME_LEN: usize = 253;

/// Why a string is not a workload SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("SPIFFE ID must start with `spiffe://`")]
    MissingScheme,
    #[error("SPIFFE ID must have the path /ns/<namespace>/sa/<service-account>")]
    MalformedPath,
    #[error("invalid trust domain {0:?}: lowercase letters, digits, '.', '-' and '_' only")]
    InvalidTrustDomain(String),
    #[error("invalid {kind} {value:?}: lowercase letters, digits, '.' and '-' only")]
    InvalidName { kind: &'static str, value: String },
}

/// A workload identity inside a trust domain. Every field has been validated,
/// so formatting one always yields a SPIFFE ID that parses back to itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        validate_trust_domain(trust_domain)?;
        validate_name("namespace", namespace)?;
        validate_name("service account", service_account)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The identity as the URI carried in a certificate's SAN.
    pub fn to_uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        if uri.len() > MAX_ID_LEN {
            return Err(IdentityError::TooLong);
        }
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or(IdentityError::MissingScheme)?;
        let (trust_domain, path) = rest.split_once('/').ok_or(IdentityError::MalformedPath)?;
        // Exactly four segments: no query, fragment, trailing slash or extra
        // segments may smuggle a second meaning into the identity.
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", namespace, "sa", service_account] => {
                Self::new(trust_domain, namespace, service_account)
            }
            _ => Err(IdentityError::MalformedPath),
        }
    }
}

fn validate_trust_domain(trust_domain: &str) -> Result<(), IdentityError> {
    let valid_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_');
    if trust_domain.is_empty() || trust_domain.len() > 255 || !trust_domain.chars().all(valid_char)
    {
        return Err(IdentityError::InvalidTrustDomain(trust_domain.to_owned()));
    }
    Ok(())
}

/// Namespaces and service accounts are Kubernetes DNS-subdomain names.
fn validate_name(kind: &'static str, value: &str) -> Result<(), IdentityError> {
    let valid_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-');
    let alphanumeric_ends = value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if value.is_empty()
        || value.len() > MAX_NAME_LEN
        || !alphanumeric_ends
        || !value.chars().all(valid_char)
    {
        return Err(IdentityError::InvalidName {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let uri = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
        let id: SpiffeId = uri.parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(id.to_uri(), uri);
    }

    #[test]
    fn refuses_malformed_ids() {
        let cases = [
            (
                "http://cluster.local/ns/a/sa/b",
                IdentityError::MissingScheme,
            ),
            ("spiffe://cluster.local", IdentityError::MalformedPath),
            (
                "spiffe://cluster.local/ns/a/sa/b/",
                IdentityError::MalformedPath,
            ),
            (
                "spiffe://cluster.local/ns/a/sa/b/c",
                IdentityError::MalformedPath,
            ),
            (
                "spiffe://cluster.local/sa/b/ns/a",
                IdentityError::MalformedPath,
            ),
            (
                "spiffe://Cluster.local/ns/a/sa/b",
                IdentityError::InvalidTrustDomain("Cluster.local".into()),
            ),
            (
                "spiffe://cluster.local/ns//sa/b",
                IdentityError::InvalidName {
                    kind: "namespace",
                    value: String::new(),
                },
            ),
            (
                "spiffe://cluster.local/ns/a/sa/b?x=y",
                IdentityError::InvalidName {
                    kind: "service account",
                    value: "b?x=y".into(),
                },
            ),
        ];
        for (uri, expected) in cases {
            assert_eq!(uri.parse::<SpiffeId>(), Err(expected), "{uri}");
        }
    }

    #[test]
    fn refuses_overlong_ids() {
        let uri = format!("spiffe://cluster.local/ns/a/sa/{}", "b".repeat(MAX_ID_LEN));
        assert_eq!(uri.parse::<SpiffeId>(), Err(IdentityError::TooLong));
    }
}
