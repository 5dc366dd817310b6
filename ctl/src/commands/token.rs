//! `trireme token`: development credentials for citadel's offline JWT
//! authentication (`--jwt-issuer`, `--jwks`) — a P-256 signing key with the
//! JWKS holding its public key, and ES256 tokens shaped like Kubernetes
//! projected service-account tokens. For local demos and workloads outside
//! Kubernetes; production tokens come from a real issuer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a P-256 signing key (PKCS#8 PEM, mode 0600) and a JWKS with its
    /// public key, to give citadel as `--jwks`.
    Keygen(KeygenArgs),
    /// Print an ES256 token for a service account, signed with a key from
    /// `keygen`.
    Mint(MintArgs),
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the private key.
    #[arg(long)]
    key_out: PathBuf,
    /// Where to write the JWKS (public key only).
    #[arg(long)]
    jwks_out: PathBuf,
    /// Key id; default: the key's RFC 7638 thumbprint, which `mint` also
    /// derives from the key.
    // Thumbprints are base64url and may start with '-'.
    #[arg(long, allow_hyphen_values = true)]
    kid: Option<String>,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct MintArgs {
    /// Private key written by `trireme token keygen`.
    #[arg(long)]
    key: PathBuf,
    /// `iss` claim; must equal citadel's `--jwt-issuer`.
    #[arg(long)]
    issuer: String,
    /// `aud` claim; must equal citadel's `--jwt-audience`.
    #[arg(long, default_value = "istio-ca")]
    audience: String,
    /// Namespace of the workload.
    #[arg(long, short = 'n')]
    namespace: String,
    /// Service account of the workload.
    #[arg(long)]
    service_account: String,
    /// Lifetime, e.g. `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Key id in the token header; default: the key's thumbprint, as `keygen`.
    // Thumbprints are base64url and may start with '-'.
    #[arg(long, allow_hyphen_values = true)]
    kid: Option<String>,
}

pub fn run(args: &TokenArgs) -> anyhow::Result<bool> {
    match &args.command {
        TokenCommand::Keygen(args) => keygen(args),
        TokenCommand::Mint(args) => mint(args),
    }?;
    Ok(true)
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = SigningKey::generate()?;
    let kid = args.kid.clone().unwrap_or_else(|| key.thumbprint());
    let jwks = json!({"keys": [key.jwk(&kid)]});
    let jwks = format!("{}\n", serde_json::to_string_pretty(&jwks)?);
    write_file(&args.key_out, key.pem().as_bytes(), 0o600, args.force).context("--key-out")?;
    write_file(&args.jwks_out, jwks.as_bytes(), 0o644, args.force).context("--jwks-out")?;
    eprintln!(
        "wrote signing key {} and JWKS {} (kid {kid})",
        args.key_out.display(),
        args.jwks_out.display()
    );
    Ok(())
}

fn mint(args: &MintArgs) -> anyhow::Result<()> {
    check_name("--namespace", &args.namespace)?;
    check_name("--service-account", &args.service_account)?;
    let key = SigningKey::read(&args.key).context("--key")?;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(args.kid.clone().unwrap_or_else(|| key.thumbprint()));
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = jsonwebtoken::encode(&header, &claims(args, now), &key.encoding_key())
        .with_context(|| format!("signing with {}", args.key.display()))?;
    println!("{token}");
    Ok(())
}

/// The claims of a projected service-account token: `sub` names the
/// service account, and the `kubernetes.io` object repeats it.
fn claims(args: &MintArgs, now: u64) -> Value {
    json!({
        "iss": args.issuer,
        "aud": args.audience,
        "sub": format!("system:serviceaccount:{}:{}", args.namespace, args.service_account),
        "iat": now,
        "nbf": now,
        "exp": now + args.ttl.as_secs(),
        "kubernetes.io": {
            "namespace": args.namespace,
            "serviceaccount": {"name": args.service_account},
        },
    })
}

/// A P-256 ECDSA key: PKCS#8 and the uncompressed public point.
struct SigningKey {
    pkcs8: Vec<u8>,
    /// 0x04 || x || y.
    public: Vec<u8>,
}

impl SigningKey {
    fn generate() -> anyhow::Result<Self> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("generating a P-256 key failed"))?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec())
            .map_err(|reason| anyhow::anyhow!("generated key unusable: {reason}"))
    }

    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let block =
            pem::parse(&text).with_context(|| format!("{} is not a PEM file", path.display()))?;
        if block.tag() != "PRIVATE KEY" {
            bail!(
                "{} holds a {:?} PEM block, expected a PKCS#8 \"PRIVATE KEY\" (from `trireme token keygen`)",
                path.display(),
                block.tag()
            );
        }
        Self::from_pkcs8(block.into_contents()).map_err(|reason| {
            anyhow::anyhow!("{} is not a PKCS#8 P-256 key: {reason}", path.display())
        })
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, String> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|error| error.to_string())?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(Self { pkcs8, public })
    }

    fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    fn encoding_key(&self) -> EncodingKey {
        // jsonwebtoken takes PKCS#8 DER for EC keys.
        EncodingKey::from_ec_der(&self.pkcs8)
    }

    fn coordinates(&self) -> (String, String) {
        (
            URL_SAFE_NO_PAD.encode(&self.public[1..33]),
            URL_SAFE_NO_PAD.encode(&self.public[33..65]),
        )
    }

    fn jwk(&self, kid: &str) -> Value {
        let (x, y) = self.coordinates();
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"})
    }

    /// RFC 7638: SHA-256 over the required members in lexicographic order.
    fn thumbprint(&self) -> String {
        let (x, y) = self.coordinates();
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }
}

/// Writes a file created with `mode`; an existing file is kept unless `force`.
fn write_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).with_context(|| match path.exists() {
        true => format!("{} exists; pass --force to replace it", path.display()),
        false => format!("creating {}", path.display()),
    })?;
    // An overwritten file keeps its old mode; a key must not stay readable.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

/// Kubernetes names: lowercase letters, digits, '-' and '.'; at most 253.
fn check_name(flag: &str, value: &str) -> anyhow::Result<()> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid {
        bail!("{flag} {value:?}: use lowercase letters, digits, '-' and '.' (at most 253)");
    }
    Ok(())
}

/// Token lifetimes: a positive whole number of s, m, h or d.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let seconds = match unit {
        "s" => Some(number),
        "m" => number.checked_mul(60),
        "h" => number.checked_mul(3600),
        "d" => number.checked_mul(86_400),
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?} (use s, m, h or d)"
            ));
        }
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    if seconds == 0 {
        return Err("the lifetime must be positive".into());
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_positive_with_a_unit() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert!(parse_ttl("0h").unwrap_err().contains("positive"));
        assert!(parse_ttl("-1h").unwrap_err().contains("whole number"));
        assert!(parse_ttl("10").unwrap_err().contains("no unit"));
        assert!(parse_ttl("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_ttl("99999999999999999999d").is_err());
    }

    #[test]
    fn names_are_kubernetes_names() {
        assert!(check_name("--namespace", "my-ns.v1").is_ok());
        for bad in ["", "Upper", "a:b", "a_b", &"a".repeat(254)] {
            let error = check_name("--namespace", bad).unwrap_err().to_string();
            assert!(error.starts_with("--namespace"), "{error}");
        }
    }

    #[test]
    fn claims_look_like_a_projected_service_account_token() {
        let args = MintArgs {
            key: PathBuf::new(),
            issuer: "https://issuer.test".into(),
            audience: "istio-ca".into(),
            namespace: "ns".into(),
            service_account: "sa".into(),
            ttl: Duration::from_secs(3600),
            kid: None,
        };
        assert_eq!(
            claims(&args, 1000),
            json!({
                "iss": "https://issuer.test", "aud": "istio-ca",
                "sub": "system:serviceaccount:ns:sa",
                "iat": 1000, "nbf": 1000, "exp": 4600,
                "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa"}},
            })
        );
    }

    #[test]
    fn thumbprint_is_stable_and_matches_the_pem_round_trip() {
        let key = SigningKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, key.pem()).unwrap();
        let read = SigningKey::read(&path).unwrap();
        assert_eq!(read.public, key.public);
        assert_eq!(read.thumbprint(), key.thumbprint());
        assert_eq!(key.thumbprint().len(), 43, "base64url of 32 bytes");
    }
}
