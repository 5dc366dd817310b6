//! citadel's CSR checks under the stable mutation driver (`make fuzz-smoke`
//! without nightly): the same `check_csr` as the libFuzzer target.
//!
//! Usage: stable-driver [SECONDS] [CORPUS_DIR]   (defaults: 60, corpus/csr)

fn main() {
    stable_fuzz_driver::run(&stable_fuzz_driver::Target {
        default_corpus: "corpus/csr",
        // DER's edge values and its SEQUENCE tag.
        interesting: &[0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0xff, 0x30],
        check: citadel_fuzz::check_csr,
    });
}
