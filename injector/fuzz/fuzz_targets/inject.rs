//! libFuzzer target over the injection webhook's decision and `trireme
//! kube-inject`'s rewriting; see `injector_fuzz::check_inject` for what each
//! input goes through.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    injector_fuzz::check_inject(data);
});
