//! citadel's in-cluster CA (`--kubernetes`): the self-signed root kept in
//! Istio's `istio-ca-secret` Secret in the control plane's namespace, so every
//! replica signs with the same root and a restarted pod keeps it.
//!
//! A plug-in CA (Istio's `cacerts`, mounted as `--ca-dir`) keeps precedence:
//! the Secret is then neither read nor written. Otherwise the Secret is read;
//! when absent, a self-signed root is made and the Secret created. Two
//! replicas starting together both try to create it: the API server lets one
//! win (`409 AlreadyExists` for the other), and the loser re-reads the Secret
//! and uses the winner's root. An existing Secret is never overwritten, not
//! even a malformed one (citadel then refuses to start, naming the key).
//!
//! The root is then written to `--ca-dir` with a marker file, so the CA
//! directory code (loading, reloading) is the same in both modes, and a
//! directory holding a CA without the marker is recognised as a plug-in CA.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::authority::{
    Authority, AuthorityError, CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, CaFiles, ROOT_CERT_FILE,
    SigningPolicy, io_error, write_file_atomically,
};

/// Istio's self-signed CA Secret (`security/pkg/pki/ca`: `CASecret`).
pub const CA_SECRET: &str = "istio-ca-secret";
/// Istio's type for it (`istioCASecretType`).
pub const CA_SECRET_TYPE: &str = "istio.io/ca-root";
/// Written into `--ca-dir` beside a CA copied from [`CA_SECRET`]; a directory
/// holding a CA without it holds a plug-in CA.
pub const FROM_SECRET_MARKER: &str = ".from-istio-ca-secret";

/// How the root was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSecretOutcome {
    /// The Secret existed and was used.
    Existing,
    /// This replica made the root and created the Secret.
    Created,
    /// Another replica created the Secret first; its root is used.
    CreatedByAnotherReplica,
}

#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("Secret {namespace}/{CA_SECRET}: {source}")]
    Kube {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{CA_SECRET}: key {key} is missing or empty; the Secret is left as it is"
    )]
    MissingKey {
        namespace: String,
        key: &'static str,
    },
    #[error(
        "Secret {namespace}/{CA_SECRET}: key {key} is not UTF-8 PEM; the Secret is left as it is"
    )]
    NotUtf8 {
        namespace: String,
        key: &'static str,
    },
    /// The keys are there but do not make a CA; `source` names the key.
    #[error("Secret {namespace}/{CA_SECRET}: {source}; the Secret is left as it is")]
    Invalid {
        namespace: String,
        #[source]
        source: AuthorityError,
    },
    #[error("Secret {namespace}/{CA_SECRET}: creating it conflicted, yet it cannot be read back")]
    Vanished { namespace: String },
    #[error("creating the self-signed root: {0}")]
    Generation(#[source] AuthorityError),
}

/// Reads the root from `namespace`'s [`CA_SECRET`], or makes one with
/// `make_root` and creates the Secret; see the module docs.
pub async fn load_or_create(
    client: Client,
    namespace: &str,
    make_root: impl FnOnce() -> Result<CaFiles, AuthorityError>,
) -> Result<(CaFiles, CaSecretOutcome), CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_error = |source| CaSecretError::Kube {
        namespace: namespace.to_owned(),
        source,
    };
    if let Some(secret) = api.get_opt(CA_SECRET).await.map_err(kube_error)? {
        return Ok((
            ca_files_from_secret(namespace, &secret)?,
            CaSecretOutcome::Existing,
        ));
    }
    let files = make_root().map_err(CaSecretError::Generation)?;
    let secret = secret_from_ca_files(namespace, &files);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((files, CaSecretOutcome::Created)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let Some(secret) = api.get_opt(CA_SECRET).await.map_err(kube_error)? else {
                return Err(CaSecretError::Vanished {
                    namespace: namespace.to_owned(),
                });
            };
            Ok((
                ca_files_from_secret(namespace, &secret)?,
                CaSecretOutcome::CreatedByAnotherReplica,
            ))
        }
        Err(source) => Err(kube_error(source)),
    }
}

/// The CA in `secret`: `ca-cert.pem` and `ca-key.pem` required,
/// `root-cert.pem` defaulting to `ca-cert.pem` (Istio leaves it out of older
/// Secrets), `cert-chain.pem` optional; checked to make a usable CA.
pub fn ca_files_from_secret(namespace: &str, secret: &Secret) -> Result<CaFiles, CaSecretError> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let key = |key: &'static str| -> Result<Option<String>, CaSecretError> {
        match data.get(key) {
            None => Ok(None),
            Some(ByteString(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Some(ByteString(bytes)) => {
                String::from_utf8(bytes.clone())
                    .map(Some)
                    .map_err(|_| CaSecretError::NotUtf8 {
                        namespace: namespace.to_owned(),
                        key,
                    })
            }
        }
    };
    let required = |name: &'static str| {
        key(name)?.ok_or_else(|| CaSecretError::MissingKey {
            namespace: namespace.to_owned(),
            key: name,
        })
    };
    let ca_cert = required(CA_CERT_FILE)?;
    let ca_key = required(CA_KEY_FILE)?;
    let files = CaFiles {
        root_cert: key(ROOT_CERT_FILE)?.unwrap_or_else(|| ca_cert.clone()),
        cert_chain: key(CERT_CHAIN_FILE)?.unwrap_or_default(),
        ca_cert,
        ca_key,
    };
    Authority::from_files(&files, SigningPolicy::default()).map_err(|source| {
        CaSecretError::Invalid {
            namespace: namespace.to_owned(),
            source,
        }
    })?;
    Ok(files)
}

/// The Secret Istio would create for a self-signed root: `cert-chain.pem`
/// empty when the chain is only the root itself.
pub fn secret_from_ca_files(namespace: &str, files: &CaFiles) -> Secret {
    let cert_chain = if files.cert_chain.trim() == files.ca_cert.trim() {
        String::new()
    } else {
        files.cert_chain.clone()
    };
    let data = [
        (CA_CERT_FILE, &files.ca_cert),
        (CA_KEY_FILE, &files.ca_key),
        (CERT_CHAIN_FILE, &cert_chain),
        (ROOT_CERT_FILE, &files.root_cert),
    ]
    .into_iter()
    .map(|(key, pem)| (key.to_owned(), ByteString(pem.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(CA_SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Whether `dir` holds a plug-in CA (one not copied from [`CA_SECRET`]).
pub fn holds_plugin_ca(dir: &Path) -> bool {
    Authority::holds_ca(dir) && !dir.join(FROM_SECRET_MARKER).exists()
}

/// Writes a CA read from [`CA_SECRET`] to `dir`, marked as such.
pub fn write_from_secret(dir: &Path, files: &CaFiles) -> Result<(), AuthorityError> {
    std::fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
    // The marker first: a half-written directory is never taken for a plug-in.
    write_file_atomically(&dir.join(FROM_SECRET_MARKER), CA_SECRET, 0o644)?;
    files.write_to(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{RootKey, create_self_signed_root};

    #[test]
    fn secret_has_istios_type_and_keys() {
        let files = create_self_signed_root("Trireme", RootKey::GenerateEcdsaP256).unwrap();
        let secret = secret_from_ca_files("istio-system", &files);
        assert_eq!(secret.type_.as_deref(), Some("istio.io/ca-root"));
        let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "ca-cert.pem",
                "ca-key.pem",
                "cert-chain.pem",
                "root-cert.pem"
            ]
        );
        let data = secret.data.as_ref().unwrap();
        assert!(
            data[CERT_CHAIN_FILE].0.is_empty(),
            "Istio's self-signed Secret"
        );
        let read = ca_files_from_secret("istio-system", &secret).unwrap();
        assert_eq!(
            (read.ca_cert, read.ca_key, read.root_cert),
            (files.ca_cert, files.ca_key, files.root_cert)
        );
    }

    #[test]
    fn root_cert_defaults_to_ca_cert() {
        let files = create_self_signed_root("Trireme", RootKey::GenerateEcdsaP256).unwrap();
        let mut secret = secret_from_ca_files("istio-system", &files);
        secret.data.as_mut().unwrap().remove(ROOT_CERT_FILE);
        let read = ca_files_from_secret("istio-system", &secret).unwrap();
        assert_eq!(read.root_cert, files.ca_cert);
    }

    #[test]
    fn plugin_ca_is_a_ca_dir_without_the_marker() {
        let files = create_self_signed_root("Trireme", RootKey::GenerateEcdsaP256).unwrap();
        let plugin = tempfile::tempdir().unwrap();
        assert!(!holds_plugin_ca(plugin.path()));
        files.write_to(plugin.path()).unwrap();
        assert!(holds_plugin_ca(plugin.path()));
        let copied = tempfile::tempdir().unwrap();
        write_from_secret(copied.path(), &files).unwrap();
        assert!(Authority::holds_ca(copied.path()));
        assert!(!holds_plugin_ca(copied.path()));
        assert_eq!(CaFiles::read_from(copied.path()).unwrap(), files);
    }
}
