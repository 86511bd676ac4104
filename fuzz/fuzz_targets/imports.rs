//! HAR, GoReplay and JSON-lines imports must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck_captures::convert::{import, Format};

fuzz_target!(|data: &[u8]| {
    for format in [Format::Har, Format::Gor, Format::Json] {
        let _ = import(format, data, &mut |_| Ok(()));
    }
});
