//! The authority in use, kept current with its directory: files replaced by
//! an operator (a plug-in CA) or by a root rotation step are loaded without a
//! restart, and a directory that fails to load never replaces a working CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::authority::{Authority, AuthorityError, CaFiles, RootKey, SigningPolicy};
use crate::rotation::{self, RotationPolicy, RotationStep};

/// Everything a self-signed root rotation needs besides the directory.
pub struct RootRotation {
    pub organization: String,
    pub policy: RotationPolicy,
    /// Makes the key of each new root.
    pub new_root_key: Box<dyn Fn() -> Result<RootKey, AuthorityError> + Send + Sync>,
}

/// Readers' side: the authority in use, swapped whole on every change.
pub type SharedAuthority = watch::Receiver<Arc<Authority>>;

/// Keeps the authority in use in step with its CA directory.
pub struct AuthorityWatcher {
    dir: PathBuf,
    policy: SigningPolicy,
    rotation: Option<RootRotation>,
    loaded: CaFiles,
    current: watch::Sender<Arc<Authority>>,
}

impl AuthorityWatcher {
    /// Finishes any rotation step a previous run left half done, then loads
    /// the directory; failing here is failing to start.
    pub fn start(
        dir: &Path,
        policy: SigningPolicy,
        rotation: Option<RootRotation>,
    ) -> Result<Self, AuthorityError> {
        if let Some(rotation) = &rotation {
            advance_rotation(dir, rotation, OffsetDateTime::now_utc())?;
        }
        let loaded = CaFiles::read_from(dir)?;
        let authority = Authority::load_from_dir(dir, policy)?;
        let (current, _) = watch::channel(Arc::new(authority));
        Ok(Self {
            dir: dir.to_owned(),
            policy,
            rotation,
            loaded,
            current,
        })
    }

    pub fn subscribe(&self) -> SharedAuthority {
        self.current.subscribe()
    }

    pub fn current(&self) -> Arc<Authority> {
        self.current.borrow().clone()
    }

    /// One look at the directory at `now`: a due rotation step is taken, and
    /// changed files are loaded. Returns whether the authority in use changed.
    pub fn check(&mut self, now: OffsetDateTime) -> Result<bool, AuthorityError> {
        if let Some(rotation) = &self.rotation {
            advance_rotation(&self.dir, rotation, now)?;
        }
        let files = CaFiles::read_from(&self.dir)?;
        if files == self.loaded {
            return Ok(false);
        }
        let authority = Authority::from_dir_files(&self.dir, &files, self.policy)?;
        self.loaded = files;
        self.current.send_replace(Arc::new(authority));
        Ok(true)
    }

    /// Checks every `interval` until `shutdown` completes. Errors are logged
    /// and the authority in use stays: a half-copied plug-in directory is
    /// simply tried again at the next tick.
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            match self.check(OffsetDateTime::now_utc()) {
                Ok(true) => tracing::info!(
                    dir = %self.dir.display(),
                    roots = self.current().trust_bundle_der().len(),
                    "certificate authority reloaded"
                ),
                Ok(false) => {}
                Err(error) => tracing::error!(
                    dir = %self.dir.display(),
                    %error,
                    "CA directory not loaded; still signing with the previous CA"
                ),
            }
        }
    }
}

fn advance_rotation(
    dir: &Path,
    rotation: &RootRotation,
    now: OffsetDateTime,
) -> Result<(), AuthorityError> {
    let step = rotation::advance(
        dir,
        &rotation.organization,
        &rotation.policy,
        now,
        &*rotation.new_root_key,
    )?;
    match step {
        Some(RotationStep::NewRootTrusted) => tracing::info!(
            dir = %dir.display(),
            signing_after = ?rotation.policy.propagation_delay,
            "root rotation: new root added to the trust bundle"
        ),
        Some(RotationStep::NewRootSigning { retire_at }) => tracing::info!(
            dir = %dir.display(),
            %retire_at,
            "root rotation: new root now signs; previous roots stay trusted until retire_at"
        ),
        Some(RotationStep::PreviousRootsRetired { count }) => tracing::info!(
            dir = %dir.display(),
            count,
            "root rotation: previous roots removed from the trust bundle"
        ),
        None => {}
    }
    Ok(())
}
