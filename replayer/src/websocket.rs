//! A recorded WebSocket session played against the target: after the upgrade, the
//! client's messages go at their recorded times (scaled by `--speed`; flat out, each once
//! the server messages that came before it in the recording have come, or a second has
//! passed without them), pings are answered and the server's close returned as a client
//! does, and everything both sides send is read into a session like the proxy's, for the
//! comparison and the results tape.

use std::time::Duration;

use bytes::Bytes;
use tapedeck_captures::websocket::{close_payload, frame, Kind, Limits, Session, Side, WebSocket};
use tapedeck_captures::Exchange;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How long a flat-out replay waits for the server's messages before it sends the next
/// client message anyway, and how long a session waits for the server's close.
const PATIENCE: Duration = Duration::from_secs(1);

/// A request extension: the session to play once the upgrade is accepted.
#[derive(Debug)]
pub struct WsPlan {
    /// The client's messages (its pongs are answered live, not replayed).
    messages: Vec<Planned>,
    /// When the recorded session ended, at the replay's speed.
    end: Option<Duration>,
    /// Server messages (text or binary) the recording has in all.
    server_messages: usize,
    /// `None`: flat out.
    speed: Option<f64>,
}

#[derive(Debug)]
struct Planned {
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
        let scale = |ns: u64| match speed {
            Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(ns as f64 / 1e9 / s),
            _ => Duration::ZERO,
        };
        let mut server = 0;
        let mut messages = Vec::new();
        for m in &ws.messages {
            match (m.from, m.kind) {
                (Side::Server, Kind::Text | Kind::Binary) => server += 1,
                (Side::Client, Kind::Pong) | (Side::Server, _) => {}
                (Side::Client, kind) => messages.push(Planned {
                    due: scale(m.at_ns),
                    kind,
                    code: m.code,
                    data: m.data.bytes(),
                    after_server: server,
                }),
            }
        }
        Some(WsPlan { messages, end: ws.end_ns.map(scale), server_messages: server, speed })
    }

    /// How long the recorded session lasts at the replay's speed (added to the timeout).
    pub fn span(&self) -> Duration {
        self.end.unwrap_or_else(|| self.messages.last().map_or(Duration::ZERO, |m| m.due))
    }
}

/// Plays `plan` on an upgraded connection `io`, from `start` (when the upgrade request was
/// sent); the session as both sides sent it.
pub async fn play<T>(io: T, plan: &WsPlan, deflate: bool, start: Instant, max_body: usize) -> WebSocket
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let ns = || start.elapsed().as_nanos() as u64;
    let mut session = Session::new(Limits::for_max_body(max_body), deflate);
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = vec![0u8; 16 << 10];
    let (mut next, mut handled, mut server_messages) = (0, 0, 0);
    let (mut sent_close, mut server_closed) = (false, false);
    let mut last_event = Instant::now();
    let mut impatient = false;
    // When every client message was out, and when our close went.
    let (mut all_sent, mut close_sent): (Option<Instant>, Option<Instant>) = (None, None);
    loop {
        if sent_close && server_closed {
            break;
        }
        let due = plan.messages.get(next).filter(|_| !sent_close).map(|m| match plan.speed {
            Some(_) => start + m.due,
            // A server that let one wait pass without its answers is not waited for again.
            None if server_messages >= m.after_server || impatient => Instant::now(),
            None => last_event + PATIENCE,
        });
        if due.is_none() && all_sent.is_none() {
            all_sent = Some(Instant::now());
        }
        // With nothing left to send: how long the server may still talk.
        let deadline = match (close_sent, all_sent, plan.speed, plan.end) {
            (Some(at), ..) => at + PATIENCE,
            // At the recorded pace: the recorded session's length, and a little more.
            (None, _, Some(_), Some(end)) => start + end + PATIENCE,
            // Flat out: until every recorded answer came, or the server went quiet (a
            // server that never stops talking is cut after a while).
            (None, Some(at), _, _) if server_messages >= plan.server_messages => at.min(Instant::now()),
            (None, Some(at), _, _) => (last_event + PATIENCE).min(at + 10 * PATIENCE),
            (None, None, _, _) => Instant::now() + PATIENCE,
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
            _ = tokio::time::sleep_until(due.unwrap_or(deadline)), if due.is_some() => {
                let m = &plan.messages[next];
                impatient |= plan.speed.is_none() && server_messages < m.after_server;
                next += 1;
                last_event = Instant::now();
                let payload = if m.kind == Kind::Close { close_payload(m.code, &m.data) } else { m.data.to_vec() };
                if m.kind == Kind::Close {
                    sent_close = true;
                    close_sent = Some(Instant::now());
                }
                if send(&mut wr, &mut session, m.kind, &payload, ns()).await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline), if due.is_none() => {
                if sent_close {
                    // Our close went unanswered.
                    break;
                }
                // The recording ended without the client's close: end as a client would.
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
