//! Config intake: galley reads Istio config, judges every resource, and
//! publishes the valid ones to the bus, one key per resource in
//! [`CONFIG_BUCKET`], with a verdict per resource in [`VERDICT_BUCKET`].
//!
//! - [`directory`]: reading and judging a `--config-dir`.
//! - [`reconcile`]: what the buckets should hold after a scan (pure).
//! - [`DirectoryIntake`]: watches the directory and writes the difference.

pub mod directory;
pub mod reconcile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use event_bus::{BucketConfig, Bus, KvBucket, KvError, StateMirror};
use mesh_config::store::{CONFIG_BUCKET, VERDICT_BUCKET, Verdict};

use self::reconcile::{Desired, Published};

/// How often the directory is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The buckets galley writes.
#[derive(Clone)]
pub struct Buckets {
    pub config: KvBucket<serde_json::Value>,
    pub verdicts: KvBucket<Verdict>,
}

impl Buckets {
    pub async fn open(bus: &Bus) -> Result<Buckets, KvError> {
        Ok(Buckets {
            config: bus
                .kv_bucket(
                    BucketConfig::new(CONFIG_BUCKET)
                        .with_description("Istio resources galley accepted, one key per resource"),
                )
                .await?,
            verdicts: bus
                .kv_bucket(
                    BucketConfig::new(VERDICT_BUCKET)
                        .with_description("galley's verdict on every resource it was given"),
                )
                .await?,
        })
    }
}

/// A config directory published to the buckets, kept in step with it.
pub struct DirectoryIntake {
    root: PathBuf,
    buckets: Buckets,
    /// What the buckets hold, as far as this intake knows.
    published: Desired,
    /// The directory's files as last scanned; `None` forces a scan.
    fingerprint: Option<Vec<(PathBuf, Option<SystemTime>, u64)>>,
}

impl DirectoryIntake {
    /// Starts from what the buckets already hold (a restarted galley does
    /// not rewrite what is there, and knows which file published what).
    pub async fn new(root: PathBuf, buckets: Buckets) -> anyhow::Result<DirectoryIntake> {
        let published = load_published(&buckets).await?;
        tracing::info!(
            resources = published.config.len(),
            verdicts = published.verdicts.len(),
            "config already on the bus"
        );
        Ok(DirectoryIntake {
            root,
            buckets,
            published,
            fingerprint: None,
        })
    }

    /// Scans when the directory changed (or the last write failed) and
    /// writes the difference; returns whether anything was written.
    pub async fn sync_once(&mut self) -> anyhow::Result<bool> {
        let fingerprint = fingerprint(&self.root)?;
        if self.fingerprint.as_ref() == Some(&fingerprint) {
            return Ok(false);
        }
        let scan = directory::scan(&self.root)?;
        let now = rfc3339_now();
        let desired = reconcile::reconcile(&self.published.config, &scan, &now);
        let rejected = desired.verdicts.values().filter(|v| !v.accepted).count();
        // Until every write lands, scan again next time.
        self.fingerprint = None;
        let written = self.write(desired).await?;
        self.fingerprint = Some(fingerprint);
        tracing::info!(
            dir = %self.root.display(),
            resources = self.published.config.len(),
            rejected,
            written,
            "config directory published"
        );
        Ok(written > 0)
    }

    /// Writes what differs between `desired` and the buckets.
    async fn write(&mut self, desired: Desired) -> Result<usize, KvError> {
        let mut written = 0;
        for (key, entry) in &desired.config {
            if self.published.config.get(key).map(|p| &p.resource) != Some(&entry.resource) {
                self.buckets.config.put(key, &entry.resource).await?;
                written += 1;
            }
            self.published.config.insert(key.clone(), entry.clone());
        }
        let gone: Vec<String> = self
            .published
            .config
            .keys()
            .filter(|key| !desired.config.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            self.buckets.config.delete(&key).await?;
            self.published.config.remove(&key);
            written += 1;
        }
        for (key, verdict) in &desired.verdicts {
            if self
                .published
                .verdicts
                .get(key)
                .is_none_or(|v| differs(v, verdict))
            {
                self.buckets.verdicts.put(key, verdict).await?;
            }
            self.published.verdicts.insert(key.clone(), verdict.clone());
        }
        let stale: Vec<String> = self
            .published
            .verdicts
            .keys()
            .filter(|key| !desired.verdicts.contains_key(*key))
            .cloned()
            .collect();
        for key in stale {
            self.buckets.verdicts.delete(&key).await?;
            self.published.verdicts.remove(&key);
        }
        Ok(written)
    }

    /// Keeps the buckets in step with the directory until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = &mut stop => return,
            }
            if let Err(error) = self.sync_once().await {
                tracing::error!(
                    dir = %self.root.display(),
                    error = format!("{error:#}"),
                    "cannot publish the config directory; retrying"
                );
            }
        }
    }
}

/// A verdict differs when anything but its timestamp does.
fn differs(a: &Verdict, b: &Verdict) -> bool {
    (&a.key, a.accepted, &a.errors, &a.warnings, &a.source)
        != (&b.key, b.accepted, &b.errors, &b.warnings, &b.source)
}

/// The buckets' current content; which file published each resource comes
/// from its verdict's source (`dir:<file>#<document>`).
async fn load_published(buckets: &Buckets) -> anyhow::Result<Desired> {
    let mut verdicts = StateMirror::new();
    verdicts
        .sync(&mut buckets.verdicts.watch_state())
        .await
        .map_err(|_| anyhow::anyhow!("the bus closed while reading the verdicts"))?;
    let mut config = StateMirror::new();
    config
        .sync(&mut buckets.config.watch_state())
        .await
        .map_err(|_| anyhow::anyhow!("the bus closed while reading the config"))?;
    let verdicts: BTreeMap<String, Verdict> = verdicts.into_entries();
    let config = config
        .into_entries()
        .into_iter()
        .map(|(key, resource)| {
            let file = verdicts
                .get(&key)
                .and_then(|verdict| source_file(&verdict.source))
                .unwrap_or_default();
            (key, Published { resource, file })
        })
        .collect();
    Ok(Desired { config, verdicts })
}

fn source_file(source: &str) -> Option<String> {
    let path = source.strip_prefix("dir:")?;
    let (file, _document) = path.rsplit_once('#')?;
    Some(file.to_owned())
}

/// The current UTC time as RFC 3339, to the second.
fn rfc3339_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// What changes when a file does: paths, modification times and sizes.
fn fingerprint(root: &Path) -> std::io::Result<Vec<(PathBuf, Option<SystemTime>, u64)>> {
    let mut entries = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                entries.push((entry.path(), meta.modified().ok(), meta.len()));
            }
        }
    }
    entries.sort();
    Ok(entries)
}
