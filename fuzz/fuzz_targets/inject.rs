//! The offline injector's reader: any text in, YAML or an error out, never a panic. What it
//! writes reads back, and injecting it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_inject::mutate::MutationConfig;
use secret_inject::offline::inject_documents;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = MutationConfig::default();
    let Ok(first) = inject_documents(text, &config) else {
        return;
    };
    let second = inject_documents(&first.yaml, &config).expect("our own output reads back");
    assert_eq!(second.injected, 0, "a second pass injected again:\n{}", first.yaml);
    assert_eq!(second.yaml, first.yaml, "a second pass changed the output");
});
