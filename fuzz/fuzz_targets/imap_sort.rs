#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cove_fuzz::imap_sort(data));
