//! Conversion between tapes and other representations.
//!
//! | format | `cat` | `export` | `import` |
//! |--------|-------|----------|----------|
//! | `json` / `jsonl` — one exchange per line | ✓ | ✓ | ✓ |
//! | `http` — raw HTTP/1.1 messages | ✓ | | |
//! | `curl` — runnable commands | ✓ | | |
//! | `har` — HTTP Archive 1.2 | ✓ | ✓ | ✓ |
//! | `gor` — GoReplay files | | ✓ | ✓ |

pub mod curl;
pub mod gor;
pub mod har;
pub mod http;
pub mod jsonl;

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::error::TapeError;
use crate::exchange::Exchange;

/// How many warnings an [`ImportReport`] keeps (the counters keep counting).
const MAX_WARNINGS: usize = 20;

/// A conversion failure.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Reading the input or writing the output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The input is not in the expected format at all.
    #[error("{0}")]
    Format(String),
    /// Writing the imported exchanges to a tape failed.
    #[error("{0}")]
    Tape(#[from] TapeError),
}

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    /// Exchanges imported.
    pub imported: u64,
    /// Entries skipped because they could not be read.
    pub skipped: u64,
    /// The first few problems, each naming where it was.
    pub warnings: Vec<String>,
    /// Things worth knowing that are not problems.
    pub notes: Vec<String>,
}

impl ImportReport {
    /// Records a skipped entry.
    pub fn skip(&mut self, why: String) {
        self.skipped += 1;
        self.warn(why);
    }

    /// Records a problem that did not cost an entry.
    pub fn warn(&mut self, why: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(why);
        }
    }
}

/// A text format exchanges can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON lines.
    Json,
    /// Raw HTTP/1.1 messages.
    Http,
    /// curl commands.
    Curl,
    /// HAR 1.2.
    Har,
    /// GoReplay.
    Gor,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" | "jsonl" | "ndjson" => Ok(Format::Json),
            "http" | "raw" => Ok(Format::Http),
            "curl" => Ok(Format::Curl),
            "har" => Ok(Format::Har),
            "gor" | "goreplay" => Ok(Format::Gor),
            other => Err(format!("unknown format {other:?}: expected json, http, curl, har or gor")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Http => "http",
            Format::Curl => "curl",
            Format::Har => "har",
            Format::Gor => "gor",
        })
    }
}

/// Writes exchanges in one [`Format`], streaming: memory does not grow with the count.
pub struct Exporter<W: Write> {
    format: Format,
    out: W,
    written: u64,
    /// Show gRPC messages decoded (JSON lines for people: `tapedeck cat`), with this
    /// schema if any.
    grpc_view: Option<Option<crate::proto::ProtoSchema>>,
}

impl<W: Write> Exporter<W> {
    /// Starts writing `format` to `out` (HAR writes its prologue here).
    pub fn new(format: Format, mut out: W) -> io::Result<Self> {
        if format == Format::Har {
            har::write_prologue(&mut out)?;
        }
        Ok(Exporter { format, out, written: 0, grpc_view: None })
    }

    /// JSON lines get, beside each gRPC body, its messages decoded (`"messages": […]`, by
    /// field name with `schema`, else by field number): a view for people, which imports
    /// ignore.
    pub fn with_grpc_messages(mut self, schema: Option<crate::proto::ProtoSchema>) -> Self {
        self.grpc_view = Some(schema);
        self
    }

    /// Writes one exchange.
    pub fn write(&mut self, ex: &Exchange) -> io::Result<()> {
        let out = &mut self.out;
        match self.format {
            Format::Json => match &self.grpc_view {
                Some(schema) => jsonl::write_exchange_with_messages(out, ex, schema.as_ref())?,
                None => jsonl::write_exchange(out, ex)?,
            },
            Format::Har => har::write_entry(out, ex, self.written == 0)?,
            Format::Gor => gor::write_exchange(out, ex)?,
            Format::Curl => curl::write_curl(out, ex)?,
            Format::Http => {
                let status =
                    ex.status().map_or_else(|| ex.error.map_or("-".into(), |e| e.to_string()), |s| s.to_string());
                let took = ex.timing.end_ns.map_or(String::new(), |ns| format!(" ({:.1} ms)", ns as f64 / 1e6));
                writeln!(out, "### {} {} {} -> {status}{took}", ex.id, ex.request.method, ex.request.target)?;
                http::write_request(out, &ex.request)?;
                out.write_all(if ex.request.body.data.is_empty() { b"\n" } else { b"\n\n" })?;
                if let Some(r) = &ex.response {
                    http::write_response(out, r)?;
                    out.write_all(if r.body.data.is_empty() { b"\n" } else { b"\n\n" })?;
                }
                if let Some(ws) = &ex.websocket {
                    http::write_websocket(out, ws)?;
                }
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Exchanges written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Finishes the document (HAR closes its arrays) and flushes; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.format == Format::Har {
            har::write_epilogue(&mut self.out)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Imports `src` in `format` (json, har or gor), handing each exchange to `sink`.
pub fn import(
    format: Format,
    src: impl Read,
    sink: &mut dyn FnMut(Exchange) -> Result<(), ConvertError>,
) -> Result<ImportReport, ConvertError> {
    let buffered = io::BufReader::with_capacity(256 << 10, src);
    match format {
        Format::Json => jsonl::import(buffered, sink),
        Format::Har => har::import(buffered, sink),
        Format::Gor => gor::import(buffered, sink),
        Format::Http | Format::Curl => {
            Err(ConvertError::Format(format!("cannot import from {format}: use har, gor or jsonl")))
        }
    }
}

/// Splits an absolute URL into scheme, authority (without user info) and target
/// (path and query, fragment dropped, always starting with `/`).
pub fn split_url(url: &str) -> (String, String, String) {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) => {
            (s.to_ascii_lowercase(), r)
        }
        _ => ("http".to_string(), url),
    };
    let is_absolute = url.contains("://");
    let (authority, target) = if is_absolute {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        (&rest[..end], &rest[end..])
    } else {
        ("", rest)
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let target = target.split('#').next().unwrap_or("");
    let target = if target.starts_with('/') { target.to_string() } else { format!("/{target}") };
    (scheme, authority.to_string(), target)
}

/// A hash that is the same in every run and on every machine (FNV-1a, 64 bit), for ids
/// derived from foreign identifiers.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let s = |u: &str| {
            let (a, b, c) = split_url(u);
            (a, b, c)
        };
        assert_eq!(
            s("https://u:p@api.test:8443/a/b?c=d#frag"),
            ("https".into(), "api.test:8443".into(), "/a/b?c=d".into())
        );
        assert_eq!(s("http://host"), ("http".into(), "host".into(), "/".into()));
        assert_eq!(s("http://host?x=1"), ("http".into(), "host".into(), "/?x=1".into()));
        assert_eq!(s("/relative?q"), ("http".into(), "".into(), "/relative?q".into()));
    }

    #[test]
    fn stable_hash_is_stable() {
        assert_eq!(stable_hash(b"abc"), 0xe71f_a219_0541_574b);
    }

    #[test]
    fn trailers_survive_every_format_that_can_carry_them() {
        let mut ex =
            crate::synth::Synth::new(crate::synth::SynthConfig { count: 1, ..Default::default() }).next().unwrap();
        ex.request.trailers.push("x-request-checksum", "c0ffee");
        let resp = ex.response.as_mut().unwrap();
        resp.trailers.push("grpc-status", "0");
        resp.trailers.push("grpc-message", "ok");
        for format in [Format::Json, Format::Har] {
            let mut out = Exporter::new(format, Vec::new()).unwrap();
            out.write(&ex).unwrap();
            let bytes = out.finish().unwrap();
            let mut back = Vec::new();
            import(format, &bytes[..], &mut |e| {
                back.push(e);
                Ok(())
            })
            .unwrap();
            assert_eq!(back[0].request.trailers, ex.request.trailers, "{format}");
            assert_eq!(back[0].response.as_ref().unwrap().trailers, ex.response.as_ref().unwrap().trailers, "{format}");
        }
        // Raw HTTP/1.1: a chunked message ending in its trailer section.
        let mut out = Exporter::new(Format::Http, Vec::new()).unwrap();
        out.write(&ex).unwrap();
        let text = String::from_utf8_lossy(&out.finish().unwrap()).into_owned();
        assert!(text.contains("0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"), "{text}");
        assert!(text.contains("0\r\nx-request-checksum: c0ffee\r\n\r\n"), "{text}");
        assert_eq!(text.matches("Transfer-Encoding: chunked").count(), 2, "{text}");
    }
}
