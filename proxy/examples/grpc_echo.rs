//! The tests' gRPC services (tonic; see tests/support/grpc.rs) as a process, for load
//! scripts and the gRPC demo (`examples/grpc-demo.sh`):
//!
//! ```text
//! grpc_echo [serve] ADDR [--drifted]   serve test.Echo and shop.Orders on ADDR (port 0: any free
//!                                      one); prints `serving on HOST:PORT`; --drifted: staging's bugs
//! grpc_echo client URL N               N shop.Orders/Get calls through URL
//! grpc_echo descriptor FILE            shop.proto's descriptor set, as `protoc --include_imports
//!                                      --descriptor_set_out=FILE` writes it
//! ```

#[path = "../tests/support/grpc.rs"]
mod grpc;

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("grpc_echo: {what}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "serve") {
        args.remove(0);
    }
    match args.first().map(String::as_str) {
        Some("client") => {
            let (Some(url), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok())) else {
                fail("usage: grpc_echo client URL N")
            };
            client(url, n).await
        }
        Some("descriptor") => {
            let Some(out) = args.get(1) else { fail("usage: grpc_echo descriptor FILE") };
            let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
            let set = protox::compile(["shop.proto"], [support]).unwrap_or_else(|e| fail(e));
            std::fs::write(out, prost::Message::encode_to_vec(&set)).unwrap_or_else(|e| fail(format!("{out}: {e}")));
        }
        _ => {
            let addr = args.first().cloned().unwrap_or_else(|| "127.0.0.1:50051".into());
            let drifted = args.iter().any(|a| a == "--drifted");
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .unwrap_or_else(|e| fail(format!("cannot listen on {addr}: {e}")));
            let bound = listener.local_addr().unwrap_or_else(|e| fail(e));
            println!("serving on {bound}");
            eprintln!(
                "grpc_echo: serving test.Echo and shop.Orders{} on {bound}",
                if drifted { " (drifted)" } else { "" }
            );
            if let Err(e) = grpc::serve_on(listener, drifted).await {
                fail(e);
            }
        }
    }
}

/// What a production client does: looks up orders, for a customer named by e-mail.
async fn client(url: &str, n: usize) {
    let channel = match tonic::transport::Endpoint::from_shared(url.to_string()) {
        Ok(e) => e.connect().await.unwrap_or_else(|e| fail(format!("cannot reach {url}: {e}"))),
        Err(e) => fail(format!("{url}: {e}")),
    };
    let mut c = grpc::EchoClient::over(channel, false);
    for i in 0..n {
        if let Err(e) = c.get_order(&format!("A-{i}"), "jane.doe@example.com").await {
            fail(format!("shop.Orders/Get A-{i}: {e}"));
        }
    }
    println!("{n} orders looked up through {url}");
}
