//! `trireme validate -f FILE...`: reads Istio YAML or JSON strictly, then
//! checks each document with Istio's validation rules, and reports every
//! problem with file, document, field path (and line, for parse errors).

use std::{io::Read, path::PathBuf};

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories to check (`-` for standard input); directories are
    /// read for *.yaml, *.yml and *.json.
    #[arg(short = 'f', long = "filename", required = true)]
    pub paths: Vec<PathBuf>,
}

/// Returns whether every document was valid. A document is valid when it
/// parses strictly and semantic validation finds no errors; warnings are
/// printed but do not fail it.
pub fn run(args: &ValidateArgs) -> anyhow::Result<bool> {
    let mut tally = Tally::default();
    for (name, text) in read_inputs(&args.paths)? {
        for result in mesh_config::parse_documents(&name, &text) {
            match result {
                Ok(parsed) => report_document(&name, &parsed, &mut tally),
                Err(error) => {
                    tally.invalid += 1;
                    println!("error  {error}");
                }
            }
        }
    }
    println!(
        "{} valid, {} invalid, {} warnings",
        tally.valid, tally.invalid, tally.warnings
    );
    Ok(tally.invalid == 0)
}

#[derive(Default)]
struct Tally {
    valid: usize,
    invalid: usize,
    warnings: usize,
}

/// Prints a parsed document's semantic findings, one line each, as
/// `error  FILE: document N: KIND NAME: PATH: MESSAGE`.
fn report_document(file: &str, parsed: &mesh_config::ParsedResource, tally: &mut Tally) {
    let report = mesh_config::validation::validate(&parsed.resource);
    let subject = format!(
        "{file}: document {}: {} {}",
        parsed.location.document,
        parsed.resource.kind().info().kind,
        parsed.resource.metadata().name
    );
    for finding in &report.errors {
        println!("error  {subject}: {finding}");
    }
    for finding in &report.warnings {
        println!("warning {subject}: {finding}");
    }
    tally.warnings += report.warnings.len();
    if report.is_valid() {
        tally.valid += 1;
        println!("ok     {subject}");
    } else {
        tally.invalid += 1;
    }
}

fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            inputs.push(("<stdin>".to_string(), text));
        } else if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("listing {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            files.sort();
            for file in files {
                inputs.push(read_file(&file)?);
            }
        } else {
            inputs.push(read_file(path)?);
        }
    }
    Ok(inputs)
}

fn read_file(path: &PathBuf) -> anyhow::Result<(String, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((path.display().to_string(), text))
}
