//! Rotation of a self-signed root, in three steps that each leave the CA
//! directory in a state a restarted citadel picks up where it left off:
//!
//! 1. **Trust**: a new root is made and added to the trust bundle
//!    (`root-cert.pem`), kept aside in `next-ca-*.pem`; nothing is signed
//!    with it yet, so workloads have time to learn it.
//! 2. **Sign**: after the propagation delay the new root becomes the signing
//!    CA; the previous roots stay in the bundle, so certificates issued before
//!    and after the switch keep trusting each other.
//! 3. **Retire**: after the overlap the previous roots leave the bundle.
//!
//! Plug-in CAs are the operator's to rotate (by replacing the files, which
//! citadel reloads), so only a directory holding a self-signed root is
//! rotated here.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::authority::{
    AuthorityError, CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, CaFiles, ROOT_CERT_FILE, RootKey,
    cert_ders, create_self_signed_root_valid_for, der_to_pem, io_error, parse_cert,
    read_optional_file, single_cert_der, write_file_atomically,
};

/// The root made in step 1, trusted but not yet signing.
pub const NEXT_CA_CERT_FILE: &str = "next-ca-cert.pem";
pub const NEXT_CA_KEY_FILE: &str = "next-ca-key.pem";
/// Which roots leave the bundle in step 3, and when.
pub const PREVIOUS_ROOTS_FILE: &str = "previous-roots.json";

/// When and how the self-signed root is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate when less than this percentage of the root's lifetime remains
    /// (Istio's default is 20); 0 never rotates.
    pub grace_period_percentile: u32,
    /// Lifetime of a new root.
    pub root_validity: Duration,
    /// How long a new root is trusted before anything is signed with it.
    pub propagation_delay: Duration,
    /// How long the previous roots stay trusted once the new one signs; at
    /// least the longest workload certificate lifetime, so no certificate
    /// outlives the trust in its root.
    pub overlap: Duration,
}

/// What one call to [`advance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationStep {
    /// A new root was added to the trust bundle.
    NewRootTrusted,
    /// The new root now signs; the previous roots leave the bundle at `retire_at`.
    NewRootSigning { retire_at: OffsetDateTime },
    /// The previous roots left the bundle.
    PreviousRootsRetired { count: usize },
}

/// The roots step 3 removes, by SHA-256 of their DER.
#[derive(Debug, Serialize, Deserialize)]
struct PreviousRoots {
    retire_at_unix: i64,
    sha256: Vec<String>,
}

/// Takes the rotation of the self-signed root in `dir` one step further when
/// one is due at `now`; does nothing to a plug-in CA. `new_root_key` makes the
/// key of a new root (the same type as the current one is expected).
pub fn advance(
    dir: &Path,
    organization: &str,
    policy: &RotationPolicy,
    now: OffsetDateTime,
    new_root_key: &dyn Fn() -> Result<RootKey, AuthorityError>,
) -> Result<Option<RotationStep>, AuthorityError> {
    let files = CaFiles::read_from(dir)?;
    if let Some(next) = NextRoot::read(dir)? {
        return next.advance(dir, &files, policy, now);
    }
    if let Some(previous) = read_previous_roots(dir)? {
        return retire_if_due(dir, &files, previous, now);
    }
    if is_self_signed_root(&files)? && is_due(&files.ca_cert, policy, now)? {
        let next =
            create_self_signed_root_valid_for(organization, new_root_key()?, policy.root_validity)?;
        write_file_atomically(&dir.join(NEXT_CA_KEY_FILE), &next.ca_key, 0o600)?;
        write_file_atomically(&dir.join(NEXT_CA_CERT_FILE), &next.ca_cert, 0o644)?;
        add_to_bundle(dir, &files, &next.ca_cert)?;
        return Ok(Some(RotationStep::NewRootTrusted));
    }
    Ok(None)
}

/// The root of step 1.
struct NextRoot {
    cert: String,
    key: String,
}

impl NextRoot {
    fn read(dir: &Path) -> Result<Option<Self>, AuthorityError> {
        let cert = read_optional_file(&dir.join(NEXT_CA_CERT_FILE))?;
        let key = read_optional_file(&dir.join(NEXT_CA_KEY_FILE))?;
        Ok(cert.zip(key).map(|(cert, key)| Self { cert, key }))
    }

    fn advance(
        self,
        dir: &Path,
        files: &CaFiles,
        policy: &RotationPolicy,
        now: OffsetDateTime,
    ) -> Result<Option<RotationStep>, AuthorityError> {
        // A crash between writing the new key and the new certificate leaves
        // the key already in place: finish the switch.
        if files.ca_key == self.key {
            return self.activate(dir, files, policy, now).map(Some);
        }
        let next_der = single_cert_der(NEXT_CA_CERT_FILE, &self.cert)?;
        if !cert_ders(ROOT_CERT_FILE, &files.root_cert)?.contains(&next_der) {
            add_to_bundle(dir, files, &self.cert)?;
            return Ok(Some(RotationStep::NewRootTrusted));
        }
        if now < bundle_written_at(dir)? + policy.propagation_delay {
            return Ok(None);
        }
        self.activate(dir, files, policy, now).map(Some)
    }

    /// Step 2: the new root signs, the previous roots stay trusted.
    fn activate(
        self,
        dir: &Path,
        files: &CaFiles,
        policy: &RotationPolicy,
        now: OffsetDateTime,
    ) -> Result<RotationStep, AuthorityError> {
        let next_der = single_cert_der(NEXT_CA_CERT_FILE, &self.cert)?;
        let previous: Vec<Vec<u8>> = cert_ders(ROOT_CERT_FILE, &files.root_cert)?
            .into_iter()
            .filter(|der| *der != next_der)
            .collect();
        let retire_at = now + policy.overlap;
        let record = PreviousRoots {
            retire_at_unix: retire_at.unix_timestamp(),
            sha256: previous.iter().map(|der| fingerprint(der)).collect(),
        };
        let record = serde_json::to_string_pretty(&record).expect("plain data serializes");
        write_file_atomically(&dir.join(PREVIOUS_ROOTS_FILE), &record, 0o644)?;
        let bundle: String = std::iter::once(&next_der)
            .chain(&previous)
            .map(|der| der_to_pem(der))
            .collect();
        write_file_atomically(&dir.join(ROOT_CERT_FILE), &bundle, 0o644)?;
        write_file_atomically(&dir.join(CA_KEY_FILE), &self.key, 0o600)?;
        write_file_atomically(&dir.join(CERT_CHAIN_FILE), &self.cert, 0o644)?;
        write_file_atomically(&dir.join(CA_CERT_FILE), &self.cert, 0o644)?;
        remove_file(&dir.join(NEXT_CA_CERT_FILE))?;
        remove_file(&dir.join(NEXT_CA_KEY_FILE))?;
        Ok(RotationStep::NewRootSigning { retire_at })
    }
}

/// Step 3, once the overlap has passed.
fn retire_if_due(
    dir: &Path,
    files: &CaFiles,
    previous: PreviousRoots,
    now: OffsetDateTime,
) -> Result<Option<RotationStep>, AuthorityError> {
    if now.unix_timestamp() < previous.retire_at_unix {
        return Ok(None);
    }
    let bundle = cert_ders(ROOT_CERT_FILE, &files.root_cert)?;
    let (retired, kept): (Vec<_>, Vec<_>) = bundle
        .into_iter()
        .partition(|der| previous.sha256.contains(&fingerprint(der)));
    if kept.is_empty() {
        // Never leave an empty bundle, whatever the record says.
        return Err(AuthorityError::InvalidFile {
            path: dir.join(PREVIOUS_ROOTS_FILE),
            reason: "would retire every root of the trust bundle".into(),
        });
    }
    let bundle: String = kept.iter().map(|der| der_to_pem(der)).collect();
    write_file_atomically(&dir.join(ROOT_CERT_FILE), &bundle, 0o644)?;
    remove_file(&dir.join(PREVIOUS_ROOTS_FILE))?;
    Ok(Some(RotationStep::PreviousRootsRetired {
        count: retired.len(),
    }))
}

fn read_previous_roots(dir: &Path) -> Result<Option<PreviousRoots>, AuthorityError> {
    let path = dir.join(PREVIOUS_ROOTS_FILE);
    let Some(text) = read_optional_file(&path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| AuthorityError::InvalidFile {
            path,
            reason: error.to_string(),
        })
}

/// A directory holds a self-signed root when its signing CA is its own issuer
/// and nothing sits above it.
fn is_self_signed_root(files: &CaFiles) -> Result<bool, AuthorityError> {
    let ca_der = single_cert_der(CA_CERT_FILE, &files.ca_cert)?;
    let chain = cert_ders(CERT_CHAIN_FILE, &files.cert_chain)?;
    if chain.iter().any(|der| *der != ca_der) {
        return Ok(false);
    }
    let cert = parse_cert(&ca_der)?;
    Ok(cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok())
}

/// Due once less than the grace percentile of the root's lifetime remains.
fn is_due(
    ca_cert: &str,
    policy: &RotationPolicy,
    now: OffsetDateTime,
) -> Result<bool, AuthorityError> {
    if policy.grace_period_percentile == 0 {
        return Ok(false);
    }
    let der = single_cert_der(CA_CERT_FILE, ca_cert)?;
    let cert = parse_cert(&der)?;
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    let grace = (not_after - not_before) * policy.grace_period_percentile.min(100) / 100;
    Ok(now >= not_after - grace)
}

fn add_to_bundle(dir: &Path, files: &CaFiles, root_pem: &str) -> Result<(), AuthorityError> {
    let mut bundle = files.root_cert.clone();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(root_pem);
    write_file_atomically(&dir.join(ROOT_CERT_FILE), &bundle, 0o644)
}

/// When the bundle was last written: in step 1, when the new root joined it.
fn bundle_written_at(dir: &Path) -> Result<OffsetDateTime, AuthorityError> {
    let path = dir.join(ROOT_CERT_FILE);
    let modified = fs::metadata(&path)
        .and_then(|metadata| metadata.modified())
        .map_err(|source| io_error(&path, source))?;
    Ok(OffsetDateTime::from(modified.max(SystemTime::UNIX_EPOCH)))
}

fn fingerprint(der: &[u8]) -> String {
    digest(&SHA256, der)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn remove_file(path: &Path) -> Result<(), AuthorityError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io_error(path, error)),
        _ => Ok(()),
    }
}
