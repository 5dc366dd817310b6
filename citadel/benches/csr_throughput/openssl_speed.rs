//! `openssl speed` for ECDSA P-256 and RSA-2048 on the same machine in the
//! same run, as the yardstick beside citadel's rates.
//!
//! openssl divides its operation counts by the CPU time it used, so its
//! figures are per CPU-second of one core even on a busy machine.

use std::process::Command;

/// Signatures and verifications per second of one key type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub sign_per_second: f64,
    pub verify_per_second: f64,
}

/// What `openssl speed` measured.
pub struct Speed {
    pub command: String,
    pub version: Option<String>,
    pub p256: Option<Rates>,
    pub rsa2048: Option<Rates>,
}

impl Speed {
    pub fn for_key_type(&self, key_type: &str) -> Option<Rates> {
        match key_type {
            "P-256" => self.p256,
            "RSA-2048" => self.rsa2048,
            _ => None,
        }
    }
}

/// Runs `openssl speed`; the error says why there are no figures (openssl
/// missing or failing), which the report prints instead of failing.
pub fn measure(seconds: u32) -> Result<Speed, String> {
    let seconds = seconds.to_string();
    let args = ["speed", "-seconds", &seconds, "ecdsap256", "rsa2048"];
    let command = format!("openssl {}", args.join(" "));
    let output = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|error| {
            format!(
                "openssl not run ({error}); install it (apt-get install openssl) for the comparison"
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "`{command}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(Speed {
        command,
        version: version(&stdout),
        p256: rates(&stdout, |row| row.contains("nistp256")),
        rsa2048: rates(&stdout, |row| {
            row.starts_with("rsa") && row.contains("2048 bits")
        }),
    })
}

/// The `version: 3.0.19` line openssl speed starts with.
fn version(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("version:"))
        .map(|version| version.trim().to_owned())
}

/// The sign/s and verify/s of the first row `is_row` picks. Each table has a
/// header line naming its columns (`sign verify sign/s verify/s`, newer
/// versions add encrypt/decrypt for RSA); a row's label has spaces, so its
/// values are its last tokens, one per header column.
fn rates(output: &str, is_row: impl Fn(&str) -> bool) -> Option<Rates> {
    let mut header: Vec<&str> = Vec::new();
    for line in output.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.contains(&"sign/s") {
            header = tokens;
        } else if !header.is_empty() && is_row(line.trim()) {
            return row_rates(&header, &tokens);
        }
    }
    None
}

fn row_rates(header: &[&str], row: &[&str]) -> Option<Rates> {
    let values = row.get(row.len().checked_sub(header.len())?..)?;
    let column = |name: &str| -> Option<f64> {
        let index = header.iter().position(|column| *column == name)?;
        values[index].parse().ok()
    };
    Some(Rates {
        sign_per_second: column("sign/s")?,
        verify_per_second: column("verify/s")?,
    })
}
