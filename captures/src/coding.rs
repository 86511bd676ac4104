//! Content codings (`Content-Encoding`, `grpc-encoding`): gzip, deflate, br and zstd,
//! decoded within a bound, so a small compressed bomb costs no more than the bound.

use std::io::Read;

/// Largest body decoded from its `Content-Encoding`; bigger ones count as unparseable
/// (a decompression bomb must not exhaust the capture writer).
pub const MAX_DECODED: usize = 32 << 20;

/// Decodes a `Content-Encoding` (a comma-separated list, applied in order). Returns the
/// decoded bytes and whether the stream was complete; `None` when nothing decodes.
pub fn decode(encoding: &str, data: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut current = data.to_vec();
    let mut complete = true;
    for coding in encoding.split(',').map(str::trim).rev() {
        let mut out = Vec::new();
        let result = match coding {
            "gzip" | "x-gzip" => read_limited(flate2::read::MultiGzDecoder::new(&current[..]), &mut out),
            "deflate" => {
                // Servers send zlib-wrapped or raw deflate under this name; try both.
                let zlib = read_limited(flate2::read::ZlibDecoder::new(&current[..]), &mut out);
                if zlib.is_err() && out.is_empty() {
                    read_limited(flate2::read::DeflateDecoder::new(&current[..]), &mut out)
                } else {
                    zlib
                }
            }
            "br" => read_limited(brotli::Decompressor::new(&current[..], 4096), &mut out),
            "zstd" => match zstd::stream::read::Decoder::new(&current[..]) {
                Ok(d) => read_limited(d, &mut out),
                Err(e) => Err(e),
            },
            "identity" | "" => {
                out = std::mem::take(&mut current);
                Ok(())
            }
            _ => return None,
        };
        if out.len() > MAX_DECODED {
            return None;
        }
        if let Err(e) = result {
            if out.is_empty() || e.kind() == std::io::ErrorKind::OutOfMemory {
                return None;
            }
            // A truncated capture cuts the compressed stream: keep what decoded.
            complete = false;
        }
        current = out;
    }
    Some((current, complete))
}

fn read_limited(reader: impl Read, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut limited = reader.take(MAX_DECODED as u64 + 1);
    let mut buf = [0u8; 16 << 10];
    loop {
        match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if out.len() > MAX_DECODED {
            return Err(std::io::Error::new(std::io::ErrorKind::OutOfMemory, "decoded body too large"));
        }
    }
    Ok(())
}
