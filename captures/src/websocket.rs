//! WebSocket sessions (RFC 6455): the messages both sides sent after an upgrade, read from
//! the bytes as they went by.
//!
//! A [`Session`] follows the two directions of one upgraded connection: it parses frames
//! incrementally (any chunking), unmasks the client's payloads, joins fragmented messages,
//! inflates compressed ones (`permessage-deflate`, RFC 7692) and keeps them, with the time
//! each was complete, within [`Limits`]. It only reads: the proxy forwards the bytes
//! untouched whatever it makes of them, and when they stop being WebSocket frames it stops
//! reading and says so ([`WebSocket::unreadable`]).
//!
//! [`frame`] writes a (client's, masked) frame, for the replayer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::blob::Blob;

/// Which side sent a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The client that asked for the upgrade.
    Client,
    /// The server that accepted it.
    Server,
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// Bytes.
    Binary,
    /// The closing handshake (with a code and a reason).
    Close,
    /// A ping.
    Ping,
    /// A pong.
    Pong,
}

impl Kind {
    fn of(opcode: u8) -> Option<Kind> {
        Some(match opcode {
            1 => Kind::Text,
            2 => Kind::Binary,
            8 => Kind::Close,
            9 => Kind::Ping,
            10 => Kind::Pong,
            _ => return None,
        })
    }

    /// The frame opcode.
    pub fn opcode(self) -> u8 {
        match self {
            Kind::Text => 1,
            Kind::Binary => 2,
            Kind::Close => 8,
            Kind::Ping => 9,
            Kind::Pong => 10,
        }
    }

    /// Ping, pong or close.
    pub fn is_control(self) -> bool {
        matches!(self, Kind::Close | Kind::Ping | Kind::Pong)
    }

    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Binary => "binary",
            Kind::Close => "close",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
        }
    }
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Message {
    /// Who sent it.
    pub from: Side,
    /// When it was complete (its last frame read), ns after the upgrade request started.
    pub at_ns: u64,
    /// What it is.
    pub kind: Kind,
    /// A close message's status code (1000 normal, 1001 going away …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The payload (a close message's reason), inflated when it was compressed; at most a
    /// prefix when `truncated`.
    #[serde(default)]
    pub data: Blob,
    /// The payload's length (inflated), in bytes; for a compressed message past the
    /// session's budget, what was inflated of it and the rest as sent.
    #[serde(default)]
    pub len: u64,
    /// Set when `data` holds less than the payload.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A WebSocket session: what followed a `101 Switching Protocols`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct WebSocket {
    /// The messages of both sides, in the order they were complete.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Messages seen but not kept ([`Limits`], or the pool all sessions share).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// When the first message not kept was complete, ns after the upgrade request started:
    /// from there on the session is known only in part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_from_ns: Option<u64>,
    /// When the connection ended, ns after the upgrade request started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<u64>,
    /// `permessage-deflate` when compressed messages were inflated before storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded_from: Option<String>,
    /// Why reading stopped before the connection ended (bytes that are not WebSocket
    /// frames, a message that does not inflate): nothing after that is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// How the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Both sides sent their close.
    Closed,
    /// One side sent its close; the connection ended without the other's.
    HalfClosed,
    /// The connection ended without a close.
    Dropped,
    /// The recorder stopped (the proxy shut down) with the session open.
    Cut,
}

impl Ended {
    /// In words.
    pub fn describe(self) -> &'static str {
        match self {
            Ended::Closed => "closed by both sides",
            Ended::HalfClosed => "one side closed, the other never answered",
            Ended::Dropped => "dropped without a close",
            Ended::Cut => "cut when the proxy stopped",
        }
    }
}

impl WebSocket {
    /// The messages one side sent.
    pub fn from(&self, side: Side) -> impl Iterator<Item = &Message> + '_ {
        self.messages.iter().filter(move |m| m.from == side)
    }

    /// When `side`'s first text or binary message was complete.
    pub fn first_data(&self, side: Side) -> Option<u64> {
        self.from(side).find(|m| matches!(m.kind, Kind::Text | Kind::Binary)).map(|m| m.at_ns)
    }

    /// How long the server took to answer: for each text or binary message of the client's
    /// that the server's next text or binary message followed (before the client's next),
    /// the time between them, ns.
    pub fn answer_times(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let mut asked: Option<u64> = None;
        for m in self.messages.iter().filter(|m| matches!(m.kind, Kind::Text | Kind::Binary)) {
            match m.from {
                Side::Client => asked = Some(m.at_ns),
                Side::Server => {
                    if let Some(at) = asked.take() {
                        out.push(m.at_ns.saturating_sub(at));
                    }
                }
            }
        }
        out
    }

    /// The first close message, whoever sent it.
    pub fn close(&self) -> Option<&Message> {
        self.messages.iter().find(|m| m.kind == Kind::Close)
    }
}

/// What a session keeps.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Payload bytes kept in all, both sides (the capture's `--max-body`).
    pub max_bytes: usize,
    /// Messages kept at most.
    pub max_messages: usize,
}

impl Limits {
    /// Limits for a capture that keeps `max_body` bytes of a body.
    pub fn for_max_body(max_body: usize) -> Limits {
        Limits { max_bytes: max_body, max_messages: 10_000 }
    }
}

/// The value a `Sec-WebSocket-Extensions` header of a `101` has when the server accepted
/// compression.
pub fn deflate_accepted(extensions: &str) -> bool {
    extensions
        .split(',')
        .any(|e| e.split(';').next().is_some_and(|n| n.trim().eq_ignore_ascii_case("permessage-deflate")))
}

/// Both directions of one WebSocket connection, as they are read.
pub struct Session {
    log: WebSocket,
    budget: Budget,
    readers: [Reader; 2],
    done: Vec<Done>,
    /// Whether each side has sent its close.
    closed: [bool; 2],
}

impl Session {
    /// A session whose server accepted compression (`deflate`) or not.
    pub fn new(limits: Limits, deflate: bool) -> Session {
        let log = WebSocket { decoded_from: deflate.then(|| "permessage-deflate".to_string()), ..Default::default() };
        Session {
            log,
            budget: Budget { limits, kept_bytes: 0, messages: 0, pool: None, held: 0 },
            readers: [Reader::new(deflate), Reader::new(deflate)],
            done: Vec::new(),
            closed: [false; 2],
        }
    }

    /// Keeps what the session keeps within `pool` too (shared by the sessions under way).
    pub fn with_pool(mut self, pool: Arc<Pool>) -> Session {
        self.budget.pool = Some(pool);
        self
    }

    /// Reads `bytes` that `from` sent; messages they complete are dated `now_ns`.
    pub fn feed(&mut self, from: Side, bytes: &[u8], now_ns: u64) {
        if self.log.unreadable.is_some() || bytes.is_empty() {
            return;
        }
        let result = self.readers[from as usize].feed(bytes, &mut self.budget, &mut self.done);
        for done in std::mem::take(&mut self.done) {
            self.complete(from, done, now_ns);
        }
        if let Err(why) = result {
            self.log.unreadable = Some(format!("{} {why}", side_name(from)));
        }
    }

    fn complete(&mut self, from: Side, done: Done, now_ns: u64) {
        if done.kind == Kind::Close {
            self.closed[from as usize] = true;
        }
        // A close is always kept (it is small and says how the session ended).
        let full = self.log.messages.len() >= self.budget.limits.max_messages || !done.kept;
        if done.kind != Kind::Close && full {
            self.log.dropped += 1;
            self.log.dropped_from_ns.get_or_insert(now_ns);
            return;
        }
        self.budget.messages = self.log.messages.len() + 1;
        let (code, data) = match done.kind {
            Kind::Close if done.data.len() >= 2 => {
                (Some(u16::from_be_bytes([done.data[0], done.data[1]])), done.data[2..].to_vec())
            }
            _ => (None, done.data),
        };
        let len = if done.kind == Kind::Close { data.len() as u64 } else { done.len };
        self.log.messages.push(Message {
            from,
            at_ns: now_ns,
            kind: done.kind,
            code,
            truncated: (data.len() as u64) < len,
            data: Blob::from(data),
            len,
        });
    }

    /// The session so far, ended at `end_ns`.
    pub fn finish(mut self, end_ns: u64) -> WebSocket {
        self.log.end_ns = Some(end_ns);
        self.log.ended = Some(match self.closed {
            [true, true] => Ended::Closed,
            [false, false] => Ended::Dropped,
            _ => Ended::HalfClosed,
        });
        if self.log.unreadable.is_none() {
            for (i, r) in self.readers.iter().enumerate() {
                if r.partial() {
                    // The connection ended inside a frame: what was whole is kept.
                    let side = if i == 0 { Side::Client } else { Side::Server };
                    self.log.unreadable = Some(format!("{} connection ended inside a frame", side_name(side)));
                }
            }
        }
        self.log
    }

    /// Whether both sides have sent their close.
    pub fn both_closed(&self) -> bool {
        self.closed[0] && self.closed[1]
    }

    /// The session so far (for a replay's progress).
    pub fn log(&self) -> &WebSocket {
        &self.log
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Client => "client:",
        Side::Server => "server:",
    }
}

/// What a session may still keep and inflate.
struct Budget {
    limits: Limits,
    kept_bytes: usize,
    /// Messages kept so far.
    messages: usize,
    /// Shared with the sessions under way, and what this one holds of it.
    pool: Option<Arc<Pool>>,
    held: usize,
}

impl Budget {
    /// Takes up to `want` bytes of the payload budget; what was granted.
    fn take(&mut self, want: usize) -> usize {
        let mut granted = want.min(self.limits.max_bytes.saturating_sub(self.kept_bytes));
        if let Some(pool) = &self.pool {
            granted = pool.take(granted);
            self.held += granted;
        }
        self.kept_bytes += granted;
        granted
    }
}

impl Budget {
    /// Takes exactly `cost` from the pool (if any); false when it has less.
    fn charge(&mut self, cost: usize) -> bool {
        let Some(pool) = &self.pool else { return true };
        let granted = pool.take(cost);
        if granted < cost {
            pool.give(granted);
            return false;
        }
        self.held += cost;
        true
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(self.held);
        }
    }
}

/// What a message costs to keep besides its payload.
const MESSAGE_COST: usize = 64;

/// Bytes that all sessions under way may keep together (a sidecar with thousands of open
/// sessions must not keep `--max-body` for each): a session takes from it as it keeps
/// messages and gives it back when it ends.
#[derive(Debug)]
pub struct Pool(AtomicUsize);

impl Pool {
    /// A pool of `bytes`.
    pub fn new(bytes: usize) -> Arc<Pool> {
        Arc::new(Pool(AtomicUsize::new(bytes)))
    }

    /// Bytes left.
    pub fn available(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn take(&self, want: usize) -> usize {
        let mut granted = 0;
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
            granted = want.min(left);
            Some(left - granted)
        });
        granted
    }

    fn give(&self, bytes: usize) {
        self.0.fetch_add(bytes, Ordering::AcqRel);
    }
}

/// A message read whole.
struct Done {
    kind: Kind,
    data: Vec<u8>,
    len: u64,
    /// Whether the session had room for it when it began.
    kept: bool,
}

/// A frame's head, once read.
#[derive(Clone, Copy)]
struct Head {
    fin: bool,
    kind: Option<Kind>,
    compressed: bool,
    mask: Option<[u8; 4]>,
    len: u64,
}

/// The message being put together from its frames.
struct Assembly {
    kind: Kind,
    compressed: bool,
    data: Vec<u8>,
    len: u64,
    /// Whether this message keeps its bytes (it does while the session keeps messages).
    keeps: bool,
    /// A compressed message whose DEFLATE stream ended (BFINAL).
    stream_ended: bool,
}

/// One direction's frame reader.
struct Reader {
    /// The frame head read so far (at most 14 bytes).
    head: [u8; 14],
    head_len: usize,
    /// The current frame, its payload bytes still to come, and how many came.
    frame: Option<Head>,
    remaining: u64,
    seen: u64,
    /// A data message across frames; a control frame (which may come between them).
    message: Option<Assembly>,
    control: Option<Assembly>,
    inflater: Option<flate2::Decompress>,
    /// False once inflating stopped (the budget spent): compressed messages are then kept
    /// as their compressed length.
    inflating: bool,
    /// Unmasked compressed bytes on their way to the inflater.
    scratch: Vec<u8>,
}

impl Reader {
    fn new(deflate: bool) -> Reader {
        Reader {
            head: [0; 14],
            head_len: 0,
            frame: None,
            remaining: 0,
            seen: 0,
            message: None,
            control: None,
            inflater: deflate.then(|| flate2::Decompress::new(false)),
            inflating: true,
            scratch: Vec::new(),
        }
    }

    fn partial(&self) -> bool {
        self.head_len > 0 || self.frame.is_some() || self.message.is_some()
    }

    /// Reads `bytes`; messages they complete go to `done`.
    fn feed(&mut self, mut bytes: &[u8], session: &mut Budget, done: &mut Vec<Done>) -> Result<(), String> {
        while !bytes.is_empty() {
            let Some(head) = self.frame else {
                let need = head_len(&self.head[..self.head_len]);
                let take = (need - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
                self.head_len += take;
                bytes = &bytes[take..];
                if self.head_len == head_len(&self.head[..self.head_len]) {
                    let head = parse_head(&self.head[..self.head_len])?;
                    self.head_len = 0;
                    self.start(head, session)?;
                    if head.len == 0 {
                        self.end_frame(session, done)?;
                    }
                }
                continue;
            };
            let take = (self.remaining.min(bytes.len() as u64)) as usize;
            let offset = self.seen;
            self.seen += take as u64;
            self.remaining -= take as u64;
            let raw = &bytes[..take];
            bytes = &bytes[take..];
            self.payload(raw, head, offset, session)?;
            if self.remaining == 0 {
                self.end_frame(session, done)?;
            }
        }
        Ok(())
    }

    fn start(&mut self, head: Head, session: &mut Budget) -> Result<(), String> {
        match head.kind {
            Some(kind) if kind.is_control() => {
                if !head.fin || head.len > 125 || head.compressed {
                    return Err("control frame that is fragmented, compressed or longer than 125 bytes".into());
                }
                let keeps = session.charge(MESSAGE_COST);
                self.control =
                    Some(Assembly { kind, compressed: false, data: Vec::new(), len: 0, keeps, stream_ended: false });
            }
            Some(kind) => {
                if self.message.is_some() {
                    return Err("new message before the last one ended".into());
                }
                if head.compressed && self.inflater.is_none() {
                    return Err("compressed frame without permessage-deflate".into());
                }
                let keeps = session.messages < session.limits.max_messages && session.charge(MESSAGE_COST);
                self.message = Some(Assembly {
                    kind,
                    compressed: head.compressed,
                    data: Vec::new(),
                    len: 0,
                    keeps,
                    stream_ended: false,
                });
            }
            None => {
                if self.message.is_none() {
                    return Err("continuation frame without a message".into());
                }
                if head.compressed {
                    return Err("continuation frame with RSV1 set".into());
                }
            }
        }
        self.frame = Some(head);
        self.remaining = head.len;
        self.seen = 0;
        Ok(())
    }

    /// A chunk of the current frame's payload, as sent (masked with `head`'s mask, `offset`
    /// bytes into the frame). Only what is kept or inflated is unmasked and copied: the
    /// rest is counted.
    fn payload(&mut self, raw: &[u8], head: Head, offset: u64, session: &mut Budget) -> Result<(), String> {
        if head.kind.is_some_and(Kind::is_control) {
            if let Some(c) = self.control.as_mut() {
                unmask_into(&mut c.data, raw, head.mask, offset);
                c.len += raw.len() as u64;
            }
            return Ok(());
        }
        let Some(m) = self.message.as_mut() else { return Ok(()) };
        if m.compressed && m.stream_ended {
            // After its final block: nothing more to read.
            Ok(())
        } else if m.compressed {
            let inflater = self.inflater.as_mut().ok_or("compressed frame without permessage-deflate")?;
            if self.inflating {
                self.scratch.clear();
                unmask_into(&mut self.scratch, raw, head.mask, offset);
                self.inflating = inflate(inflater, &self.scratch, m, session)?;
            } else {
                // Past the budget: kept as its compressed length.
                m.len += raw.len() as u64;
            }
            Ok(())
        } else {
            m.len += raw.len() as u64;
            let keep = if m.keeps { session.take(raw.len()) } else { 0 };
            unmask_into(&mut m.data, &raw[..keep], head.mask, offset);
            Ok(())
        }
    }

    fn end_frame(&mut self, session: &mut Budget, done: &mut Vec<Done>) -> Result<(), String> {
        let head = self.frame.take().ok_or("frame ended twice")?;
        if head.kind.is_some_and(Kind::is_control) {
            if let Some(c) = self.control.take() {
                done.push(Done { kind: c.kind, len: c.len, data: c.data, kept: c.keeps });
            }
            return Ok(());
        }
        if !head.fin {
            return Ok(());
        }
        let Some(mut m) = self.message.take() else { return Ok(()) };
        if m.compressed && self.inflating && !m.stream_ended {
            // RFC 7692 §7.2.2: the sender removed this empty block's tail; put it back.
            let inflater = self.inflater.as_mut().ok_or("compressed frame without permessage-deflate")?;
            self.inflating = inflate(inflater, &[0x00, 0x00, 0xff, 0xff], &mut m, session)?;
        }
        done.push(Done { kind: m.kind, len: m.len, data: m.data, kept: m.keeps });
        Ok(())
    }
}

/// Appends `raw` to `out`, unmasked (`offset` bytes into its frame).
fn unmask_into(out: &mut Vec<u8>, raw: &[u8], mask: Option<[u8; 4]>, offset: u64) {
    match mask {
        Some(mask) => out.extend(raw.iter().enumerate().map(|(i, b)| b ^ mask[(offset as usize + i) % 4])),
        None => out.extend_from_slice(raw),
    }
}

/// Inflates `input` into `m`, keeping what the budget has room for. `Ok(false)` once the
/// budget is spent: inflating stops there (the rest of a bomb is never expanded), and with
/// it the window later messages would need.
fn inflate(
    inflater: &mut flate2::Decompress,
    mut input: &[u8],
    m: &mut Assembly,
    session: &mut Budget,
) -> Result<bool, String> {
    let mut out = [0u8; 16 << 10];
    loop {
        if !m.keeps {
            return Ok(false);
        }
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress(input, &mut out, flate2::FlushDecompress::Sync)
            .map_err(|e| format!("compressed message does not inflate ({e})"))?;
        let used = (inflater.total_in() - before_in) as usize;
        let produced = (inflater.total_out() - before_out) as usize;
        input = &input[used..];
        m.len += produced as u64;
        let keep = session.take(produced);
        m.data.extend_from_slice(&out[..keep]);
        if keep < produced {
            return Ok(false);
        }
        // A sender may end a message's DEFLATE stream (BFINAL, RFC 7692 §7.2.3.3): what
        // follows in this message (the appended tail) is not read, and the next message
        // starts a new stream.
        if status == flate2::Status::StreamEnd {
            inflater.reset(false);
            m.stream_ended = true;
            return Ok(true);
        }
        if (input.is_empty() && produced < out.len()) || (used == 0 && produced == 0) {
            return Ok(true);
        }
    }
}

/// How long the head starting with `bytes` is (as far as they tell).
fn head_len(bytes: &[u8]) -> usize {
    if bytes.len() < 2 {
        return 2;
    }
    let extended = match bytes[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if bytes[1] & 0x80 != 0 { 4 } else { 0 }
}

fn parse_head(b: &[u8]) -> Result<Head, String> {
    if b[0] & 0x30 != 0 {
        return Err("frame with RSV2/RSV3 set (an extension tapedeck does not read)".into());
    }
    let opcode = b[0] & 0x0f;
    let kind = match opcode {
        0 => None,
        op => Some(Kind::of(op).ok_or_else(|| format!("frame with unknown opcode {op}"))?),
    };
    let (len, at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
        127 => {
            let n = u64::from_be_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]);
            if n >> 63 != 0 {
                return Err("frame length with its top bit set".into());
            }
            (n, 10)
        }
        n => (n as u64, 2),
    };
    let mask = (b[1] & 0x80 != 0).then(|| [b[at], b[at + 1], b[at + 2], b[at + 3]]);
    Ok(Head { fin: b[0] & 0x80 != 0, kind, compressed: b[0] & 0x40 != 0, mask, len })
}

/// One whole frame of `kind` carrying `payload`, masked with `mask` (a client's frames
/// must be; a server's must not: `None`).
pub fn frame(kind: Kind, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | kind.opcode());
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(bit | n as u8),
        n @ 126..=0xffff => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close message's payload: the code, then the reason.
pub fn close_payload(code: Option<u16>, reason: &[u8]) -> Vec<u8> {
    match code {
        Some(code) => [&code.to_be_bytes()[..], reason].concat(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_bytes: 1 << 20, max_messages: 100 }
    }

    /// Feeds `bytes` one byte at a time, then whole: both read the same.
    fn read(side: Side, bytes: &[u8], deflate: bool) -> WebSocket {
        let mut whole = Session::new(limits(), deflate);
        whole.feed(side, bytes, 7);
        let mut bytewise = Session::new(limits(), deflate);
        for b in bytes {
            bytewise.feed(side, std::slice::from_ref(b), 7);
        }
        let (whole, bytewise) = (whole.finish(9), bytewise.finish(9));
        assert_eq!(whole, bytewise);
        whole
    }

    #[test]
    fn masked_fragmented_messages_with_a_ping_between_read_whole() {
        let mask = Some([1, 2, 3, 4]);
        let mut bytes = Vec::new();
        // "hello world" in two frames, a ping between them.
        let mut first = frame(Kind::Text, b"hello ", mask);
        first[0] &= !0x80; // not final
        bytes.extend(first);
        bytes.extend(frame(Kind::Ping, b"p", mask));
        let mut cont = frame(Kind::Text, b"world", mask);
        cont[0] = 0x80; // final continuation
        bytes.extend(cont);
        bytes.extend(frame(Kind::Binary, &[0u8; 300], mask));
        bytes.extend(frame(Kind::Close, &close_payload(Some(1000), b"bye"), mask));
        let ws = read(Side::Client, &bytes, false);
        let kinds: Vec<_> = ws.messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [Kind::Ping, Kind::Text, Kind::Binary, Kind::Close]);
        assert_eq!(&ws.messages[1].data[..], b"hello world");
        assert_eq!(ws.messages[2].len, 300);
        assert_eq!((ws.messages[3].code, &ws.messages[3].data[..]), (Some(1000), &b"bye"[..]));
        assert!(ws.unreadable.is_none(), "{:?}", ws.unreadable);
        assert_eq!(ws.end_ns, Some(9));
    }

    #[test]
    fn compressed_messages_inflate_with_the_shared_window() {
        // Two messages from one compressor (context takeover): the second refers back.
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut bytes = Vec::new();
        for text in ["{\"email\":\"ann@example.com\"}", "{\"email\":\"ann@example.com\"}"] {
            let mut out = Vec::with_capacity(256);
            c.compress_vec(text.as_bytes(), &mut out, flate2::FlushCompress::Sync).unwrap();
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
            out.truncate(out.len() - 4);
            let mut f = frame(Kind::Text, &out, None);
            f[0] |= 0x40;
            bytes.extend(f);
        }
        let ws = read(Side::Server, &bytes, true);
        assert_eq!(ws.messages.len(), 2);
        for m in &ws.messages {
            assert_eq!(&m.data[..], b"{\"email\":\"ann@example.com\"}");
        }
        assert_eq!(ws.decoded_from.as_deref(), Some("permessage-deflate"));
    }

    /// A message compressed the way `z` goes on (one DEFLATE stream across messages), or
    /// ended with BFINAL (`finish`).
    fn compressed(z: &mut flate2::Compress, text: &[u8], finish: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        let flush = if finish { flate2::FlushCompress::Finish } else { flate2::FlushCompress::Sync };
        let start = z.total_in();
        loop {
            out.reserve(4096);
            let done = (z.total_in() - start) as usize;
            z.compress_vec(&text[done..], &mut out, flush).unwrap();
            if (z.total_in() - start) as usize >= text.len() && out.capacity() > out.len() {
                break;
            }
        }
        if out.ends_with(&[0, 0, 0xff, 0xff]) {
            out.truncate(out.len() - 4);
        }
        let mut f = frame(Kind::Text, &out, None);
        f[0] |= 0x40;
        f
    }

    #[test]
    fn a_compression_bomb_is_inflated_only_as_far_as_the_budget_keeps() {
        let mut z = flate2::Compress::new(flate2::Compression::best(), false);
        let mut bytes = compressed(&mut z, &vec![b'a'; 8 << 20], false);
        bytes.extend(compressed(&mut z, b"{\"after\":1}", false));
        let mut s = Session::new(Limits { max_bytes: 64 << 10, max_messages: 100 }, true);
        s.feed(Side::Server, &bytes, 1);
        let ws = s.finish(2);
        assert!(ws.unreadable.is_none(), "{:?}", ws.unreadable);
        // The bomb: its first 64 KiB kept, the rest never expanded.
        assert_eq!(ws.messages[0].data.len(), 64 << 10);
        assert!(ws.messages[0].truncated && ws.messages[0].len < 1 << 20, "{}", ws.messages[0].len);
        // After it, the window is gone: the next message is kept as its compressed length.
        assert!(ws.messages[1].data.is_empty() && ws.messages[1].truncated && ws.messages[1].len > 0);
    }

    #[test]
    fn a_message_ended_with_bfinal_does_not_empty_the_next_ones() {
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        let mut bytes = compressed(&mut z, b"{\"first\":\"one\"}", true);
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        bytes.extend(compressed(&mut z, b"{\"second\":2}", false));
        bytes.extend(compressed(&mut z, b"{\"third\":3}", false));
        let ws = read(Side::Server, &bytes, true);
        assert!(ws.unreadable.is_none(), "{:?}", ws.unreadable);
        let texts: Vec<_> = ws.messages.iter().map(|m| String::from_utf8_lossy(&m.data).into_owned()).collect();
        assert_eq!(texts, [r#"{"first":"one"}"#, r#"{"second":2}"#, r#"{"third":3}"#]);
    }

    #[test]
    fn limits_keep_a_prefix_and_count_what_they_drop() {
        let mut s = Session::new(Limits { max_bytes: 10, max_messages: 2 }, false);
        let mut bytes = frame(Kind::Text, b"0123456789abcdef", None);
        bytes.extend(frame(Kind::Text, b"more", None));
        bytes.extend(frame(Kind::Text, b"dropped", None));
        bytes.extend(frame(Kind::Close, &close_payload(Some(1001), b""), None));
        s.feed(Side::Server, &bytes, 1);
        let ws = s.finish(2);
        assert_eq!(&ws.messages[0].data[..], b"0123456789");
        assert!(ws.messages[0].truncated);
        assert_eq!(ws.messages[0].len, 16);
        // No room left: kept as a length.
        assert_eq!((ws.messages[1].data.len(), ws.messages[1].len, ws.messages[1].truncated), (0, 4, true));
        assert_eq!(ws.dropped, 1);
        assert_eq!(ws.close().and_then(|m| m.code), Some(1001));
    }

    #[test]
    fn bytes_that_are_not_frames_stop_reading_and_keep_what_came_before() {
        let mut bytes = frame(Kind::Text, b"ok", None);
        bytes.extend(b"\x83\x00"); // opcode 3: reserved
        bytes.extend(frame(Kind::Text, b"after", None));
        let ws = read(Side::Server, &bytes, false);
        assert_eq!(ws.messages.len(), 1);
        assert!(ws.unreadable.as_deref().is_some_and(|u| u.contains("unknown opcode 3")), "{:?}", ws.unreadable);
        for hostile in
            [&b"\x01\x7f\xff\xff\xff\xff\xff\xff\xff\xff"[..], b"\x89\x7e\x00\xff", b"\x80\x01x", b"\xc1\x01x"]
        {
            let ws = read(Side::Client, hostile, false);
            assert!(ws.unreadable.is_some(), "{hostile:?}");
        }
    }

    #[test]
    fn a_connection_cut_inside_a_frame_is_noted() {
        let bytes = frame(Kind::Text, b"cut here", None);
        let ws = read(Side::Server, &bytes[..5], false);
        assert!(ws.messages.is_empty());
        assert!(ws.unreadable.as_deref().is_some_and(|u| u.contains("inside a frame")));
    }

    #[test]
    fn extensions_header_says_whether_compression_was_accepted() {
        assert!(deflate_accepted("permessage-deflate; client_max_window_bits=15"));
        assert!(deflate_accepted("x-foo, PerMessage-Deflate"));
        assert!(!deflate_accepted("x-webkit-deflate-frame"));
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    #[test]
    fn sessions_share_the_pool_and_give_it_back_when_they_end() {
        let pool = Pool::new(1000);
        let limits = Limits { max_bytes: 1 << 20, max_messages: 100 };
        let mut a = Session::new(limits, false).with_pool(pool.clone());
        let mut b = Session::new(limits, false).with_pool(pool.clone());
        a.feed(Side::Server, &frame(Kind::Text, &[b'x'; 700], None), 1);
        // What is left of the pool, less b's message's own cost, is all b keeps.
        b.feed(Side::Server, &frame(Kind::Text, &[b'y'; 700], None), 1);
        let left_after_a = 1000 - 700 - MESSAGE_COST;
        assert_eq!(b.log().messages.len(), 1);
        assert_eq!(b.log().messages[0].data.len(), left_after_a - MESSAGE_COST);
        assert_eq!(pool.available(), 0);
        // The pool is spent: the next message is counted, not kept, and says from when.
        b.feed(Side::Server, &frame(Kind::Text, b"lost", None), 5);
        assert_eq!((b.log().dropped, b.log().dropped_from_ns), (1, Some(5)));
        drop(a.finish(2));
        assert_eq!(pool.available(), 700 + MESSAGE_COST);
        drop(b.finish(2));
        assert_eq!(pool.available(), 1000);
    }
}
