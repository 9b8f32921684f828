//! One answer of STS Organisation (v6 or v5): envelope or fault, payload, `StandardRetur` and
//! every object through the bitemporal reader. The first byte picks contract, service,
//! operation and HTTP status (`orgsync_sts::fuzzing::soap_response`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    orgsync_sts::fuzzing::soap_response(data);
});
