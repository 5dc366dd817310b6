//! galley's admission checks under the stable mutation driver (`make
//! fuzz-smoke` without nightly): the same `check_admission` as the
//! libFuzzer target.
//!
//! Usage: stable-driver [SECONDS] [CORPUS_DIR]   (defaults: 60, corpus/admission)

fn main() {
    stable_fuzz_driver::run(&stable_fuzz_driver::Target {
        default_corpus: "corpus/admission",
        // JSON's delimiters and YAML's anchors and aliases.
        interesting: &[
            b'{', b'}', b'[', b']', b'"', b':', b',', b'-', b'0', b'&', b'*', 0xff,
        ],
        check: galley_fuzz::check_admission,
    });
}
