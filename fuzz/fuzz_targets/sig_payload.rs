#![no_main]
//! Owns: fuzzing the signed payload JSON (containers/image's `atomic
//! container signature` and StageX's legacy array form): the strict parse,
//! the identity and digest checks, and that a current payload we accept
//! rebuilds into bytes that parse back to the same payload.
use libfuzzer_sys::fuzz_target;
use stagex::sign::payload::{Payload, PayloadFormat};
use stagex::sign::verify::check_payload;

fuzz_target!(|data: &[u8]| {
    for options in stagex_fuzz::options() {
        if let Err(rejection) = check_payload(data, &stagex_fuzz::expected(), &options) {
            let _ = (rejection.code(), rejection.to_string());
        }
    }
    let Ok((payload, format)) = Payload::parse_any(data) else {
        return;
    };
    if format == PayloadFormat::Current {
        let rebuilt = payload.to_bytes();
        assert_eq!(
            Payload::parse(&rebuilt).as_ref(),
            Ok(&payload),
            "a payload we accept must survive to_bytes -> parse"
        );
    }
    let _ = stagex::oci::reference::DockerReference::parse(&payload.docker_reference);
});
