//! The one place that turns model types into bytes and back for `.tape` files (codec ids
//! [`CODEC_BINCODE2_ZSTD`](crate::tape::format::CODEC_BINCODE2_ZSTD) and
//! [`CODEC_BINCODE2_ZSTD_EXT`](crate::tape::format::CODEC_BINCODE2_ZSTD_EXT)): bincode 2 with its
//! standard configuration (varints, little-endian) and a byte limit, so that a damaged
//! length field fails cleanly instead of allocating without bound. Changing the codec means
//! a new codec id here, nowhere else.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

use crate::exchange::Exchange;
use crate::tape::format::{Footer, SegmentHeader, MAX_BLOCK_RAW};

const LIMIT: usize = MAX_BLOCK_RAW as usize;

fn config() -> Configuration<LittleEndian, Varint, Limit<LIMIT>> {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// A record, header or footer that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Appends `exchange` to `out` as a length-prefixed record; returns the record's length
/// including the prefix.
pub fn encode_record(exchange: &Exchange, out: &mut Vec<u8>) -> Result<usize, String> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    if let Err(e) = bincode::encode_into_std_write(exchange, out, config()) {
        out.truncate(start);
        return Err(e.to_string());
    }
    let len = out.len() - start - 4;
    match u32::try_from(len) {
        Ok(l) if l < MAX_BLOCK_RAW - 4 => {
            out[start..start + 4].copy_from_slice(&l.to_le_bytes());
            Ok(len + 4)
        }
        _ => {
            out.truncate(start);
            Err(format!("record of {len} bytes exceeds the {MAX_BLOCK_RAW} byte limit"))
        }
    }
}

/// Decodes the length-prefixed record at the start of `buf`; returns it and the number of
/// bytes consumed.
pub fn decode_record(buf: &[u8]) -> Result<(Exchange, usize), DecodeError> {
    let Some(prefix) = buf.get(..4) else {
        return Err(DecodeError(format!("record length cut short ({} bytes left)", buf.len())));
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let Some(body) = buf.get(4..4 + len) else {
        return Err(DecodeError(format!("record of {len} bytes overruns its block ({} left)", buf.len() - 4)));
    };
    let (exchange, used) = bincode::decode_from_slice::<Exchange, _>(body, config())
        .map_err(|e| DecodeError(format!("record does not decode: {e}")))?;
    if used != len {
        return Err(DecodeError(format!("record decoded {used} of its {len} bytes")));
    }
    Ok((exchange, len + 4))
}

/// Encodes a segment header.
pub fn encode_header(header: &SegmentHeader) -> Vec<u8> {
    // A header is a handful of short strings: encoding into a Vec cannot fail.
    bincode::encode_to_vec(header, config()).unwrap_or_default()
}

/// Decodes a segment header.
pub fn decode_header(buf: &[u8]) -> Result<SegmentHeader, DecodeError> {
    decode_whole(buf, "segment header")
}

/// Encodes a footer.
pub fn encode_footer(footer: &Footer) -> Vec<u8> {
    bincode::encode_to_vec(footer, config()).unwrap_or_default()
}

/// Decodes a footer.
pub fn decode_footer(buf: &[u8]) -> Result<Footer, DecodeError> {
    decode_whole(buf, "footer")
}

fn decode_whole<T: bincode::Decode<()>>(buf: &[u8], what: &str) -> Result<T, DecodeError> {
    match bincode::decode_from_slice::<T, _>(buf, config()) {
        Ok((v, used)) if used == buf.len() => Ok(v),
        Ok((_, used)) => Err(DecodeError(format!("{what} decoded {used} of {} bytes", buf.len()))),
        Err(e) => Err(DecodeError(format!("{what} does not decode: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::*;

    fn sample() -> Exchange {
        let mut headers = Headers::new();
        headers.push("Host", "api.example.com");
        headers.push("X-Dup", "1");
        headers.push("x-dup", &b"\xff2"[..]);
        Exchange {
            id: ExchangeId(7),
            connection: ConnectionId(3),
            session: Some("tok_user_ab12".into()),
            sequence: 2,
            timing: Timing {
                tape_start_unix_ns: 1_700_000_000_000_000_000,
                start_ns: 5,
                head_ns: Some(9),
                end_ns: Some(11),
            },
            request: Request {
                message_ns: Vec::new(),
                trailers: Default::default(),
                method: "POST".into(),
                scheme: "http".into(),
                authority: "api.example.com".into(),
                target: "/orders?x=1".into(),
                version: HttpVersion::Http11,
                headers,
                body: Body::full(&b"{\"a\":1}"[..]),
            },
            response: Some(Response {
                message_ns: Vec::new(),
                trailers: Default::default(),
                status: 201,
                version: HttpVersion::H2,
                headers: Headers::new(),
                body: Body::default(),
            }),
            error: None,
            scrub: vec![ScrubHit { rule: "header:authorization".into(), count: 1 }],
            replay_of: Some(ExchangeId(1)),
            websocket: None,
        }
    }

    #[test]
    fn record_round_trips() {
        let ex = sample();
        let mut buf = Vec::new();
        let n = encode_record(&ex, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        let (back, used) = decode_record(&buf).unwrap();
        assert_eq!(used, n);
        assert_eq!(back, ex);
    }

    #[test]
    fn huge_declared_lengths_fail_without_allocating() {
        // A record whose body claims a 2^60-byte blob must fail cleanly.
        let mut buf = Vec::new();
        encode_record(&sample(), &mut buf).unwrap();
        for i in 4..buf.len() {
            let mut damaged = buf.clone();
            damaged[i] = 0xfd; // varint marker for a u64 length
            let _ = decode_record(&damaged);
        }
        assert!(decode_record(&[255, 255, 255, 255, 1]).is_err());
        assert!(decode_record(&[1]).is_err());
    }

    #[test]
    fn trailers_and_websocket_messages_travel_as_extensions_and_unknown_ones_are_skipped() {
        let mut ex = sample();
        ex.request.trailers.push("x-checksum", "abc");
        ex.response.as_mut().unwrap().trailers.push("grpc-status", "5");
        ex.response.as_mut().unwrap().trailers.push("grpc-message", "not found");
        ex.websocket = Some(crate::websocket::WebSocket {
            messages: vec![crate::websocket::Message {
                from: crate::websocket::Side::Server,
                at_ns: 12,
                kind: crate::websocket::Kind::Close,
                code: Some(1001),
                data: "going away".into(),
                len: 10,
                truncated: false,
            }],
            dropped: 3,
            dropped_from_ns: Some(15),
            end_ns: Some(20),
            decoded_from: Some("permessage-deflate".into()),
            unreadable: None,
            ended: Some(crate::websocket::Ended::HalfClosed),
        });
        let mut buf = Vec::new();
        encode_record(&ex, &mut buf).unwrap();
        assert_eq!(decode_record(&buf).unwrap().0, ex);

        // A later version's extension (tag 200) after the known ones: skipped, the rest read.
        let mut inner = buf[4..].to_vec();
        inner.push(200);
        inner.extend(bincode::encode_to_vec(vec![1u8, 2, 3], config()).unwrap());
        let mut framed = (inner.len() as u32).to_le_bytes().to_vec();
        framed.extend(inner);
        assert_eq!(decode_record(&framed).unwrap().0, ex);
    }

    #[test]
    fn extensions_that_declare_huge_lengths_fail_without_allocating() {
        let ex = sample();
        let mut buf = Vec::new();
        encode_record(&ex, &mut buf).unwrap();
        // Each extension tag with a payload that claims 2^60 elements.
        for tag in 1u8..=5 {
            let mut inner = buf[4..].to_vec();
            inner.push(tag);
            let mut payload = vec![0u8; 0];
            payload.push(253); // varint marker: a u64 follows
            payload.extend((1u64 << 60).to_le_bytes());
            inner.extend(bincode::encode_to_vec(payload, config()).unwrap());
            let mut framed = (inner.len() as u32).to_le_bytes().to_vec();
            framed.extend(inner);
            assert!(decode_record(&framed).is_err(), "tag {tag}");
        }
    }

    #[test]
    fn records_without_extensions_are_the_first_codecs_records() {
        // The first codec encoded the fields in declaration order, nothing after them: a
        // record without trailers is byte for byte what it wrote, so its tapes stay readable.
        let ex = sample();
        let (req, resp) = (&ex.request, ex.response.as_ref().unwrap());
        let c = config();
        let mut old = Vec::new();
        let mut put = |b: Vec<u8>| old.extend(b);
        put(bincode::encode_to_vec((ex.id, ex.connection, ex.session.clone(), ex.sequence, ex.timing), c).unwrap());
        put(bincode::encode_to_vec((&req.method, &req.scheme, &req.authority, &req.target, req.version), c).unwrap());
        put(bincode::encode_to_vec((&req.headers, &req.body), c).unwrap());
        put(bincode::encode_to_vec(1u8, c).unwrap()); // Some(response)
        put(bincode::encode_to_vec((resp.status, resp.version, &resp.headers, &resp.body), c).unwrap());
        put(bincode::encode_to_vec((ex.error, &ex.scrub, ex.replay_of), c).unwrap());
        let mut buf = Vec::new();
        encode_record(&ex, &mut buf).unwrap();
        assert_eq!(&buf[4..], &old[..]);
    }
}
