//! JSON lines: one [`Exchange`] per line, in the shape `tapedeck cat --format json` prints
//! (bodies as text, or `{"base64": …}` when they are not UTF-8). Lossless both ways.

use std::io::{self, BufRead, Write};

use crate::convert::{ConvertError, ImportReport};
use crate::exchange::Exchange;

/// Writes one exchange as a JSON line.
pub fn write_exchange(out: &mut impl Write, ex: &Exchange) -> io::Result<()> {
    // `From` keeps an I/O error as it was (a closed pipe stays `BrokenPipe`).
    serde_json::to_writer(&mut *out, ex).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Imports JSON lines; blank lines are ignored and a line that is not an exchange is
/// skipped with a warning naming its line number.
pub fn import(
    src: impl BufRead,
    sink: &mut dyn FnMut(Exchange) -> Result<(), ConvertError>,
) -> Result<ImportReport, ConvertError> {
    let mut report = ImportReport::default();
    let mut lines = 0u64;
    for (i, line) in src.split(b'\n').enumerate() {
        let line = line.map_err(ConvertError::Io)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        match serde_json::from_slice::<Exchange>(&line) {
            Ok(ex) => {
                sink(ex)?;
                report.imported += 1;
            }
            Err(e) => report.skip(format!("line {}: not a tapedeck exchange: {e}; skipped", i + 1)),
        }
    }
    if lines > 0 && report.imported == 0 {
        return Err(ConvertError::Format(format!(
            "no line is a tapedeck exchange; first problem: {}",
            report.warnings.first().map_or("", String::as_str)
        )));
    }
    Ok(report)
}
