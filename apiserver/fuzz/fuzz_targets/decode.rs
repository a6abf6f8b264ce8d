//! Fuzzes everything the apiserver does with untrusted request bytes before storage.
//! Run: `cd apiserver/fuzz && cargo fuzz run decode` (see the README).
#![no_main]

use std::sync::LazyLock;

use apiserver::resources::Registry;
use libfuzzer_sys::fuzz_target;

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::builtin);

fuzz_target!(|data: &[u8]| {
    apiserver::fuzzing::decode_path(&REGISTRY, data);
});
