//! Installing and removing the rules with the stock `iptables-save` and
//! `iptables-restore` binaries (legacy or nft backend alike).
//!
//! Each change is one `iptables-restore --noflush` transaction: either the
//! whole capture is in place or none of it changed, and rules of other
//! owners in the nat table are never touched.

use std::{
    io::Write,
    process::{Command, ExitStatus, Stdio},
};

use super::rules::{Chain, Rule};

const SAVE: &str = "iptables-save";
const RESTORE: &str = "iptables-restore";
/// How long to wait for another writer's xtables lock (legacy backend);
/// kube-proxy or a CNI plugin may hold it briefly.
const LOCK_WAIT: &str = "--wait=30";

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("could not run {program} (is the iptables package installed?)")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: &'static str,
        status: ExitStatus,
        stderr: String,
    },
}

/// A rule as `iptables-save` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// Everything after `-A <chain> `, exactly as printed, so that `-D` with
    /// it deletes this very rule.
    pub spec: String,
    /// The `-j` target, if any.
    pub target: Option<String>,
}

impl SavedRule {
    fn jumps_into_owned_chain(&self) -> bool {
        self.target.as_deref().is_some_and(Chain::is_owned)
    }

    fn delete_line(&self) -> String {
        format!("-D {} {}", self.chain, self.spec)
    }
}

/// The nat table as `iptables-save -t nat` shows it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NatTable {
    pub chains: Vec<String>,
    pub rules: Vec<SavedRule>,
}

impl NatTable {
    pub fn parse(saved: &str) -> Self {
        let mut table = NatTable::default();
        let mut in_nat = false;
        for line in saved.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                in_nat = name == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(declaration) = line.strip_prefix(':') {
                if let Some(name) = declaration.split_whitespace().next() {
                    table.chains.push(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let Some((chain, spec)) = rule.split_once(' ') else {
                    continue;
                };
                let words = shell_words(spec);
                let target = words
                    .iter()
                    .position(|word| word == "-j")
                    .and_then(|at| words.get(at + 1).cloned());
                table.rules.push(SavedRule {
                    chain: chain.to_string(),
                    spec: spec.to_string(),
                    target,
                });
            }
        }
        table
    }

    fn owned_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|name| Chain::is_owned(name))
    }

    /// Whether anything `agent init` installs is present.
    pub fn has_capture(&self) -> bool {
        self.owned_chains().next().is_some()
            || self.rules.iter().any(SavedRule::jumps_into_owned_chain)
    }
}

/// Splits a saved rule into words, keeping a quoted comment in one piece so
/// that a `-j` inside it is not taken for the target.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => word.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The `iptables-restore --noflush` input that installs `rules`.
///
/// Declaring an owned chain creates it, or empties it if it exists, so a
/// second run rewrites the same rules rather than appending copies. Jumps
/// from PREROUTING and OUTPUT into the owned chains live in chains we do not
/// own, so those present before (`current`, from the last install, or from
/// Istio's own init) are deleted first; a fresh table needs no deletions.
pub fn install_input(rules: &[Rule], current: &NatTable, notes: &[String]) -> String {
    let mut input = String::new();
    for note in notes {
        input.push_str(&format!("# {note}\n"));
    }
    input.push_str("*nat\n");
    for chain in Chain::OWNED {
        input.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for stale in current.rules.iter().filter(|rule| {
        rule.jumps_into_owned_chain()
            && (rule.chain == Chain::Prerouting.name() || rule.chain == Chain::Output.name())
    }) {
        input.push_str(&stale.delete_line());
        input.push('\n');
    }
    for rule in rules {
        input.push_str(&rule.to_string());
        input.push('\n');
    }
    input.push_str("COMMIT\n");
    input
}

/// The `iptables-restore --noflush` input that removes every trace of the
/// capture: every jump into an owned chain from a chain we do not own, then
/// the owned chains' rules, then the chains. `None` when nothing is there.
pub fn cleanup_input(current: &NatTable) -> Option<String> {
    if !current.has_capture() {
        return None;
    }
    let mut input = String::from("*nat\n");
    for jump in current
        .rules
        .iter()
        .filter(|rule| rule.jumps_into_owned_chain() && !Chain::is_owned(&rule.chain))
    {
        input.push_str(&jump.delete_line());
        input.push('\n');
    }
    // All are flushed before any is deleted: the owned chains jump to each
    // other, and a chain still referenced cannot be deleted.
    for chain in current.owned_chains() {
        input.push_str(&format!("-F {chain}\n"));
    }
    for chain in current.owned_chains() {
        input.push_str(&format!("-X {chain}\n"));
    }
    input.push_str("COMMIT\n");
    Some(input)
}

fn finish(program: &'static str, output: std::process::Output) -> Result<String, IptablesError> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(IptablesError::Failed {
            program,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Reads the nat table of this network namespace.
pub fn save_nat() -> Result<NatTable, IptablesError> {
    let output = Command::new(SAVE)
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| IptablesError::Spawn {
            program: SAVE,
            source,
        })?;
    finish(SAVE, output).map(|saved| NatTable::parse(&saved))
}

/// Applies `input` as one transaction, leaving other rules in place.
pub fn restore(input: &str) -> Result<(), IptablesError> {
    let spawn_error = |source| IptablesError::Spawn {
        program: RESTORE,
        source,
    };
    let mut child = Command::new(RESTORE)
        .args(["--noflush", LOCK_WAIT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes());
    // Wait even when the write failed: the exit status and stderr explain
    // why iptables-restore stopped reading.
    let output = child.wait_with_output().map_err(spawn_error)?;
    finish(RESTORE, output)?;
    written.map_err(spawn_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{config::CaptureConfig, rules::capture_rules};

    /// `iptables-save -t nat` (nft backend) of a pod where Istio's init ran
    /// before and someone else added a rule of their own.
    const ISTIO_INSTALLED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables) on Sun Nov 22 07:43:48 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -d 192.0.2.1/32 -m comment --comment \"not ours -j ISTIO_OUTPUT\" -j RETURN
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
# Completed on Sun Nov 22 07:43:48 2026
";

    const EMPTY: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
";

    #[test]
    fn parses_chains_rules_and_targets() {
        let table = NatTable::parse(ISTIO_INSTALLED);
        assert_eq!(table.chains.len(), 8);
        assert_eq!(table.rules.len(), 8);
        assert_eq!(
            table.rules[1],
            SavedRule {
                chain: "OUTPUT".into(),
                spec: "-d 192.0.2.1/32 -m comment --comment \"not ours -j ISTIO_OUTPUT\" -j RETURN"
                    .into(),
                target: Some("RETURN".into()),
            }
        );
        assert!(table.has_capture());
        assert!(!NatTable::parse(EMPTY).has_capture());
    }

    #[test]
    fn install_into_a_fresh_table_declares_chains_then_appends() {
        let rules = capture_rules(&CaptureConfig::default());
        let input = install_input(&rules, &NatTable::parse(EMPTY), &["a note".into()]);
        let lines: Vec<&str> = input.lines().collect();
        assert_eq!(
            lines[..7],
            [
                "# a note",
                "*nat",
                ":ISTIO_INBOUND - [0:0]",
                ":ISTIO_IN_REDIRECT - [0:0]",
                ":ISTIO_OUTPUT - [0:0]",
                ":ISTIO_REDIRECT - [0:0]",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
            ]
        );
        assert_eq!(lines.last(), Some(&"COMMIT"));
        assert_eq!(
            lines.iter().filter(|line| line.starts_with("-A ")).count(),
            rules.len()
        );
        assert!(!input.contains("-D "));
    }

    #[test]
    fn reinstall_deletes_earlier_jumps_and_keeps_other_rules() {
        let rules = capture_rules(&CaptureConfig::default());
        let input = install_input(&rules, &NatTable::parse(ISTIO_INSTALLED), &[]);
        let deletions: Vec<&str> = input.lines().filter(|l| l.starts_with("-D ")).collect();
        assert_eq!(
            deletions,
            [
                "-D PREROUTING -p tcp -j ISTIO_INBOUND",
                "-D OUTPUT -j ISTIO_OUTPUT"
            ]
        );
        // Deleted before the new jumps are appended.
        let last_deletion = input.find("-D OUTPUT").unwrap();
        assert!(last_deletion < input.find("-A PREROUTING").unwrap());
    }

    #[test]
    fn cleanup_removes_jumps_then_flushes_then_deletes() {
        let input = cleanup_input(&NatTable::parse(ISTIO_INSTALLED)).unwrap();
        assert_eq!(
            input,
            "*nat
-D PREROUTING -p tcp -j ISTIO_INBOUND
-D OUTPUT -j ISTIO_OUTPUT
-F ISTIO_INBOUND
-F ISTIO_IN_REDIRECT
-F ISTIO_OUTPUT
-F ISTIO_REDIRECT
-X ISTIO_INBOUND
-X ISTIO_IN_REDIRECT
-X ISTIO_OUTPUT
-X ISTIO_REDIRECT
COMMIT
"
        );
    }

    #[test]
    fn cleanup_of_a_clean_table_does_nothing() {
        assert_eq!(cleanup_input(&NatTable::parse(EMPTY)), None);
    }

    #[test]
    fn words_keep_quoted_comments_whole() {
        assert_eq!(
            shell_words(r#"-m comment --comment "a \"b\" -j X" -j RETURN"#),
            [
                "-m",
                "comment",
                "--comment",
                r#"a "b" -j X"#,
                "-j",
                "RETURN"
            ]
        );
    }
}
