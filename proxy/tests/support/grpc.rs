//! A real gRPC service and client (tonic) for the tests: one service, `test.Echo`, with a
//! method of each kind. Messages are raw bytes (a pass-through codec): gRPC's framing,
//! trailers, statuses, deadlines and compression are tonic's own.
//!
//! - `Unary`: answers `echo:` + the request; `fail` gets NOT_FOUND, `slow` answers after 2 s;
//!   a drifted service (a staging with a bug) also answers NOT_FOUND to anything holding
//!   `order 7`.
//! - `ServerStream`: the request's first byte says how many messages follow, 20 ms apart;
//!   255: one, then a minute of nothing. The drifted service sends the first after 200 ms.
//! - `ClientStream`: answers the messages joined by `+` once the client's stream ends.
//! - `Bidi`: answers every message with `re:` + it as it arrives.
//!
//! And `shop.Orders/Get` (shop.proto beside this file), with real protobuf messages: the
//! order named by the request's `id`, for the customer its `email` names (Jane Doe); a
//! drifted service charges 100 cents more for orders whose id ends in 7.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
use tonic::codegen::{BoxFuture, CompressionEncoding, Service, StdError};
use tonic::server::{
    ClientStreamingService, Grpc, NamedService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Request, Response, Status, Streaming};

/// Messages as bytes, untouched.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

const MAX_MESSAGE: usize = 16 << 20;

type Messages = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

struct Unary {
    drift: bool,
}
impl UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let drift = self.drift;
        Box::pin(async move {
            let msg = req.into_inner();
            if drift && msg.windows(7).any(|w| w == b"order 7") {
                return Err(Status::not_found("order not found"));
            }
            match &msg[..] {
                b"fail" => Err(Status::not_found("no such thing: fail")),
                b"slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(Response::new(Bytes::from_static(b"late")))
                }
                _ => Ok(Response::new([&b"echo:"[..], &msg].concat().into())),
            }
        })
    }
}

/// A length-delimited protobuf field.
pub fn pb_field(number: u8, value: &[u8]) -> Vec<u8> {
    assert!(value.len() < 128 && number < 16);
    [&[number << 3 | 2, value.len() as u8][..], value].concat()
}

/// The first string field `number` of a protobuf message (strings and varints of short
/// lengths only).
pub fn pb_string(message: &[u8], number: u8) -> Option<String> {
    let mut at = 0;
    while at + 2 <= message.len() {
        let key = message[at];
        if key & 7 == 0 {
            // A varint: skip its bytes.
            at += 1;
            while *message.get(at)? & 0x80 != 0 {
                at += 1;
            }
            at += 1;
            continue;
        }
        let len = message[at + 1] as usize;
        let value = message.get(at + 2..at + 2 + len)?;
        if key == number << 3 | 2 {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        at += 2 + len;
    }
    None
}

/// `shop.GetOrder { id, email }`.
pub fn get_order(id: &str, email: &str) -> Vec<u8> {
    [pb_field(1, id.as_bytes()), pb_field(2, email.as_bytes())].concat()
}

struct Orders {
    drift: bool,
}
impl UnaryService<Bytes> for Orders {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let drift = self.drift;
        Box::pin(async move {
            let msg = req.into_inner();
            let id = pb_string(&msg, 1).ok_or_else(|| Status::invalid_argument("no id"))?;
            let email = pb_string(&msg, 2).unwrap_or_default();
            let customer = [pb_field(1, email.as_bytes()), pb_field(2, b"Jane Doe")].concat();
            let cents: u64 = if drift && id.ends_with('7') { 2099 } else { 1999 };
            // total_cents (3, varint) and status (4).
            let mut total = vec![3 << 3];
            let mut v = cents;
            while v >= 0x80 {
                total.push((v as u8) | 0x80);
                v >>= 7;
            }
            total.push(v as u8);
            let order = [pb_field(1, id.as_bytes()), pb_field(2, &customer), total, pb_field(4, b"shipped")].concat();
            Ok(Response::new(order.into()))
        })
    }
}

/// `n` messages, 20 ms apart (the drifted service is 200 ms late with the first).
struct ServerStream {
    drift: bool,
}
impl ServerStreamingService<Bytes> for ServerStream {
    type Response = Bytes;
    type ResponseStream = Messages;
    type Future = BoxFuture<Response<Messages>, Status>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let drift = self.drift;
        Box::pin(async move {
            let n = req.into_inner().first().copied().unwrap_or(0);
            // 255: one message, then nothing for a minute (a stalled stream).
            let (n, stall) = if n == 255 { (2, true) } else { (n, false) };
            let stream = tokio_stream::iter(0..n).then(move |i| async move {
                let pause = match i {
                    1 if stall => Duration::from_secs(60),
                    0 if drift => Duration::from_millis(200),
                    _ => Duration::from_millis(20),
                };
                tokio::time::sleep(pause).await;
                Ok(Bytes::from(format!("part {i}")))
            });
            Ok(Response::new(Box::pin(stream) as Messages))
        })
    }
}

struct ClientStream;
impl ClientStreamingService<Bytes> for ClientStream {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;
    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = req.into_inner();
            let mut parts = Vec::new();
            while let Some(m) = stream.next().await {
                parts.push(String::from_utf8_lossy(&m?).into_owned());
            }
            Ok(Response::new(Bytes::from(parts.join("+"))))
        })
    }
}

struct Bidi;
impl StreamingService<Bytes> for Bidi {
    type Response = Bytes;
    type ResponseStream = Messages;
    type Future = BoxFuture<Response<Messages>, Status>;
    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let stream = req.into_inner().map(|m| m.map(|m| Bytes::from([&b"re:"[..], &m].concat())));
            Ok(Response::new(Box::pin(stream) as Messages))
        })
    }
}

/// The `test.Echo` service.
#[derive(Clone, Default)]
pub struct EchoService {
    /// Answer like a staging with a bug (see the module's notes).
    pub drift: bool,
}

impl NamedService for EchoService {
    const NAME: &'static str = "test.Echo";
}

impl<B> Service<http::Request<B>> for EchoService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let grpc = || {
            Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        };
        match req.uri().path() {
            "/test.Echo/Unary" => {
                let unary = Unary { drift: self.drift };
                Box::pin(async move { Ok(grpc().unary(unary, req).await) })
            }
            "/shop.Orders/Get" => {
                let orders = Orders { drift: self.drift };
                Box::pin(async move { Ok(grpc().unary(orders, req).await) })
            }
            "/test.Echo/ServerStream" => {
                let stream = ServerStream { drift: self.drift };
                Box::pin(async move { Ok(grpc().server_streaming(stream, req).await) })
            }
            "/test.Echo/ClientStream" => Box::pin(async move { Ok(grpc().client_streaming(ClientStream, req).await) }),
            "/test.Echo/Bidi" => Box::pin(async move { Ok(grpc().streaming(Bidi, req).await) }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// `shop.Orders`, served by [`EchoService`] (tonic routes by the service's name).
#[derive(Clone, Default)]
pub struct OrdersService(pub EchoService);

impl NamedService for OrdersService {
    const NAME: &'static str = "shop.Orders";
}

impl<B> Service<http::Request<B>> for OrdersService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.0.call(req)
    }
}

/// Accepted connections with TCP_NODELAY, as any gRPC server sets it (without it, small
/// answers wait for the client's delayed ACK: 40 ms each).
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Serves `test.Echo` and `shop.Orders` (the drifted services with `drift`) on `listener`
/// until it fails (h2c, HTTP/2 only).
pub async fn serve_on(listener: tokio::net::TcpListener, drift: bool) -> Result<(), tonic::transport::Error> {
    let service = EchoService { drift };
    tonic::transport::Server::builder()
        .add_service(service.clone())
        .add_service(OrdersService(service))
        .serve_with_incoming(nodelay(listener))
        .await
}

/// A tonic server for [`EchoService`] on a free port (h2c, HTTP/2 only).
pub struct GrpcServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    pub async fn start() -> GrpcServer {
        GrpcServer::serve(EchoService::default()).await
    }

    /// A server of the drifted service.
    pub async fn start_drifted() -> GrpcServer {
        GrpcServer::serve(EchoService { drift: true }).await
    }

    /// A server of `shop.Orders` only (a release that lost `test.Echo`: UNIMPLEMENTED).
    pub async fn start_orders_only() -> GrpcServer {
        GrpcServer::serve_with(|b| b.add_service(OrdersService::default())).await
    }

    async fn serve(service: EchoService) -> GrpcServer {
        GrpcServer::serve_with(|b| b.add_service(service.clone()).add_service(OrdersService(service))).await
    }

    async fn serve_with(
        routes: impl FnOnce(&mut tonic::transport::Server) -> tonic::transport::server::Router + Send + 'static,
    ) -> GrpcServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = nodelay(listener);
        let task = tokio::spawn(async move {
            let mut builder = tonic::transport::Server::builder();
            routes(&mut builder).serve_with_incoming(incoming).await.unwrap();
        });
        GrpcServer { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gRPC client for `test.Echo` over `channel`.
#[derive(Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl EchoClient {
    /// A client of `http://ADDR` (h2c).
    pub async fn connect(url: &str) -> EchoClient {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
        EchoClient::over(channel, false)
    }

    /// A client over `channel`; `gzip` compresses what it sends.
    pub fn over(channel: tonic::transport::Channel, gzip: bool) -> EchoClient {
        let mut grpc = tonic::client::Grpc::new(channel)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        if gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        EchoClient { grpc }
    }

    fn path(method: &str) -> http::uri::PathAndQuery {
        format!("/test.Echo/{method}").parse().unwrap()
    }

    pub async fn unary(&mut self, msg: impl Into<Bytes>, deadline: Option<Duration>) -> Result<Bytes, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let mut req = Request::new(msg.into());
        if let Some(d) = deadline {
            req.set_timeout(d);
        }
        Ok(self.grpc.unary(req, Self::path("Unary"), RawCodec).await?.into_inner())
    }

    /// Calls `shop.Orders/Get` with a `GetOrder` message.
    pub async fn get_order(&mut self, id: &str, email: &str) -> Result<Bytes, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let path = "/shop.Orders/Get".parse().unwrap();
        Ok(self.grpc.unary(Request::new(Bytes::from(get_order(id, email))), path, RawCodec).await?.into_inner())
    }

    pub async fn server_stream(&mut self, n: u8) -> Result<Vec<Bytes>, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let resp = self.grpc.server_streaming(Request::new(Bytes::from(vec![n])), Self::path("ServerStream"), RawCodec);
        let mut stream = resp.await?.into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream.message().await? {
            out.push(m);
        }
        Ok(out)
    }

    pub async fn client_stream(&mut self, msgs: Vec<&'static str>) -> Result<Bytes, Status> {
        self.client_stream_every(msgs, Duration::from_millis(10)).await
    }

    /// A client stream whose messages go `gap` apart.
    pub async fn client_stream_every(&mut self, msgs: Vec<&'static str>, gap: Duration) -> Result<Bytes, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let stream = tokio_stream::iter(msgs).then(move |m| async move {
            tokio::time::sleep(gap).await;
            Bytes::from_static(m.as_bytes())
        });
        Ok(self.grpc.client_streaming(Request::new(stream), Self::path("ClientStream"), RawCodec).await?.into_inner())
    }

    /// Sends each message only after the answer to the previous one arrived: a true
    /// duplex exchange, which a proxy that buffers either direction would deadlock.
    pub async fn bidi(&mut self, msgs: Vec<&'static str>) -> Result<Vec<Bytes>, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let outgoing = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut msgs = msgs.into_iter();
        tx.send(Bytes::from_static(msgs.next().unwrap_or("").as_bytes())).await.unwrap();
        let mut answers = self.grpc.streaming(Request::new(outgoing), Self::path("Bidi"), RawCodec).await?.into_inner();
        let mut out = Vec::new();
        let mut tx = Some(tx);
        while let Some(m) = answers.message().await? {
            out.push(m);
            match msgs.next() {
                Some(next) => tx.as_ref().unwrap().send(Bytes::from_static(next.as_bytes())).await.unwrap(),
                None => drop(tx.take()),
            }
        }
        Ok(out)
    }
}
