//! The deployment files: `deploy/actormq.service` is verified by `systemd-analyze` and its
//! command and environment run a broker; the `Dockerfile` is built where a Docker engine
//! answers, and otherwise checked for what the image must do (multi-stage, not root, data
//! in a volume, listeners exposed) — the test says which it did.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::BIN;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_systemd_unit_verifies_and_its_command_serves() {
    let unit = std::fs::read_to_string(repo("deploy/actormq.service")).expect("the unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let (program, args) = exec.split_once(' ').unwrap_or((exec, ""));
    assert_eq!(
        program, "/usr/local/bin/actormq",
        "where `cargo install --root /usr/local` puts it"
    );

    // systemd checks the unit with this build standing in for the installed binary.
    let dir = common::data_dir("deploy-unit");
    let copy = dir.join("actormq.service");
    std::fs::write(&copy, unit.replace(program, BIN)).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs (Debian's systemd package; scripts/test.sh needs it)");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze: {said}"
    );

    // The unit's command and environment start a broker (its data in a folder of ours).
    let mut env: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(env.iter().any(|(k, _)| k == "ACTORMQ__BROKER__DATA_DIR"));
    for (key, value) in &mut env {
        match key.as_str() {
            "ACTORMQ__BROKER__DATA_DIR" => *value = dir.join("data").display().to_string(),
            "ACTORMQ_CONFIG_DIR" => *value = repo("config").display().to_string(),
            _ => {}
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(args.first(), Some(&"broker"));
    let broker =
        common::process::BrokerProcess::start_with_env(&dir.join("data"), &args[1..], &env);
    assert!(broker.url.starts_with("tcp://127.0.0.1:"));
}

#[test]
fn the_dockerfile_builds_where_docker_runs_and_is_checked_everywhere() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).expect("the Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let stages = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "a multi-stage build: {stages} FROM lines");
    assert!(
        lines.iter().any(|l| l.starts_with("COPY --from=build")),
        "the final image takes only the built binary"
    );
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "root", "the broker does not run as root");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("VOLUME") && l.contains("/var/lib/actormq")),
        "the data in a volume"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ACTORMQ__BROKER__DATA_DIR=/var/lib/actormq")),
        "the journal in that volume"
    );
    let exposed: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert!(
        exposed.contains(&"7670") && exposed.contains(&"61613"),
        "{exposed:?}"
    );
    let ignore = std::fs::read_to_string(repo(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context leaves target/ out"
    );

    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if engine {
        let built = Command::new("docker")
            .args(["build", "-t", "actormq-test", "."])
            .current_dir(repo(""))
            .status()
            .expect("docker build runs");
        assert!(built.success(), "docker build failed");
        eprintln!("Dockerfile: built with the Docker engine");
    } else {
        eprintln!(
            "Dockerfile: no Docker engine answers on this machine (docker info fails): checked \
             the file (stages, user, volume, ports); `docker build` runs where an engine does"
        );
    }
}
