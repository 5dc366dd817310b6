//! libFuzzer target over citadel's CSR parsing and checking path; see
//! `citadel_fuzz::check_csr` for what each input goes through.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    citadel_fuzz::check_csr(data);
});
