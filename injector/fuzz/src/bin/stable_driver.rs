//! The injector's checks under the stable mutation driver (`make fuzz-smoke`
//! without nightly): the same `check_inject` as the libFuzzer target.
//!
//! Usage: stable-driver [SECONDS] [CORPUS_DIR]   (defaults: 60, corpus/inject)

fn main() {
    stable_fuzz_driver::run(&stable_fuzz_driver::Target {
        default_corpus: "corpus/inject",
        // JSON's and YAML's delimiters, YAML's document separator start,
        // anchors and aliases.
        interesting: &[
            b'{', b'}', b'[', b']', b'"', b':', b',', b'-', b'0', b'&', b'*', b'\n', 0xff,
        ],
        check: injector_fuzz::check_inject,
    });
}
