//! A WebSocket chat service for tests (tungstenite: an implementation other than
//! tapedeck's): greets, answers each text message, and closes when the client does.
//!
//! A text message `{"op":"quote","sku":S}` gets `{"n":N,"sku":S,"price":1999}` (the
//! drifted service charges 2099 for `A-7`); `{"op":"bye"}` gets `{"n":N,"bye":true}` and the
//! server's close (1000); any other text gets `{"n":N,"echo":TEXT}`, a binary message
//! `{"n":N,"bytes":LEN}`. `/refuse` is answered 404 without an upgrade. A slow service
//! takes its time before every answer.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A running chat service; stopped when dropped.
pub struct ChatServer {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChatServer {
    /// Production.
    pub async fn start() -> ChatServer {
        Self::serve(false, std::time::Duration::ZERO).await
    }

    /// Staging with a bug: `A-7` costs more.
    pub async fn start_drifted() -> ChatServer {
        Self::serve(true, std::time::Duration::ZERO).await
    }

    /// Staging that takes `delay` before every answer.
    pub async fn start_slow(delay: std::time::Duration) -> ChatServer {
        Self::serve(false, delay).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn serve(drifted: bool, delay: std::time::Duration) -> ChatServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // tungstenite's callback type, not ours.
                    #[allow(clippy::result_large_err)]
                    let refuse = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                        if req.uri().path() == "/refuse" {
                            let mut no = ErrorResponse::new(Some("no upgrade here".into()));
                            *no.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
                            return Err(no);
                        }
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, refuse).await else { return };
                    let _ = ws.send(Message::text(r#"{"hello":"welcome"}"#)).await;
                    let mut n = 0;
                    while let Some(Ok(m)) = ws.next().await {
                        n += 1;
                        if !delay.is_zero() && matches!(m, Message::Text(_) | Message::Binary(_)) {
                            tokio::time::sleep(delay).await;
                        }
                        let reply = match m {
                            Message::Text(t) => match serde_json::from_str::<serde_json::Value>(t.as_str()) {
                                Ok(v) if v["op"] == "bye" => {
                                    let _ = ws.send(Message::text(format!(r#"{{"n":{n},"bye":true}}"#))).await;
                                    let close = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                        code:
                                            tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                                        reason: "bye".into(),
                                    };
                                    let _ = ws.close(Some(close)).await;
                                    // Until the client's answer and the end of the connection.
                                    while let Some(Ok(_)) = ws.next().await {}
                                    return;
                                }
                                Ok(v) if v["op"] == "quote" => {
                                    let sku = v["sku"].as_str().unwrap_or("");
                                    let price = if drifted && sku == "A-7" { 2099 } else { 1999 };
                                    format!(r#"{{"n":{n},"sku":"{sku}","price":{price}}}"#)
                                }
                                _ => format!(r#"{{"n":{n},"echo":{:?}}}"#, t.as_str()),
                            },
                            Message::Binary(b) => format!(r#"{{"n":{n},"bytes":{}}}"#, b.len()),
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(Message::text(reply)).await.is_err() {
                            return;
                        }
                    }
                    // tungstenite has answered the client's close; flush it out.
                    let _ = ws.flush().await;
                });
            }
        });
        ChatServer { addr, task }
    }
}
