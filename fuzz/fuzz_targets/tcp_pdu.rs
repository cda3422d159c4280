#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nvfarm_fuzz::nvme::tcp_pdu(data));
