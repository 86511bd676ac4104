//! gRPC through the sidecar, with a real tonic server and client: every kind of call
//! behaves exactly as it does directly — over h2c and over TLS with ALPN — and the capture
//! holds each call with its status.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::grpc::{EchoClient, GrpcServer};
use support::*;
use tonic::Code;

/// Every kind of call, with the outcome it must have whoever is in between.
async fn every_kind_of_call(mut client: EchoClient) {
    assert_eq!(client.unary("hello", None).await.unwrap(), Bytes::from_static(b"echo:hello"));
    let big = vec![b'x'; 3 << 20];
    let answer = client.unary(big.clone(), None).await.unwrap();
    assert_eq!(answer.len(), big.len() + 5, "a 3 MiB message both ways");
    let err = client.unary("fail", None).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no such thing: fail"));
    let err = client.unary("slow", Some(Duration::from_millis(300))).await.unwrap_err();
    // tonic's client gives up itself at the deadline (Cancelled), or relays the server's
    // DEADLINE_EXCEEDED if that comes first.
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    let parts = client.server_stream(3).await.unwrap();
    assert_eq!(parts, ["part 0", "part 1", "part 2"].map(|m| Bytes::from_static(m.as_bytes())));
    assert_eq!(client.client_stream(vec!["a", "b", "c"]).await.unwrap(), Bytes::from_static(b"a+b+c"));
    let answers = client.bidi(vec!["1", "2", "3"]).await.unwrap();
    assert_eq!(answers, ["re:1", "re:2", "re:3"].map(|m| Bytes::from_static(m.as_bytes())));
    for _ in 0..20 {
        assert_eq!(client.unary("again", None).await.unwrap(), Bytes::from_static(b"echo:again"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_behave_through_the_proxy_as_they_do_directly() {
    let server = GrpcServer::start().await;
    // Directly: the reference behaviour.
    every_kind_of_call(EchoClient::connect(&server.url()).await).await;

    let mut proxy = TestProxy::start(&server.url(), |_| {}).await;
    every_kind_of_call(EchoClient::connect(&format!("http://{}", proxy.addr)).await).await;
    // Compressed requests too.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr)).unwrap();
    let mut gzip = EchoClient::over(channel.connect().await.unwrap(), true);
    assert_eq!(gzip.unary(vec![b'z'; 100_000], None).await.unwrap().len(), 100_005);

    let text = metrics_text(proxy.admin).await;
    assert_eq!(metric(&text, "tapedeck_requests_total{class=\"5xx\"}"), 0.0, "{text}");
    let captured = proxy.finish().await;
    let calls = captured.iter().filter(|e| e.request.target.starts_with("/test.Echo/")).count();
    assert_eq!(calls, 28, "every call is captured");
    // gRPC answers 200 and puts its status in trailers (the call past its deadline may
    // have been cancelled before any answer): recorded with the exchange. (A call that
    // fails before any message is "trailers-only": its status is in the head.)
    assert!(captured.iter().filter_map(|e| e.status()).all(|s| s == 200));
    let field = |e: &tapedeck_captures::Exchange, name: &str| {
        let r = e.response.as_ref()?;
        r.trailers.get_str(name).or_else(|| r.headers.get_str(name)).map(str::to_string)
    };
    let call = |body: &[u8]| captured.iter().find(|e| e.request.body.data.ends_with(body)).unwrap();
    assert_eq!(field(call(b"hello"), "grpc-status").as_deref(), Some("0"));
    assert_eq!(call(b"hello").response.as_ref().unwrap().trailers.get_str("grpc-status"), Some("0"));
    assert_eq!(field(call(b"fail"), "grpc-status").as_deref(), Some("5"), "NOT_FOUND");
    // As on the wire: percent-encoded.
    assert_eq!(field(call(b"fail"), "grpc-message").as_deref(), Some("no%20such%20thing:%20fail"));
    let streamed = captured.iter().find(|e| e.request.target == "/test.Echo/ServerStream").unwrap();
    assert_eq!(streamed.response.as_ref().unwrap().trailers.get_str("grpc-status"), Some("0"), "{streamed:?}");
    // The capture survives the tape: trailers are in the records read back.
    let on_tape = tapedeck_captures::tape::TapeReader::open(&[proxy.dir.path().join("tapes")]).unwrap();
    let with_trailers = on_tape.filter(|e| e.response.as_ref().is_some_and(|r| !r.trailers.is_empty())).count();
    assert!(with_trailers >= 25, "{with_trailers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_alpn_reaches_a_plaintext_service() {
    let server = GrpcServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (files, der) = write_certs(dir.path(), "localhost");
    let mut proxy = TestProxy::start(&server.url(), |c| c.tls = Some(files.clone())).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http2().build();
    let url = format!("https://localhost:{}", proxy.addr.port());
    let channel =
        tonic::transport::Endpoint::from_shared(url).unwrap().connect_with_connector(connector).await.unwrap();
    every_kind_of_call(EchoClient::over(channel, false)).await;
    let captured = proxy.finish().await;
    assert!(captured.iter().all(|e| e.request.scheme == "https"));
    assert_eq!(captured.len(), 27);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_protocol_can_be_forced() {
    let server = GrpcServer::start().await;
    // h2c for everything: plain HTTP/2 requests reach an h2-only service too.
    let mut proxy = TestProxy::start(&server.url(), |c| {
        c.upstream_protocol = tapedeck_proxy::config::UpstreamProtocol::H2c;
    })
    .await;
    let (status, headers, _) = get(&client(), &proxy.url("/test.Echo/Unary")).await;
    // A plain GET is not gRPC: the service answers it (over h2) as an error of its own.
    assert_ne!(status.as_u16(), 502, "{headers:?}");
    every_kind_of_call(EchoClient::connect(&format!("http://{}", proxy.addr)).await).await;
    proxy.finish().await;

    // HTTP/1.1 only: gRPC cannot work, and the proxy says why instead of hanging.
    let mut proxy = TestProxy::start(&server.url(), |c| {
        c.upstream_protocol = tapedeck_proxy::config::UpstreamProtocol::Http1;
    })
    .await;
    let mut client = EchoClient::connect(&format!("http://{}", proxy.addr)).await;
    let err = tokio::time::timeout(Duration::from_secs(10), client.unary("hello", None)).await.unwrap().unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    proxy.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_idle_past_the_stream_idle_timeout_is_reset_and_recorded() {
    let server = GrpcServer::start().await;
    let mut proxy = TestProxy::start(&server.url(), |c| c.timeouts.stream_idle = Duration::from_millis(800)).await;
    let mut client = EchoClient::connect(&format!("http://{}", proxy.addr)).await;
    // A stream that moves keeps going, however long in all (60 × 20 ms > 800 ms).
    assert_eq!(client.server_stream(60).await.unwrap().len(), 60);
    // A unary call that answers after 2 s is idle before its head: ended, not held (had
    // it been held, the answer would have come).
    let err = tokio::time::timeout(Duration::from_secs(20), client.unary("slow", None)).await.unwrap().unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    // A stream that stalls after its first message for a minute: reset long before.
    let err = tokio::time::timeout(Duration::from_secs(20), client.server_stream(255)).await.unwrap().unwrap_err();
    assert_ne!(err.code(), Code::Ok, "{err:?}");
    let text = metrics_text(proxy.admin).await;
    assert!(metric(&text, "tapedeck_upstream_errors_total{kind=\"response_timeout\"}") >= 2.0, "{text}");
    let captured = proxy.finish().await;
    let timed_out = captured
        .iter()
        .filter(|e| e.error == Some(tapedeck_captures::ErrorKind::ResponseTimeout))
        .map(|e| e.request.target.as_str())
        .collect::<Vec<_>>();
    assert_eq!(timed_out, ["/test.Echo/Unary", "/test.Echo/ServerStream"], "recorded as timed out");
}

/// A protobuf field: `number`, length-delimited.
fn pb_string(number: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2, value.len() as u8];
    out.extend_from_slice(value);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_are_captured_scrubbed_not_dropped() {
    let server = GrpcServer::start().await;
    let mut proxy = TestProxy::start(&server.url(), |c| {
        let scrubber = tapedeck_captures::scrub::Scrubber::with_defaults(Some(b"grpc capture test key 0123456789"));
        c.capture.as_mut().unwrap().scrub = Some(Box::new(move |ex| scrubber.scrub(ex)));
    })
    .await;
    let mut client = EchoClient::connect(&format!("http://{}", proxy.addr)).await;
    // `{ 1: "jane.doe@example.com", 2: { 1: "order 1042" } }`, as protobuf.
    let nested = pb_string(1, b"order 1042");
    let message = [pb_string(1, b"jane.doe@example.com"), pb_string(2, &nested)].concat();
    let answer = client.unary(message.clone(), None).await.unwrap();
    assert_eq!(&answer[5..], &message[..], "the call itself is untouched");
    let captured = proxy.finish().await;
    let call = captured.iter().find(|e| e.request.target == "/test.Echo/Unary").unwrap();
    let body = &call.request.body.data;
    assert!(!body.is_empty() && !call.request.body.truncated, "kept, not dropped: {call:?}");
    let text = String::from_utf8_lossy(body);
    assert!(!text.contains("jane.doe") && text.contains("order 1042"), "{text}");
    assert_eq!(body[0], 0, "one uncompressed gRPC frame");
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert_eq!(body.len(), 5 + len, "its length prefix follows the scrubbed message");
}
