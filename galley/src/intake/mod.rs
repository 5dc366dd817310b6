//! Config intake: galley reads Istio config, judges every resource, and
//! publishes the valid ones to the bus, one key per resource in
//! [`CONFIG_BUCKET`], with a verdict per resource in [`VERDICT_BUCKET`].
//!
//! - [`directory`]: reading and judging a `--config-dir`.
//! - [`kubernetes`]: the same for objects from the API server's watches.
//! - [`kube_watch`]: the watchers of every Istio kind, publishing through a
//!   [`Publisher`] (`--kubernetes`).
//! - [`status`]: verdicts written to the objects' `status`
//!   (`PILOT_ENABLE_ANALYSIS`).
//! - [`reconcile`]: what the buckets should hold after a scan (pure).
//! - [`Publisher`]: writes the difference to the buckets, for one source.
//! - [`DirectoryIntake`]: watches the directory and publishes it.

pub mod directory;
pub mod kube_watch;
pub mod kubernetes;
pub mod reconcile;
pub mod status;

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

/// Writes one source's config and verdicts to the buckets: only what
/// differs from what it last wrote, and it deletes only its own keys
/// (those whose verdict source starts with its prefix, `dir:` or `k8s:`).
pub struct Publisher {
    buckets: Buckets,
    /// What the buckets hold of this source, as far as it knows.
    published: Desired,
}

impl Publisher {
    /// Starts from what the buckets already hold of `source_prefix`'s (a
    /// restarted galley does not rewrite what is there, and knows which
    /// file published what).
    pub async fn new(buckets: Buckets, source_prefix: &str) -> anyhow::Result<Publisher> {
        let published = load_published(&buckets, source_prefix).await?;
        tracing::info!(
            source = source_prefix,
            resources = published.config.len(),
            verdicts = published.verdicts.len(),
            "config already on the bus"
        );
        Ok(Publisher { buckets, published })
    }

    /// What this source has published.
    pub fn published(&self) -> &BTreeMap<String, Published> {
        &self.published.config
    }

    /// Makes the buckets hold `scan`'s verdict, keeping accepted state as
    /// [`reconcile`] says; returns (resources written, resources rejected).
    pub async fn publish(
        &mut self,
        scan: &[reconcile::ScannedDocument],
    ) -> Result<(usize, usize), KvError> {
        let desired = reconcile::reconcile(&self.published.config, scan, &rfc3339_now());
        let rejected = desired.verdicts.values().filter(|v| !v.accepted).count();
        let written = self.write(desired).await?;
        Ok((written, rejected))
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
}

/// A config directory published to the buckets, kept in step with it.
pub struct DirectoryIntake {
    root: PathBuf,
    publisher: Publisher,
    /// The directory's files as last scanned; `None` forces a scan.
    fingerprint: Option<Vec<(PathBuf, Option<SystemTime>, u64)>>,
}

impl DirectoryIntake {
    pub async fn new(root: PathBuf, buckets: Buckets) -> anyhow::Result<DirectoryIntake> {
        Ok(DirectoryIntake {
            root,
            publisher: Publisher::new(buckets, "dir:").await?,
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
        // Until every write lands, scan again next time.
        self.fingerprint = None;
        let (written, rejected) = self.publisher.publish(&scan).await?;
        self.fingerprint = Some(fingerprint);
        tracing::info!(
            dir = %self.root.display(),
            resources = self.publisher.published().len(),
            rejected,
            written,
            "config directory published"
        );
        Ok(written > 0)
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
async fn load_published(buckets: &Buckets, source_prefix: &str) -> anyhow::Result<Desired> {
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
    let verdicts: BTreeMap<String, Verdict> = verdicts
        .into_entries()
        .into_iter()
        .filter(|(_, verdict)| verdict.source.starts_with(source_prefix))
        .collect();
    // A resource is this source's when its verdict is.
    let config = config
        .into_entries()
        .into_iter()
        .filter_map(|(key, resource)| {
            let file = source_file(&verdicts.get(&key)?.source);
            Some((key, Published { resource, file }))
        })
        .collect();
    Ok(Desired { config, verdicts })
}

/// The file a verdict's source names: `a.yaml` for `dir:a.yaml#2`; a
/// Kubernetes object is its own file (`k8s:<key>`).
fn source_file(source: &str) -> String {
    source
        .strip_prefix("dir:")
        .and_then(|path| path.rsplit_once('#'))
        .map_or(source, |(file, _document)| file)
        .to_owned()
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
