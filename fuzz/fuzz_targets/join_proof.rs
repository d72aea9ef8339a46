//! The join proof a browser sends with its name: node, meeting, nonce, key and signature as
//! text. Never a panic; never accepted unless the signature really verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(5, '\0');
    let (Some(node), Some(meeting), Some(nonce), Some(key), Some(sig)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return;
    };
    let _ = veche_trust::verify_challenge(node, meeting, nonce, key, sig);
});
