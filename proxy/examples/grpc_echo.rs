//! The tests' gRPC echo service (tonic), as a process for load scripts:
//! `cargo run --release -p tapedeck-proxy --example grpc_echo -- 127.0.0.1:50051`.
//! Its `Unary` method answers `echo:` and the request message (see tests/support/grpc.rs).

#[path = "../tests/support/grpc.rs"]
mod grpc;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50051".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("grpc_echo: cannot listen on {addr}: {e}");
            std::process::exit(2);
        }
    };
    eprintln!("grpc_echo: serving test.Echo on {addr}");
    let incoming = grpc::nodelay(listener);
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(grpc::EchoService::default())
        .serve_with_incoming(incoming)
        .await
    {
        eprintln!("grpc_echo: {e}");
        std::process::exit(1);
    }
}
