//! Any bytes as a request path: canonicalising never panics, a canonical
//! path is a fixed point (canonicalising it again changes nothing), and it
//! holds no dot segment, no `//`, no encoded `/` or `\`, no control
//! character and no `\` — whatever an upstream does with it afterwards, it
//! names the path that was checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(canonical) = gatehouse::path::canonicalize(text) else {
        return;
    };
    let again = gatehouse::path::canonicalize(&canonical).expect("canonical stays canonical");
    assert_eq!(again, canonical);
    assert!(canonical.starts_with('/'));
    assert!(!canonical.contains("//"));
    assert!(!canonical.contains('\\'));
    assert!(!canonical.chars().any(char::is_control));
    let upper = canonical.to_ascii_uppercase();
    assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%2E"));
    for segment in canonical.split('/') {
        let name = segment.split(';').next().unwrap_or("");
        assert!(name != "." && name != "..", "{canonical}");
    }
});
