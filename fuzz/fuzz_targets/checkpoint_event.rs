//! cargo-fuzz target: baton_fuzz::checkpoint_event on every input libFuzzer makes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_fuzz::checkpoint_event(data));
