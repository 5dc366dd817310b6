//! `trireme validate -f FILE...`: reads Istio YAML or JSON strictly and reports
//! every problem with file, document, field path and line.

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

/// Returns whether every document was valid.
pub fn run(args: &ValidateArgs) -> anyhow::Result<bool> {
    let mut valid = 0;
    let mut invalid = 0;
    for (name, text) in read_inputs(&args.paths)? {
        for result in mesh_config::parse_documents(&name, &text) {
            match result {
                Ok(parsed) => {
                    valid += 1;
                    let meta = parsed.resource.metadata();
                    println!(
                        "ok     {}: document {}: {} {}",
                        name,
                        parsed.location.document,
                        parsed.resource.kind().info().kind,
                        meta.name
                    );
                }
                Err(error) => {
                    invalid += 1;
                    println!("error  {error}");
                }
            }
        }
    }
    println!("{valid} valid, {invalid} invalid");
    Ok(invalid == 0)
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
