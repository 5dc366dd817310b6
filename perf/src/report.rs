//! What every benchmark report shares (the machine, the git revision,
//! latency summaries, a process's CPU and memory from `/proc`, the JSON
//! under `target/bench/`). It lives in `libs/bench-report` so the other
//! crates' benches use it without building perf; re-exported here for the
//! scenario runner and the load tool.

pub use bench_report::*;
