//! GoReplay's file format (`--output-file` / `--input-file`), so GoReplay users can bring
//! their captures and take tapedeck's elsewhere.
//!
//! A file is a sequence of payloads, each `TYPE ID TIMESTAMP_NS [LATENCY_NS]\n` followed by
//! a raw HTTP message and terminated by `\n🐵🙈🙉\n`. Type 1 is a request (timestamp = its
//! start), type 2 the original response, type 3 a response from a replay; a response
//! shares its request's id. tapedeck writes type 2 with the time the response head arrived
//! and, as latency, the round trip from request start to the last byte; on import it
//! accepts either of the conventions GoReplay versions have used and keeps the values
//! only when they are consistent with the request's start.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Write};

use crate::convert::http::{parse_request, parse_response, write_request, write_response};
use crate::convert::{stable_hash, ConvertError, ImportReport};
use crate::exchange::*;

/// The payload separator.
pub const SEPARATOR: &[u8] = "\n🐵🙈🙉\n".as_bytes();
/// Requests awaiting their response that are kept before the oldest is imported alone.
const MAX_PENDING: usize = 100_000;

/// The 24-hex-digit id GoReplay uses for an exchange id.
fn gor_id(id: ExchangeId) -> String {
    format!("{:024x}", id.0)
}

/// Writes one exchange: its request, then its response if there was one. Replay results
/// (with `replay_of`) are written as a type-3 response under the recorded exchange's id.
pub fn write_exchange(out: &mut impl Write, ex: &Exchange) -> io::Result<()> {
    let start = ex.wall_start_ns();
    let id = gor_id(ex.replay_of.unwrap_or(ex.id));
    writeln!(out, "1 {id} {start} -1")?;
    write_request(out, &ex.request)?;
    out.write_all(SEPARATOR)?;
    if let Some(resp) = &ex.response {
        let kind = if ex.replay_of.is_some() { 3 } else { 2 };
        let head = ex.timing.head_ns.unwrap_or(0);
        let round_trip = ex.timing.end_ns.unwrap_or(head);
        writeln!(out, "{kind} {id} {} {round_trip}", start.saturating_add(head as i64))?;
        write_response(out, resp)?;
        out.write_all(SEPARATOR)?;
    }
    Ok(())
}

struct Meta {
    kind: u8,
    id: String,
    timestamp: i64,
    latency: Option<i64>,
}

fn parse_meta(line: &[u8]) -> Option<Meta> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_ascii_whitespace();
    let kind = match parts.next()? {
        "1" => 1,
        "2" => 2,
        "3" => 3,
        _ => return None,
    };
    let id = parts.next()?.to_string();
    let timestamp = parts.next()?.parse().ok()?;
    let latency = parts.next().and_then(|l| l.parse().ok()).filter(|l: &i64| *l >= 0);
    Some(Meta { kind, id, timestamp, latency })
}

fn exchange_id(id: &str) -> u64 {
    match u128::from_str_radix(id, 16) {
        Ok(v) if v <= u128::from(u64::MAX) => v as u64,
        _ => stable_hash(id.as_bytes()),
    }
}

/// Imports a `.gor` stream, handing each exchange to `sink` as soon as its response
/// arrives (or at the end, for requests without one).
pub fn import(
    mut src: impl BufRead,
    sink: &mut dyn FnMut(Exchange) -> Result<(), ConvertError>,
) -> Result<ImportReport, ConvertError> {
    let mut report = ImportReport::default();
    let mut pending: HashMap<String, Exchange> = HashMap::new();
    let mut order: VecDeque<String> = VecDeque::new();
    let mut tape_start: Option<i64> = None;
    let mut offset = 0u64;
    let mut replayed = 0u64;
    let mut payloads = 0u64;
    while let Some((payload, consumed)) = next_payload(&mut src)? {
        let at = offset;
        offset += consumed as u64;
        if payload.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        payloads += 1;
        let (meta_line, raw) = match payload.iter().position(|&b| b == b'\n') {
            Some(i) => (&payload[..i], &payload[i + 1..]),
            None => (&payload[..], &[][..]),
        };
        let Some(meta) = parse_meta(meta_line) else {
            let shown = String::from_utf8_lossy(&meta_line[..meta_line.len().min(60)]).into_owned();
            report.skip(format!(
                "payload at byte {at}: header line {shown:?} is not `TYPE ID TIMESTAMP [LATENCY]`; skipped"
            ));
            continue;
        };
        match meta.kind {
            1 => match parse_request(raw) {
                Ok(parsed) => {
                    let start = *tape_start.get_or_insert(meta.timestamp);
                    let timing = if meta.timestamp >= start {
                        Timing::at(start, meta.timestamp)
                    } else {
                        Timing::at(meta.timestamp, meta.timestamp)
                    };
                    let ex = Exchange {
                        id: ExchangeId(exchange_id(&meta.id)),
                        connection: ConnectionId(0),
                        session: None,
                        sequence: 0,
                        timing,
                        request: parsed.message,
                        response: None,
                        error: None,
                        scrub: Vec::new(),
                        replay_of: None,
                        websocket: None,
                    };
                    if pending.insert(meta.id.clone(), ex).is_none() {
                        order.push_back(meta.id);
                    }
                    while pending.len() > MAX_PENDING {
                        let Some(oldest) = order.pop_front() else { break };
                        if let Some(ex) = pending.remove(&oldest) {
                            emit(sink, &mut report, ex)?;
                        }
                    }
                }
                Err(e) => report.skip(format!("payload at byte {at} (request {}): {e}; skipped", meta.id)),
            },
            2 => {
                let Some(mut ex) = pending.remove(&meta.id) else {
                    report
                        .skip(format!("payload at byte {at}: response {} has no request before it; skipped", meta.id));
                    continue;
                };
                match parse_response(raw) {
                    Ok(parsed) => {
                        ex.response = Some(parsed.message);
                        let start = ex.wall_start_ns();
                        let head = (meta.timestamp >= start).then(|| (meta.timestamp - start) as u64);
                        ex.timing.head_ns = head;
                        ex.timing.end_ns = match (meta.latency, head) {
                            (Some(l), Some(h)) if l as u64 >= h => Some(l as u64),
                            (Some(l), None) => Some(l as u64),
                            (_, h) => h,
                        };
                    }
                    Err(e) => {
                        report
                            .warn(format!("payload at byte {at} (response {}): {e}; request kept without it", meta.id));
                        ex.error = Some(ErrorKind::Protocol);
                    }
                }
                emit(sink, &mut report, ex)?;
            }
            _ => replayed += 1,
        }
    }
    for id in order {
        if let Some(ex) = pending.remove(&id) {
            emit(sink, &mut report, ex)?;
        }
    }
    if payloads > 0 && report.imported == 0 && report.skipped == payloads {
        return Err(ConvertError::Format(format!(
            "no GoReplay payloads could be read ({payloads} skipped); first problem: {}",
            report.warnings.first().map_or("", String::as_str)
        )));
    }
    if replayed > 0 {
        report.notes.push(format!(
            "{replayed} replayed responses (type 3) not imported: tapedeck records its own replay results"
        ));
    }
    Ok(report)
}

fn emit(
    sink: &mut dyn FnMut(Exchange) -> Result<(), ConvertError>,
    report: &mut ImportReport,
    ex: Exchange,
) -> Result<(), ConvertError> {
    sink(ex)?;
    report.imported += 1;
    Ok(())
}

/// Reads up to the next separator; returns the payload (without separator) and the bytes
/// consumed, or `None` at the end. A final payload without separator is returned as is.
fn next_payload(src: &mut impl BufRead) -> Result<Option<(Vec<u8>, usize)>, ConvertError> {
    let mut payload = Vec::new();
    let last = *SEPARATOR.last().unwrap_or(&b'\n');
    loop {
        let n = src.read_until(last, &mut payload).map_err(ConvertError::Io)?;
        if n == 0 {
            let len = payload.len();
            return Ok((!payload.is_empty()).then_some((payload, len)));
        }
        if payload.ends_with(SEPARATOR) {
            let consumed = payload.len();
            payload.truncate(payload.len() - SEPARATOR.len());
            return Ok(Some((payload, consumed)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_goreplay_written_payloads() {
        let file = "1 f45590522cd1838b4a0d5c5aab80b77929dea3b3 1700000000000000000 -1\nGET /a?x=1 HTTP/1.1\r\nHost: svc\r\n\r\n\n🐵🙈🙉\n\
                    2 f45590522cd1838b4a0d5c5aab80b77929dea3b3 1700000000005000000 7000000\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\n🐵🙈🙉\n\
                    3 f45590522cd1838b4a0d5c5aab80b77929dea3b3 1700000001000000000 1\nHTTP/1.1 500 Internal Server Error\r\n\r\n\n🐵🙈🙉\n";
        let mut got = Vec::new();
        let report = import(file.as_bytes(), &mut |e| {
            got.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(report.imported, 1);
        assert_eq!(report.notes.len(), 1, "type 3 is reported");
        let ex = &got[0];
        assert_eq!(ex.request.target, "/a?x=1");
        assert_eq!(ex.request.authority, "svc");
        assert_eq!(ex.status(), Some(200));
        assert_eq!(ex.wall_start_ns(), 1_700_000_000_000_000_000);
        assert_eq!(ex.timing.head_ns, Some(5_000_000));
        assert_eq!(ex.timing.end_ns, Some(7_000_000));
    }

    #[test]
    fn broken_separators_and_headers_are_skipped_with_warnings() {
        let file =
            "garbage line\nGET / HTTP/1.1\r\n\r\n\n🐵🙈🙉\n1 aa 5 -1\nGET /ok HTTP/1.1\r\nHost: h\r\n\r\n\n🐵🙈\n";
        let mut got = Vec::new();
        let report = import(file.as_bytes(), &mut |e| {
            got.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(report.skipped, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].request.target, "/ok");
        let err = import(&b"not a gor file at all"[..], &mut |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("no GoReplay payloads"), "{err}");
    }
}
