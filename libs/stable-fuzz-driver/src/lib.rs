//! A plain mutation fuzzer for stable Rust, used by `make fuzz-smoke` only
//! when no nightly toolchain (needed by cargo fuzz / libFuzzer) is
//! available. It is coverage-blind: it mutates a seed corpus at random and
//! feeds a target's check function until the time is up. Each fuzz project
//! (citadel's, galley's) runs it from a tiny `stable-driver` binary.
//!
//! Usage of those binaries: stable-driver [SECONDS] [CORPUS_DIR]

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

thread_local! {
    static CURRENT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a target gives the driver.
pub struct Target<'a> {
    /// The corpus directory when the command line names none.
    pub default_corpus: &'a str,
    /// Bytes worth writing over others (format delimiters, edge values).
    pub interesting: &'a [u8],
    /// The function under test; a panic is a crash.
    pub check: fn(&[u8]),
}

/// xorshift64*: dependency-free and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>], interesting: &[u8]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => input[rng.below(len)] ^= 1 << rng.below(8),
            1 if len > 0 => input[rng.below(len)] = interesting[rng.below(interesting.len())],
            2 => input.insert(rng.below(len + 1), rng.next() as u8),
            3 if len > 0 => {
                input.remove(rng.below(len));
            }
            4 if len > 0 => input.truncate(rng.below(len)),
            5 if len > 1 => {
                // Duplicate a slice: repeated fields, elements, TLVs.
                let start = rng.below(len);
                let end = start + rng.below((len - start).min(64)) + 1;
                let chunk = input[start..end].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, chunk);
            }
            _ => {
                // Splice in part of another seed.
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = start + rng.below(other.len() - start) + 1;
                    let at = rng.below(input.len() + 1);
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
        }
    }
}

/// Runs `target` for the seconds and corpus the command line names.
pub fn run(target: &Target<'_>) {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(60, |s| s.parse().expect("SECONDS"));
    let corpus = PathBuf::from(args.next().unwrap_or_else(|| target.default_corpus.into()));

    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&corpus)
        .map(|entries| {
            entries
                .filter_map(|entry| std::fs::read(entry.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    seeds.push(Vec::new());

    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let input = CURRENT.with(|current| current.borrow().clone());
        let path = format!("artifacts/stable-crash-{}", std::process::id());
        let _ = std::fs::create_dir_all("artifacts");
        let _ = std::fs::write(&path, &input);
        eprintln!("CRASH: input ({} bytes) saved to {path}", input.len());
        default_hook(info);
    }));

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    eprintln!(
        "stable-driver: {} seeds from {}, rng seed {seed}, {seconds} s",
        seeds.len() - 1,
        corpus.display()
    );

    // Seeds unmodified first, then mutations.
    for input in &seeds {
        CURRENT.with(|current| current.borrow_mut().clone_from(input));
        (target.check)(input);
    }
    let started = Instant::now();
    let deadline = Duration::from_secs(seconds);
    let mut executions: u64 = seeds.len() as u64;
    while started.elapsed() < deadline {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds, target.interesting);
        CURRENT.with(|current| current.borrow_mut().clone_from(&input));
        (target.check)(&input);
        executions += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "stable-driver: {executions} executions in {elapsed:.1} s ({:.0}/s), no crash",
        executions as f64 / elapsed
    );
}
