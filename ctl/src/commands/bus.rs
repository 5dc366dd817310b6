//! Reading a bucket off the bus, for the commands that show what the
//! control plane keeps there.

use std::time::Duration;

use anyhow::Context;
use event_bus::{BucketConfig, Bus, StateMirror};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long to wait for the bus before giving up.
const BUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Every current value of `bucket` on the bus at `nats_url`, in key order.
pub fn read_bucket<T>(nats_url: &str, bucket: &str) -> anyhow::Result<Vec<T>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let read = async {
        let bus = Bus::connect(nats_url, "trireme").await?;
        let bucket = bus.kv_bucket::<T>(BucketConfig::new(bucket)).await?;
        let mut mirror = StateMirror::new();
        mirror
            .sync(&mut bucket.watch_state())
            .await
            .map_err(|_| anyhow::anyhow!("the bus closed"))?;
        anyhow::Ok(mirror.into_entries().into_values().collect())
    };
    // The timer must be made inside the runtime.
    runtime
        .block_on(async { tokio::time::timeout(BUS_TIMEOUT, read).await })
        .with_context(|| format!("no answer from NATS at {nats_url} within {BUS_TIMEOUT:?}"))?
        .with_context(|| format!("reading {bucket} from {nats_url}"))
}
