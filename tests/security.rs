//! SECURITY.md's promises, tried as an attacker would: planted symlinks for every file
//! tapedeck writes, shared capture directories, production credentials on tapes replayed to
//! staging, keys and URLs that must never be echoed, key files others can read.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::proxy::KillOnDrop;
use common::upstream::Upstream;
use common::*;
use tapedeck_captures::exchange::{Body, Headers, Request, Response};
use tapedeck_captures::Exchange;

/// Runs `tapedeck ARGS` that is expected to stop by itself within `limit` (a proxy that
/// should refuse to start); fails the test if it is still running then.
fn run_briefly(args: &[&str], limit: Duration) -> Output {
    let mut child =
        KillOnDrop(tapedeck().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("runs"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.map(|mut p| p.read_to_end(&mut buf));
            buf
        })
    };
    let stdout = drain(child.0.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.0.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tapedeck {args:?} did not stop by itself");
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// An exchange as production sent it: real credentials, a client address, an ordinary
/// header.
fn with_credentials(i: u64) -> Exchange {
    let mut headers = Headers::new();
    headers.push("host", "api.example");
    headers.push("authorization", "Bearer prod-secret-token-0123456789");
    headers.push("cookie", "sid=prod-session-abcdef0123456789");
    headers.push("x-api-key", "prod-api-key-9876543210");
    headers.push("x-forwarded-for", "203.0.113.77");
    // Credentials and identities by names no list had (found by a review).
    headers.push("authentication", "prod-authn-0123456789");
    headers.push("x-app-key", "prod-app-key-0123456789");
    headers.push("x-forwarded-user", "jane.doe");
    headers.push("x-forwarded-client-cert", "Hash=prodcerthash0123");
    headers.push("x-cluster-client-ip", "203.0.113.78");
    headers.push("x-trace", format!("trace-{i}"));
    let mut ex = synth(1).remove(0);
    ex.request = Request {
        method: "GET".into(),
        target: format!("/orders/{i}"),
        authority: "api.example".into(),
        headers,
        body: Body::default(),
        ..ex.request
    };
    ex.response = Some(Response { status: 200, ..ex.response.unwrap_or_default() });
    ex
}

#[test]
fn production_credentials_on_a_tape_never_reach_staging() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("imported");
    let exchanges: Vec<_> = (0..20).map(with_credentials).collect();
    write_tape_as(&caps, &exchanges, None); // like `tapedeck import`: not scrubbed

    // Unscrubbed tapes are refused: their paths, queries and bodies are production's.
    let out = run(&["replay", s(&caps), "--target", &staging.url(), "--speed", "max"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("were not scrubbed") && stderr(&out).contains("--allow-unscrubbed"),
        "{}",
        stderr(&out)
    );
    assert!(staging.seen().is_empty());

    let out =
        run(&["replay", s(&caps), "--target", &staging.url(), "--speed", "max", "--no-compare", "--allow-unscrubbed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("were not scrubbed"), "a loud warning: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("20 requests were sent without their recorded credentials"), "{stdout}");
    let seen = staging.seen();
    assert_eq!(seen.len(), 20);
    for r in &seen {
        for name in [
            "authorization",
            "cookie",
            "x-api-key",
            "x-forwarded-for",
            "authentication",
            "x-app-key",
            "x-forwarded-user",
            "x-forwarded-client-cert",
            "x-cluster-client-ip",
        ] {
            assert_eq!(r.header(name), None, "{name} reached staging: {:?}", r.headers);
        }
        assert!(r.header("x-trace").is_some_and(|v| v.starts_with("trace-")), "ordinary headers are sent");
    }

    // Sending an unscrubbed tape's credentials is refused outright.
    let out = run(&["replay", s(&caps), "--target", &staging.url(), "--speed", "max", "--keep-credentials"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--keep-credentials would send production's own credentials"), "{}", stderr(&out));
    assert_eq!(staging.seen().len(), 20, "nothing was sent");

    // Staging's own credentials are given with --set-header.
    let out = run(&[
        "replay",
        s(&caps),
        "--target",
        &staging.url(),
        "--speed",
        "max",
        "--no-compare",
        "--allow-unscrubbed",
        "--set-header",
        "Authorization: Bearer staging-token",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(staging.seen()[20..].iter().all(|r| r.header("authorization") == Some("Bearer staging-token")));

    // A scrubbed tape may be replayed with its pseudonyms, on request.
    let key = dir.path().join("scrub.key");
    fs::write(&key, "a scrub key for this test, 0123456789").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let clean = dir.path().join("clean");
    ok(&["scrub", s(&caps), "-o", s(&clean), "--key-file", s(&key)]);
    let out = run(&["replay", s(&clean), "--target", &staging.url(), "--speed", "max", "--keep-credentials"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not scrubbed"), "{}", stderr(&out));
    let kept = &staging.seen()[40..];
    assert_eq!(kept.len(), 20);
    for r in kept {
        let auth = r.header("authorization").expect("kept on request");
        assert!(!auth.contains("prod-secret"), "pseudonymised: {auth}");
        assert!(!r.header("cookie").unwrap_or("").contains("prod-session"), "{:?}", r.headers);
    }
}

#[test]
fn outputs_are_new_private_files_and_planted_symlinks_are_never_followed() {
    let staging = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    write_tape(&caps, &synth(30));
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    let plant = |name: &str| {
        let p = dir.path().join(name);
        symlink(&victim, &p).unwrap();
        p
    };

    // export -o
    let har = plant("out.har");
    let out = run(&["export", s(&caps), "--to", "har", "-o", s(&har)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists: pass --force"), "{}", stderr(&out));
    ok(&["export", s(&caps), "--to", "har", "-o", s(&har), "--force"]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!fs::symlink_metadata(&har).unwrap().file_type().is_symlink());
    assert_eq!(mode(&har), 0o600, "an export of 0600 tapes is 0600");
    assert!(fs::read_to_string(&har).unwrap().contains("\"entries\""));

    // Every report file, refused before anything is sent.
    let (json, html, junit) = (plant("report.json"), plant("report.html"), plant("junit.xml"));
    // The noise model is read, then written back: through a link, the link is replaced.
    let noise_target = dir.path().join("noise-target");
    fs::write(&noise_target, r#"{"version": 1, "routes": {}}"#).unwrap();
    let noise = dir.path().join("noise.json");
    symlink(&noise_target, &noise).unwrap();
    let target = staging.url();
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", s(&caps), "--target", &target, "--speed", "max"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = replay(&["--report", s(&json), "--html", s(&html), "--junit", s(&junit)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("report.json already exists"), "{}", stderr(&out));
    assert!(staging.seen().is_empty(), "refused before the replay, not after it");
    let results = dir.path().join("results");
    let out = replay(&[
        "--report",
        s(&json),
        "--html",
        s(&html),
        "--junit",
        s(&junit),
        "--force",
        "--results",
        s(&results),
        "--noise-model",
        s(&noise),
    ]);
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious", "no write followed a link");
    assert_eq!(fs::read_to_string(&noise_target).unwrap(), r#"{"version": 1, "routes": {}}"#);
    for p in [&json, &html, &junit, &noise, &results.join("report.json")] {
        assert!(!fs::symlink_metadata(p).unwrap().file_type().is_symlink(), "{}", p.display());
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }

    // Two outputs of one run under one name: refused before anything is sent.
    let seen_before = staging.seen().len();
    let same = dir.path().join("same.json");
    let out = replay(&["--report", s(&same), "--html", s(&same)]);
    assert!(!out.status.success() && stderr(&out).contains("named for two outputs"), "{}", stderr(&out));
    let spelled =
        format!("{}/../{}/same.json", dir.path().display(), dir.path().file_name().unwrap().to_string_lossy());
    let out = replay(&["--report", s(&same), "--junit", &spelled]);
    assert!(!out.status.success() && stderr(&out).contains("named for two outputs"), "{}", stderr(&out));
    let out = replay(&["--noise-model", s(&dir.path().join("no/such/dir/model.json"))]);
    assert!(!out.status.success() && stderr(&out).contains("--noise-model"), "{}", stderr(&out));
    assert_eq!(staging.seen().len(), seen_before);

    // --force never deletes through a link to someone else's results.
    let theirs = dir.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::write(theirs.join("report.json"), "their report").unwrap();
    let into_theirs = dir.path().join("into-theirs");
    symlink(&theirs, &into_theirs).unwrap();
    let out = replay(&["--results", s(&into_theirs), "--force"]);
    assert!(!out.status.success() && stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(theirs.join("report.json")).unwrap(), "their report");

    // A results directory holds one run.
    let out = replay(&["--results", s(&results)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds an earlier run"), "{}", stderr(&out));
    let out = replay(&["--results", s(&results), "--force"]);
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&ok(&["inspect", s(&results), "--json"])).unwrap();
    assert_eq!(json["total"]["exchanges"], 30, "the earlier run's results were replaced");

    // Nothing tapedeck wrote left a temporary file behind.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn capture_directories_others_can_write_or_reach_by_a_link_are_refused() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    let proxy = |caps: &Path| {
        run_briefly(
            &["proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream.url(), "--capture-dir", s(caps)],
            Duration::from_secs(20),
        )
    };
    let out = proxy(&shared);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("writable by everyone") && stderr(&out).contains("chmod o-w"), "{}", stderr(&out));
    let out = proxy(&link);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    // Inside a directory others may write, the directory could be swapped for theirs.
    let out = proxy(&shared.join("cap"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("lies in") && stderr(&out).contains("can be written by everyone"),
        "{}",
        stderr(&out)
    );
    // Nothing was made or written.
    assert_eq!(fs::read_dir(&shared).unwrap().count() + fs::read_dir(&real).unwrap().count(), 0);

    // The same for every command that writes tapes, and the opt-out.
    let har = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/browser.har");
    let out = run(&["import", "--from", "har", s(&har), "-o", s(&shared)]);
    assert!(!out.status.success() && stderr(&out).contains("--allow-shared-dir"), "{}", stderr(&out));
    ok(&["import", "--from", "har", s(&har), "-o", s(&shared), "--allow-shared-dir"]);
    // A directory tapedeck creates is its user's alone.
    let fresh = dir.path().join("fresh/caps");
    ok(&["import", "--from", "har", s(&har), "-o", s(&fresh)]);
    assert_eq!(mode(&fresh), 0o700);
}

#[test]
fn keys_and_credentials_in_urls_are_never_echoed_and_exposed_keys_are_flagged() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("scrub.key");
    let secret = "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdo";
    fs::write(&key, format!("{secret}\n")).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let caps = dir.path().join("caps");

    // The key file given by mistake as the config file.
    let out = run_briefly(&["proxy", "--config", s(&key)], Duration::from_secs(20));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains(secret) && !err.contains(&secret[..12]), "the key was echoed: {err}");
    assert!(err.contains("line 1") && err.contains("right one"), "{err}");

    // Credentials in URLs, also passwords holding what a URL parser reads as a path.
    let out = run_briefly(
        &["proxy", "--listen", "127.0.0.1:0", "--upstream", "http://admin:s3cr/etPW5@127.0.0.1", "--admin", "off"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("etPW5") && !stderr(&out).contains("s3cr"), "{}", stderr(&out));
    let out = run(&["replay", s(&caps), "--target", "http://user:2024/SecretPW@127.0.0.1:9"]);
    assert!(!out.status.success() && !stderr(&out).contains("SecretPW"), "{}", stderr(&out));
    let out = run_briefly(
        &["proxy", "--listen", "127.0.0.1:0", "--upstream", "http://admin:hunter2-pw@127.0.0.1:9", "--admin", "off"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("hunter2") && stderr(&out).contains("***@"), "{}", stderr(&out));
    let out = run(&["replay", s(&caps), "--target", "http://u:hunter2-pw@127.0.0.1:9"]);
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("hunter2") && stderr(&out).contains("--set-header"), "{}", stderr(&out));

    // A settings file whose value has the wrong type: the parser's message, never the value.
    let config = dir.path().join("replay.toml");
    fs::write(&config, "set-header = \"Authorization: Bearer SECRET_SETHEADER\"\n").unwrap();
    let out = run(&["replay", s(&caps), "--target", "http://127.0.0.1:9", "--config", s(&config)]);
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("SECRET_SETHEADER") && stderr(&out).contains("line 1"), "{}", stderr(&out));
    // A key file that happens to parse as `KEY = 1`: unknown key, never shown.
    fs::write(&config, "Qm9zU2VjcmV0S2V5VmFsdWUxMjM0NTY = 1\n").unwrap();
    let out = run(&["replay", s(&caps), "--target", "http://127.0.0.1:9", "--config", s(&config)]);
    assert!(!out.status.success() && !stderr(&out).contains("Qm9zU2Vj"), "{}", stderr(&out));
    let out = run(&["replay", s(&caps), "--target", "http://127.0.0.1:9", "--set-header", "Bearer SECRET_NOCOLON"]);
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("SECRET_NOCOLON"), "{}", stderr(&out));

    // A key others can read: refused with --strict-perms, else a warning and it runs.
    let proxy_args = |strict: bool| {
        let mut a = vec![
            "proxy".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--upstream".into(),
            upstream.url(),
            "--capture-dir".into(),
            s(&caps).into(),
            "--admin".into(),
            "off".into(),
            "--scrub-key-file".into(),
            s(&key).into(),
        ];
        if strict {
            a.push("--strict-perms".into());
        }
        a
    };
    let strict = proxy_args(true);
    let out = run_briefly(&strict.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("can be read by everyone") && stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    let lenient = proxy_args(false);
    let p = common::proxy::ProxyProcess::spawn(&lenient[1..].iter().map(String::as_str).collect::<Vec<_>>(), None);
    p.signal(libc::SIGTERM);
    let (code, lines) = p.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{lines:?}");

    // Guessable keys are refused.
    for weak in [
        "aaaaaaaabbbbbbbbaaaaaaaabbbbbbbb",
        "0123456789abcdefghijklmnopqrstuv",
        "Xy7#Xy7#Xy7#Xy7#Xy7#Xy7#Xy7#Xy7#",
        "Summer2026!Summer2026!Summer2026!xx",
        "xxSummer2026!Summer2026!Summer2026!",
        "Summer2026!xSummer2026!ySummer2026!z",
        "Winter2026!xyzWinter2026!xyz",
        "Summer2026!Summer2026!Summer2026!xxyyzzwwvvuu",
    ] {
        fs::write(&key, weak).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let out = run(&["scrub", s(&caps), "--check", "--key-file", s(&key)]);
        assert!(stderr(&out).contains("looks like a pattern"), "{weak}: {}", stderr(&out));
    }

    // Scrubbing into the directory being scrubbed would mix raw and scrubbed tapes.
    write_tape_as(&dir.path().join("raw"), &synth(3), None);
    fs::write(&key, secret).unwrap();
    let raw = dir.path().join("raw");
    for into in [raw.clone(), raw.join("scrubbed")] {
        let out = run(&["scrub", s(&raw), "-o", s(&into), "--key-file", s(&key)]);
        assert!(!out.status.success() && stderr(&out).contains("holds the tapes being scrubbed"), "{}", stderr(&out));
    }
    assert!(!raw.join("scrubbed").exists());
}
