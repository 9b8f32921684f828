//! A security token service's answer: the WS-Trust SOAP response, the REST JSON response and
//! the SAML assertion inside either (`orgsync_sts::fuzzing::token_response`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    orgsync_sts::fuzzing::token_response(data);
});
