//! libFuzzer target over the webhook's body decoding and validation; see
//! `galley_fuzz::check_admission` for what each input goes through.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    galley_fuzz::check_admission(data);
});
