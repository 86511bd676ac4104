//! gRPC end to end as a user runs it: `tapedeck proxy` in front of a gRPC service (tonic)
//! captures every call with its status, scrubbed; `tapedeck replay` re-sends the calls to a
//! plaintext staging over HTTP/2 and finds the call whose gRPC status changed.

mod common;
#[path = "../proxy/tests/support/grpc.rs"]
mod grpc;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::proxy::ProxyProcess;
use common::*;

/// A runtime, a production gRPC service on it, and a directory for the captures.
fn setup() -> (tokio::runtime::Runtime, grpc::GrpcServer, tempfile::TempDir, std::path::PathBuf) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let production = rt.block_on(grpc::GrpcServer::start());
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    (rt, production, dir, caps)
}

/// `tapedeck proxy` in front of `upstream`, capturing into `caps`, with `extra` flags.
fn capture_proxy(upstream: &str, caps: &std::path::Path, extra: &[&str]) -> ProxyProcess {
    let mut args = vec!["--listen", "127.0.0.1:0", "--upstream", upstream, "--capture-dir", s(caps), "--admin", "off"];
    args.extend_from_slice(extra);
    ProxyProcess::spawn(&args, None)
}

/// Stops `proxy` as a platform would (SIGTERM); it must exit cleanly.
fn stop(proxy: ProxyProcess) {
    proxy.signal(libc::SIGTERM);
    let (code, lines) = proxy.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{lines:?}");
}

/// A protobuf message with one string field (number 1).
fn order(text: &str) -> Vec<u8> {
    let mut out = vec![1 << 3 | 2, text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}

#[test]
fn grpc_captured_in_production_replays_against_staging_and_a_changed_status_is_found() {
    let (rt, production, dir, caps) = setup();
    let key = dir.path().join("scrub.key");
    std::fs::write(&key, "a key for the gRPC replay test, 7f3a9c").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let upstream = production.url();
    let proxy = capture_proxy(&upstream, &caps, &["--scrub-key-file", s(&key)]);
    let via_proxy = format!("http://{}", proxy.addr);
    rt.block_on(async {
        let mut client = grpc::EchoClient::connect(&via_proxy).await;
        for i in 0..10 {
            let msg = order(&format!("order {i} for jane.doe@example.com"));
            let answer = client.unary(msg.clone(), None).await.unwrap();
            assert_eq!(&answer[5..], &msg[..]);
        }
    });
    stop(proxy);
    let jsonl = ok(&["cat", s(&caps)]);
    assert_eq!(jsonl.lines().count(), 10);
    assert!(!jsonl.contains("jane.doe") && jsonl.contains("grpc-status"), "scrubbed, statuses kept: {jsonl}");

    // A staging that behaves: every call answered as recorded.
    let same = rt.block_on(grpc::GrpcServer::start());
    let report = dir.path().join("same.json");
    let out = replay(&caps, &same.url(), "max", &["--report", s(&report)]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((json["sent"].as_u64(), json["completed"].as_u64()), (Some(10), Some(10)), "{json}");
    assert_eq!(json["compare"]["differing"].as_u64(), Some(0), "{json}");

    // A staging with a bug: the one call it fails is found by its gRPC status.
    let staging = rt.block_on(grpc::GrpcServer::start_drifted());
    let report = dir.path().join("drift.json");
    let out = replay(&caps, &staging.url(), "max", &["--report", s(&report)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{stdout}\n{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["completed"].as_u64(), Some(10), "{json}");
    assert_eq!(json["compare"]["differing"].as_u64(), Some(1), "{json}");
    assert!(
        stdout.contains("grpc-status") && stdout.contains("OK (0)") && stdout.contains("NOT_FOUND (5)"),
        "{stdout}"
    );
    // Calls count by their gRPC status, not by HTTP's 200.
    let route = &json["routes"][0];
    assert_eq!(route["recorded_status"], serde_json::json!({"OK": 10}), "{json}");
    assert_eq!(route["replayed_status"], serde_json::json!({"OK": 9, "NOT_FOUND": 1}), "{json}");

    // A release that lost the service: every call UNIMPLEMENTED, a gRPC server fault the
    // gate catches (HTTP said 200 each time).
    let broken = rt.block_on(grpc::GrpcServer::start_orders_only());
    let report = dir.path().join("broken.json");
    let out = replay(
        &caps,
        &broken.url(),
        "max",
        &["--report", s(&report), "--gate", "new_grpc_faults==0", "--gate", "new_5xx==0"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["routes"][0]["replayed_status"], serde_json::json!({"UNIMPLEMENTED": 10}), "{json}");
    let gates = json["gates"].as_array().unwrap();
    assert_eq!(gates[0]["passed"], false, "{json}");
    assert_eq!(gates[1]["passed"], true, "no HTTP 5xx: {json}");
    assert!(stdout.contains("10 more gRPC server faults"), "{stdout}");
}

/// `proxy/tests/support/shop.proto` compiled into a descriptor set file, as `protoc
/// --include_imports --descriptor_set_out` makes one.
fn shop_descriptor(dir: &std::path::Path) -> std::path::PathBuf {
    let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy/tests/support");
    let set = protox::compile(["shop.proto"], [support]).unwrap();
    let path = dir.join("shop.pb");
    std::fs::write(&path, prost_reflect::prost::Message::encode_to_vec(&set)).unwrap();
    path
}

#[test]
fn with_a_descriptor_set_messages_are_scrubbed_and_compared_by_field_name() {
    let (rt, production, dir, caps) = setup();
    let descriptor = shop_descriptor(dir.path());
    let upstream = production.url();
    let proxy = capture_proxy(&upstream, &caps, &["--proto-descriptor", s(&descriptor)]);
    let via_proxy = format!("http://{}", proxy.addr);
    rt.block_on(async {
        let mut client = grpc::EchoClient::connect(&via_proxy).await;
        for i in 0..10 {
            let answer = client.get_order(&format!("A-{i}"), "jane.doe@example.com").await.unwrap();
            // The client gets production's answer untouched.
            assert_eq!(grpc::pb_string(&answer, 4).as_deref(), Some("shipped"));
            let customer = grpc::pb_string(&answer, 2).unwrap();
            assert!(customer.contains("Jane Doe"), "{customer:?}");
        }
    });
    stop(proxy);
    let jsonl = ok(&["cat", s(&caps)]);
    assert_eq!(jsonl.lines().count(), 10);
    // The customer's name has no shape a detector knows: only its field's name (beside an
    // e-mail address) gives it away.
    assert!(!jsonl.contains("jane.doe") && !jsonl.contains("Jane Doe"), "{jsonl}");
    // `cat` shows the stored messages decoded: still Orders, the rest of them kept.
    let shown = ok(&["cat", s(&caps), "--proto-descriptor", s(&descriptor), "--filter", "path == '/shop.Orders/Get'"]);
    assert_eq!(shown.lines().count(), 10, "{shown}");
    for line in shown.lines() {
        let ex: serde_json::Value = serde_json::from_str(line).unwrap();
        let answer = &ex["response"]["body"]["messages"][0];
        assert_eq!(answer["status"], "shipped", "{answer}");
        assert_eq!(answer["total_cents"], 1999, "{answer}");
        assert_eq!(answer["customer"]["email"], "[REDACTED]", "{answer}");
        assert!(ex["request"]["body"]["messages"][0]["id"].as_str().unwrap().starts_with("A-"), "{ex}");
    }
    // Without the schema, by field number.
    let by_number: serde_json::Value = serde_json::from_str(ok(&["cat", s(&caps)]).lines().next().unwrap()).unwrap();
    assert_eq!(by_number["response"]["body"]["messages"][0]["4"], "shipped", "{by_number}");
    // The check reads messages by field name too, and finds nothing left.
    let check = run(&["scrub", "--check", s(&caps), "--proto-descriptor", s(&descriptor)]);
    assert!(check.status.success(), "{}\n{}", String::from_utf8_lossy(&check.stdout), stderr(&check));

    // Staging charges more for order A-7: found by the field's name with the schema …
    let staging = rt.block_on(grpc::GrpcServer::start_drifted());
    let report = dir.path().join("drift.json");
    let out = replay(&caps, &staging.url(), "max", &["--proto-descriptor", s(&descriptor), "--report", s(&report)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{stdout}\n{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["completed"].as_u64(), Some(10), "{json}");
    assert_eq!(json["compare"]["differing"].as_u64(), Some(1), "{json}");
    assert!(stdout.contains("$.total_cents") && stdout.contains("2099"), "{stdout}");
    // … and, without it, by the field's number (the scrubbed fields compared by type).
    let report = dir.path().join("drift-no-schema.json");
    let out = replay(&caps, &staging.url(), "max", &["--report", s(&report)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["compare"]["differing"].as_u64(), Some(1), "{json}");
    assert!(stdout.contains("$.3") && !stdout.contains("total_cents"), "{stdout}");
    assert!(stderr(&out).contains("pass the same --proto-descriptor"), "said before the run: {}", stderr(&out));
}

#[test]
fn a_client_stream_is_replayed_at_its_recorded_pace() {
    let (rt, production, dir, caps) = setup();
    let upstream = production.url();
    let proxy = capture_proxy(&upstream, &caps, &[]);
    let via_proxy = format!("http://{}", proxy.addr);
    rt.block_on(async {
        let mut client = grpc::EchoClient::connect(&via_proxy).await;
        let gap = Duration::from_millis(300);
        // Three protobuf messages (field 1: "a", "b", "c"), kept whole by the scrubber.
        let joined = client.client_stream_every(vec!["\n\u{1}a", "\n\u{1}b", "\n\u{1}c"], gap).await.unwrap();
        assert_eq!(&joined[..], b"\n\x01a+\n\x01b+\n\x01c");
    });
    stop(proxy);
    // The capture holds when each message arrived.
    let jsonl = ok(&["cat", s(&caps)]);
    let ex: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    let times: Vec<u64> = ex["request"]["message_ns"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
    assert_eq!(times.len(), 3, "{ex}");
    assert!(times.windows(2).all(|w| w[1] >= w[0] + 250_000_000), "300 ms apart: {times:?}");

    // Replayed at 1x the stream takes its recorded time; at 2x, half.
    let staging = rt.block_on(grpc::GrpcServer::start());
    for (speed, at_least_ms) in [("1x", 550.0), ("2x", 270.0)] {
        let report = dir.path().join(format!("{speed}.json"));
        let out = replay(&caps, &staging.url(), speed, &["--report", s(&report)]);
        assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(json["completed"].as_u64(), Some(1), "{json}");
        let p50 = json["routes"][0]["replayed_ms"]["p50"].as_f64().unwrap();
        assert!(p50 >= at_least_ms, "{speed}: the stream took {p50} ms");
    }
}

#[test]
fn a_call_the_client_gave_up_on_at_its_deadline_is_not_compared() {
    let (rt, production, dir, caps) = setup();
    // Unscrubbed: the test service's raw messages are not protobuf, and scrubbing would
    // drop them.
    let proxy = capture_proxy(&production.url(), &caps, &["--no-scrub"]);
    let via_proxy = format!("http://{}", proxy.addr);
    rt.block_on(async {
        let mut client = grpc::EchoClient::connect(&via_proxy).await;
        // `slow` answers after 2 s; the client gives up at 300 ms.
        assert!(client.unary("slow", Some(Duration::from_millis(300))).await.is_err());
        assert!(client.unary("hello", None).await.is_ok());
    });
    stop(proxy);
    let staging = rt.block_on(grpc::GrpcServer::start());
    let report = dir.path().join("report.json");
    let out = replay(&caps, &staging.url(), "max", &["--allow-unscrubbed", "--report", s(&report)]);
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let route = &json["routes"][0];
    // Production's client saw DEADLINE_EXCEEDED; the recording holds no answer to compare.
    assert_eq!(route["recorded_status"]["DEADLINE_EXCEEDED"].as_u64(), Some(1), "{json}");
    assert_eq!(json["compare"]["compared"].as_u64(), Some(1), "only the complete call: {json}");
}

#[test]
fn a_server_stream_whose_first_message_comes_late_is_flagged() {
    let (rt, production, dir, caps) = setup();
    // Unscrubbed: the test service's raw messages are not protobuf.
    let proxy = capture_proxy(&production.url(), &caps, &["--no-scrub"]);
    let via_proxy = format!("http://{}", proxy.addr);
    rt.block_on(async {
        let mut client = grpc::EchoClient::connect(&via_proxy).await;
        for _ in 0..20 {
            assert_eq!(client.server_stream(5).await.unwrap().len(), 5);
        }
    });
    stop(proxy);
    // The capture holds when each message of each stream came.
    let jsonl = ok(&["cat", s(&caps)]);
    let ex: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(ex["response"]["message_ns"].as_array().map(Vec::len), Some(5), "{ex}");

    let replay = |target: &str, name: &str| {
        let report = dir.path().join(format!("{name}.json"));
        let args =
            ["replay", s(&caps), "--target", target, "--speed", "max", "--allow-unscrubbed", "--report", s(&report)];
        let out = run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.code().is_some_and(|c| c <= 1), "{stdout}\n{}", stderr(&out));
        (stdout, serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&report).unwrap()).unwrap())
    };
    // Staging as production: the streams' first messages are measured on both sides.
    let same = rt.block_on(grpc::GrpcServer::start());
    let (stdout, json) = replay(&same.url(), "same");
    assert_eq!(json["routes"][0]["first_message"]["count"].as_u64(), Some(20), "{json}");
    assert!(stdout.contains("first message of the stream"), "{stdout}");
    // A staging 200 ms late with every stream's first message.
    let late = rt.block_on(grpc::GrpcServer::start_drifted());
    let (stdout, json) = replay(&late.url(), "late");
    let first = &json["routes"][0]["first_message"];
    assert_eq!(first["p99_flagged"], true, "{json}");
    assert!(first["replayed_ms"]["p50"].as_f64().unwrap() >= 200.0, "{json}");
    assert!(stdout.contains("first message of a stream p99"), "{stdout}");
}

/// The README's gRPC demo script, run as a user runs it (with this build's binaries).
#[test]
fn the_grpc_demo_script_finds_the_drifted_orders() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // `cargo test --workspace` builds every package's examples before the tests run.
    let echo = root.join("target/debug/examples/grpc_echo");
    if !echo.exists() {
        eprintln!("skipped: {} is not built (cargo test --workspace builds it)", echo.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(root.join("examples/grpc-demo.sh"))
        .env("TAPEDECK", env!("CARGO_BIN_EXE_tapedeck"))
        .env("GRPC_ECHO", &echo)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", stderr(&out));
    assert!(stdout.contains("20 orders looked up"), "{stdout}");
    assert!(
        stdout.contains(r#""name":"tok_name_"#) && !stdout.contains("jane.doe@"),
        "scrubbed by field name: {stdout}"
    );
    assert!(stdout.contains("clean: none of 20 exchanges"), "{stdout}");
    assert!(stdout.contains("at $.total_cents: recorded `1999` → replayed `2099`"), "{stdout}");
    assert!(stdout.contains("replay exit code 1"), "{stdout}");
}
