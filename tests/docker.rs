//! The container image: built from the repository's Dockerfile, it runs the binary as a
//! non-root user. Needs a Docker daemon and access to its base images; where either is
//! missing the test says so and passes without building.

use std::process::Command;

fn docker(args: &[&str]) -> Option<std::process::Output> {
    Command::new("docker").args(args).output().ok()
}

#[test]
fn the_image_builds_and_runs_the_binary_as_a_non_root_user() {
    match docker(&["info", "--format", "{{.ServerVersion}}"]) {
        Some(out) if out.status.success() => {}
        _ => {
            eprintln!("skipped: no Docker daemon here (docker info failed); the Dockerfile is not built");
            return;
        }
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let build = docker(&["build", "-t", "tapedeck-test:latest", root]).expect("docker runs");
    if !build.status.success() {
        let err = String::from_utf8_lossy(&build.stderr);
        // An offline daemon cannot pull the base images: that is the machine, not the file.
        if err.contains("pull access denied") || err.contains("dial tcp") || err.contains("failed to resolve source") {
            eprintln!("skipped: the Docker daemon cannot pull the base images: {}", err.lines().last().unwrap_or(""));
            return;
        }
        panic!("docker build failed:\n{err}");
    }
    let version = docker(&["run", "--rm", "tapedeck-test:latest", "--version"]).unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("tapedeck "), "{version:?}");
    let uid = docker(&["run", "--rm", "--entrypoint", "id", "tapedeck-test:latest", "-u"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "10001");
}
