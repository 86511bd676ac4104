//! A recorded WebSocket session played against the target.
//!
//! After the upgrade, each of the client's messages goes at its recorded time after the
//! handshake (scaled by `--speed`; flat out: at once) — but never before the server's
//! messages that came before it in the recording have arrived: a client that asked,
//! waited for the answer and asked again does the same against staging, however fast or
//! slow staging is. A server that lets `PATIENCE` (1 s) pass without them is not waited for
//! again. Pings are answered and the server's close returned as a client does; a close the
//! recorded client only sent in answer to the server's is not sent first. The session ends
//! as the recorded one did: closed by either side (waiting for the other's close), or
//! dropped at its recorded length. Everything both sides send is read into a session like
//! the proxy's, for the comparison and the results tape.

use std::time::Duration;

use bytes::Bytes;
use tapedeck_captures::websocket::{close_payload, frame, Kind, Limits, Session, Side, WebSocket};
use tapedeck_captures::Exchange;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How long the replay waits for server messages the recording says came before the next
/// client message, and for a close the server owes.
const PATIENCE: Duration = Duration::from_secs(1);
/// A session is played for a day at most.
const MAX_SPAN: Duration = Duration::from_secs(24 * 3600);
/// A flat-out session whose server never stops talking is cut this long after the last
/// client message.
const FLAT_OUT_TAIL: Duration = Duration::from_secs(10);

/// How the recorded session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The client's close (planned as its last message).
    ClientClose,
    /// The server's close, which the client answered.
    ServerClose,
    /// No close: the connection dropped (or the recording ended) at its recorded length.
    Dropped,
}

/// A request extension: the session to play once the upgrade is accepted.
#[derive(Debug)]
pub struct WsPlan {
    /// The client's messages (its pongs are answered live, and a close that answered the
    /// server's is the replay's own answer: neither is planned).
    messages: Vec<Planned>,
    /// When the recorded session ended, after the handshake, at the replay's speed.
    end: Duration,
    ending: Ending,
    /// Server messages (text or binary) the recording has in all.
    server_messages: usize,
    /// `None`: flat out.
    speed: Option<f64>,
}

#[derive(Debug)]
struct Planned {
    /// After the handshake, at the replay's speed.
    due: Duration,
    kind: Kind,
    code: Option<u16>,
    data: Bytes,
    /// Server messages (text or binary) recorded before this one.
    after_server: usize,
}

impl WsPlan {
    /// The plan for a recorded WebSocket upgrade (its session recorded), at `speed`
    /// (`None`: flat out).
    pub fn of(recorded: &Exchange, speed: Option<f64>) -> Option<WsPlan> {
        let ws = recorded.websocket.as_ref()?;
        if recorded.status() != Some(101) {
            return None;
        }
        // Times count from the handshake: staging's may take longer than production's.
        let handshake = recorded.timing.head_ns.unwrap_or(0);
        // At most a day (an imported session can say anything about its times).
        let scale = |ns: u64| match speed {
            Some(s) if s.is_finite() && s > 0.0 => {
                Duration::try_from_secs_f64(ns.saturating_sub(handshake) as f64 / 1e9 / s)
                    .unwrap_or(MAX_SPAN)
                    .min(MAX_SPAN)
            }
            _ => Duration::ZERO,
        };
        let mut server = 0;
        let mut server_closed = false;
        let mut ending = Ending::Dropped;
        let mut messages = Vec::new();
        // Messages the capture did not keep are unknown: the plan ends where they begin.
        let known = |m: &&tapedeck_captures::websocket::Message| ws.dropped_from_ns.is_none_or(|at| m.at_ns < at);
        for m in ws.messages.iter().filter(known) {
            match (m.from, m.kind) {
                (Side::Server, Kind::Text | Kind::Binary) => server += 1,
                (Side::Server, Kind::Close) => {
                    server_closed = true;
                    if ending == Ending::Dropped {
                        ending = Ending::ServerClose;
                    }
                }
                (Side::Client, Kind::Pong) | (Side::Server, _) => {}
                // The recorded client's answer to the server's close: the replay answers.
                (Side::Client, Kind::Close) if server_closed => {}
                (Side::Client, kind) => {
                    if kind == Kind::Close && ending == Ending::Dropped {
                        ending = Ending::ClientClose;
                    }
                    messages.push(Planned {
                        due: scale(m.at_ns),
                        kind,
                        code: m.code,
                        data: m.data.bytes(),
                        after_server: server,
                    })
                }
            }
        }
        let last = ws.messages.last().map_or(handshake, |m| m.at_ns);
        let end = scale(ws.end_ns.unwrap_or(last).max(last));
        Some(WsPlan { messages, end, ending, server_messages: server, speed })
    }

    /// How long the recorded session lasts at the replay's speed (added to the timeout).
    pub fn span(&self) -> Duration {
        self.end + 2 * PATIENCE
    }
}

/// Plays `plan` on an upgraded connection `io`; `sent_at` is when the upgrade request was
/// sent (what the messages' times count from, as in a capture). The session as both sides
/// sent it.
pub async fn play<T>(io: T, plan: &WsPlan, deflate: bool, sent_at: Instant, max_body: usize) -> WebSocket
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let ns = || sent_at.elapsed().as_nanos() as u64;
    let begin = Instant::now();
    let mut session = Session::new(Limits::for_max_body(max_body), deflate);
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = vec![0u8; 16 << 10];
    let (mut next, mut handled, mut server_messages) = (0, 0, 0);
    let (mut sent_close, mut server_closed) = (false, false);
    let mut last_event = Instant::now();
    // Set once the server let a wait for its messages pass: not waited for again.
    let mut impatient = false;
    // When every client message was out, and when our close went.
    let (mut all_sent, mut close_sent): (Option<Instant>, Option<Instant>) = (None, None);
    loop {
        if sent_close && server_closed {
            break;
        }
        let due = plan.messages.get(next).filter(|_| !sent_close).map(|m| {
            // Its time: as recorded after the handshake, or (flat out) once the last thing
            // happened.
            let at = match plan.speed {
                Some(_) => begin + m.due,
                None => last_event,
            };
            if server_messages >= m.after_server || impatient {
                at
            } else {
                // Its answers have not all come: wait for them, a while.
                at.max(last_event) + PATIENCE
            }
        });
        // A message due now goes before anything is read (a server that never stops
        // talking must not hold the client's messages back).
        if due.is_some_and(|at| at <= Instant::now()) {
            let m = &plan.messages[next];
            impatient |= server_messages < m.after_server;
            next += 1;
            last_event = Instant::now();
            let payload = payload_of(m);
            if m.kind == Kind::Close {
                sent_close = true;
                close_sent = Some(Instant::now());
            }
            if send(&mut wr, &mut session, m.kind, &payload, ns()).await.is_err() {
                break;
            }
            continue;
        }
        if due.is_none() && all_sent.is_none() {
            all_sent = Some(Instant::now());
        }
        // With nothing left to send: how long the server may still talk.
        let answered = server_messages >= plan.server_messages;
        let deadline = match (close_sent, all_sent, plan.speed) {
            (Some(at), ..) => at + PATIENCE,
            (None, None, _) => Instant::now() + PATIENCE,
            (None, Some(at), Some(_)) => match plan.ending {
                // The server closed the recorded session: it gets a little longer.
                Ending::ServerClose => (begin + plan.end).max(at) + PATIENCE,
                _ => (begin + plan.end).max(at),
            },
            // Flat out: until every recorded answer came (and, if the server closed the
            // recorded session, its close), or the server went quiet.
            (None, Some(at), None) if answered && plan.ending != Ending::ServerClose => at.min(Instant::now()),
            (None, Some(at), None) => (last_event + PATIENCE).min(at + FLAT_OUT_TAIL),
        };
        tokio::select! {
            read = rd.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                session.feed(Side::Server, &buf[..n], ns());
                let fresh: Vec<(Kind, Option<u16>, Bytes)> = session.log().messages[handled..]
                    .iter()
                    .filter(|m| m.from == Side::Server)
                    .map(|m| (m.kind, m.code, m.data.bytes()))
                    .collect();
                for (kind, code, data) in fresh {
                    last_event = Instant::now();
                    match kind {
                        Kind::Text | Kind::Binary => server_messages += 1,
                        Kind::Ping => {
                            if send(&mut wr, &mut session, Kind::Pong, &data, ns()).await.is_err() {
                                break;
                            }
                        }
                        Kind::Close => {
                            server_closed = true;
                            if !sent_close {
                                sent_close = true;
                                close_sent = Some(Instant::now());
                                let echo = close_payload(code, b"");
                                if send(&mut wr, &mut session, Kind::Close, &echo, ns()).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Kind::Pong => {}
                    }
                }
                handled = session.log().messages.len();
            }
            // Due: sent at the top of the next pass.
            _ = tokio::time::sleep_until(due.unwrap_or(deadline)), if due.is_some() => {}
            _ = tokio::time::sleep_until(deadline), if due.is_none() => {
                // Our close went unanswered; or the recorded connection dropped here.
                if sent_close || plan.ending == Ending::Dropped {
                    break;
                }
                // The server owes the close it sent in the recording: close as a client would.
                sent_close = true;
                close_sent = Some(Instant::now());
                if send(&mut wr, &mut session, Kind::Close, &close_payload(Some(1000), b""), ns()).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    session.finish(ns())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub fn new_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The `Sec-WebSocket-Accept` a server owes `key` (RFC 6455 §4.2.2).
pub fn accept_for(key: &str) -> String {
    use base64::Engine as _;
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// What a planned message carries on the wire. A control frame holds at most 125 bytes
/// (scrubbing can lengthen a recorded one): cut to fit, a close's reason at a character.
fn payload_of(m: &Planned) -> Vec<u8> {
    match m.kind {
        Kind::Close => {
            let mut reason = &m.data[..m.data.len().min(123)];
            while std::str::from_utf8(reason).is_err() && !reason.is_empty() {
                reason = &reason[..reason.len() - 1];
            }
            close_payload(m.code, reason)
        }
        Kind::Ping | Kind::Pong => m.data[..m.data.len().min(125)].to_vec(),
        _ => m.data.to_vec(),
    }
}

/// Writes one masked frame, and reads it into the session as the client's.
async fn send<W: AsyncWrite + Unpin>(
    wr: &mut W,
    session: &mut Session,
    kind: Kind,
    payload: &[u8],
    now_ns: u64,
) -> std::io::Result<()> {
    let bytes = frame(kind, payload, Some(rand::random::<[u8; 4]>()));
    session.feed(Side::Client, &bytes, now_ns);
    wr.write_all(&bytes).await?;
    wr.flush().await
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_is_rfc_6455s_example() {
        assert_eq!(super::accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
