//! cargo-fuzz target: baton_fuzz::job_payload on every input libFuzzer makes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_fuzz::job_payload(data));
