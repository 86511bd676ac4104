//! The tape reader must never panic, hang or allocate without bound, whatever the bytes.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use tapedeck_captures::tape::SegmentReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = SegmentReader::new(Cursor::new(data), "fuzz.tape") {
        let mut records = 0u64;
        while let Ok(Some(_)) = reader.next_exchange() {
            records += 1;
        }
        let stats = reader.stats();
        assert_eq!(stats.records, records);
        assert!(stats.bytes_skipped <= data.len() as u64);
    }
});
