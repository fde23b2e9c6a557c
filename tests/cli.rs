//! The `actormq` binary: configuration errors, and send/receive/stat against a broker
//! process started on port 0.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::data_dir;
use common::process::{BIN, BrokerProcess};

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// A settings file with `contents`, unique to this test.
fn settings_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actormq-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Runs `actormq broker ARGS` expecting it to refuse to start; returns its stderr.
fn broker_refuses(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(BIN);
    command.arg("broker");
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command.args(["--stomp-listen", "127.0.0.1:0"]);
    command.arg("--data-dir").arg(data_dir("cli"));
    command
        .arg("--config-dir")
        .arg(config_dir())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let output = run_with_deadline(command, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit status 2; stderr: {stderr}"
    );
    stderr
}

fn run_with_deadline(mut command: Command, limit: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let (tx, rx) = mpsc::channel();
    let id = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("the command did not finish within {limit:?}");
        }
    }
}

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let file = settings_file("unknown.toml", "[broker]\nlissten = \"127.0.0.1:1\"\n");
    let stderr = broker_refuses(&["--config", file.to_str().unwrap()], &[]);
    assert!(stderr.contains("unknown key `broker.lissten`"), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
}

#[test]
fn an_unknown_section_names_the_key_and_the_file() {
    let file = settings_file("section.toml", "[brokr]\nname = \"x\"\n");
    let stderr = broker_refuses(&["--config", file.to_str().unwrap()], &[]);
    assert!(stderr.contains("unknown key `brokr`"), "{stderr}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_key_and_the_file() {
    let file = settings_file("type.toml", "[limits]\nmax_frame_bytes = \"lots\"\n");
    let stderr = broker_refuses(&["--config", file.to_str().unwrap()], &[]);
    assert!(stderr.contains("limits.max_frame_bytes"), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
}

#[test]
fn a_value_out_of_range_names_the_key_and_the_file() {
    let file = settings_file("range.toml", "[limits]\nmax_frame_bytes = 10\n");
    let stderr = broker_refuses(&["--config", file.to_str().unwrap()], &[]);
    assert!(stderr.contains("limits.max_frame_bytes"), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
}

#[test]
fn a_bad_environment_value_names_the_variable_layer() {
    let stderr = broker_refuses(&[], &[("ACTORMQ__LIMITS__DEFAULT_PREFETCH", "many")]);
    assert!(stderr.contains("limits.default_prefetch"), "{stderr}");
    assert!(stderr.contains("environment"), "{stderr}");
    let stderr = broker_refuses(&[], &[("ACTORMQ__LIMITS__NO_SUCH_LIMIT", "1")]);
    assert!(
        stderr.contains("unknown key `limits.no_such_limit`"),
        "{stderr}"
    );
}

#[test]
fn a_bad_listen_address_names_the_option() {
    let stderr = broker_refuses(&["--listen", "nowhere"], &[]);
    assert!(
        stderr.contains("broker.listen") && stderr.contains("--listen"),
        "{stderr}"
    );
}

#[test]
fn a_missing_profile_is_named() {
    let stderr = broker_refuses(&["--profile", "nosuch"], &[]);
    assert!(stderr.contains("profile `nosuch` not found"), "{stderr}");
}

/// Runs a client command of the binary against `broker`.
fn run(broker: &BrokerProcess, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).args(["--url", &broker.url]);
    run_with_deadline(command, Duration::from_secs(60))
}

/// A broker process on free ports with a data folder of its own and the repository's
/// profiles.
fn broker_process(args: &[&str]) -> BrokerProcess {
    let config_dir = config_dir();
    let mut all = vec!["--config-dir", config_dir.to_str().expect("a UTF-8 path")];
    all.extend_from_slice(args);
    let broker = BrokerProcess::start(&data_dir("cli"), &all);
    assert!(
        broker.startup.iter().any(|l| l.contains("profile: ")),
        "a profile line: {:?}",
        broker.startup
    );
    broker
}

#[test]
fn send_receive_and_stat_through_the_command_line() {
    let broker = broker_process(&["--profile", "dev"]);
    let sent = run(
        &broker,
        &[
            "send",
            "--to",
            "queue:cli",
            "--count",
            "5000",
            "--size",
            "256",
        ],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    let received = run(
        &broker,
        &[
            "receive",
            "--from",
            "queue:cli",
            "--count",
            "5000",
            "--quiet",
        ],
    );
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&received.stdout).trim(), "5000");

    let sent = run(
        &broker,
        &["send", "--to", "queue:cli", "--body", "hello there"],
    );
    assert!(sent.status.success());
    let received = run(&broker, &["receive", "--from", "queue:cli", "--count", "1"]);
    assert!(received.status.success());
    assert_eq!(String::from_utf8_lossy(&received.stdout), "hello there\n");

    let sent = run(
        &broker,
        &[
            "send",
            "--to",
            "queue:cli-np",
            "--body",
            "fleeting",
            "--non-persistent",
        ],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let received = run(
        &broker,
        &["receive", "--from", "queue:cli-np", "--count", "1"],
    );
    assert_eq!(String::from_utf8_lossy(&received.stdout), "fleeting\n");

    let stat = run(&broker, &["stat"]);
    assert!(stat.status.success());
    let table = String::from_utf8_lossy(&stat.stdout).to_string();
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains(" cli "))
        .unwrap_or_else(|| panic!("a row for queue cli in {table}"))
        .split_whitespace()
        .collect();
    // kind, name, depth, enqueued, dequeued, consumers
    assert_eq!(row, ["queue", "cli", "0", "5001", "5001", "0"], "{table}");
    assert!(
        table.contains("store: journal,") && table.contains(" 0 skipped records"),
        "{table}"
    );
}

#[test]
fn receive_exits_1_when_fewer_messages_arrive() {
    let broker = broker_process(&[]);
    let received = run(
        &broker,
        &[
            "receive",
            "--from",
            "queue:empty",
            "--count",
            "5",
            "--timeout",
            "0.3",
            "--quiet",
            "--create",
        ],
    );
    assert_eq!(received.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&received.stderr).contains("received 0 of 5"));
}

/// The built-in benchmarks work on their defaults: 1 MiB messages are batched to fit a
/// frame (and the client's writer), and a topic publisher keeps within reach of its
/// slowest subscriber instead of having it dropped as a slow consumer.
#[test]
fn the_benchmarks_run_on_their_defaults() {
    let broker = broker_process(&[]);
    for args in [
        &["bench", "queue", "--size", "1048576", "--count", "100"][..],
        &["bench", "topic", "--count", "200000"],
    ] {
        let output = run(&broker, args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("lost 0"),
            "{args:?}: {stdout} {stderr}"
        );
    }
}

/// A durable round-trip run reports each send's time to its confirmation, and the disk
/// workload measures appends in the folder it is given and leaves nothing there.
#[test]
fn the_benchmarks_report_round_trips_and_the_disk_floor() {
    let broker = broker_process(&[]);
    let output = run(
        &broker,
        &[
            "bench",
            "queue",
            "--persistent",
            "--batch",
            "1",
            "--confirm-window",
            "1",
            "--count",
            "50",
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && stdout.contains("\"lost\":0")
            && stdout.contains("\"confirm_p50_us\":"),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let dir = data_dir("disk-floor");
    let output = run(
        &broker,
        &["bench", "disk", "--count", "20", "--json", "--dir"]
            .into_iter()
            .chain(dir.to_str())
            .collect::<Vec<_>>(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && stdout.contains("\"messages\":20")
            && !stdout.contains("\"p50_us\":0,"),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let left = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the disk workload left files in {}", dir.display());
}

/// Over STOMP the bench asks for a receipt every `--batch` SENDs; the SENDs after the
/// last such receipt are covered by the closing DISCONNECT's, so a count that is not a
/// multiple of the batch still ends with every message confirmed and received.
#[test]
fn the_stomp_benchmark_confirms_a_partial_last_batch() {
    let broker = broker_process(&[]);
    let url = format!("stomp://{}", broker.stomp_addr());
    let mut command = Command::new(BIN);
    command.args([
        "bench",
        "queue",
        "--url",
        &url,
        "--persistent",
        "--count",
        "250",
        "--batch",
        "100",
        "--confirm-window",
        "2",
        "--json",
    ]);
    let output = run_with_deadline(command, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && stdout.contains("\"messages\":250")
            && stdout.contains("\"lost\":0")
            && stdout.contains("\"confirm_p50_us\":"),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `stat` lists a destination whatever the length of its name (here 70,000 characters,
/// allowed by configuration), and the default limit refuses such a name.
#[test]
fn stat_survives_a_very_long_destination_name() {
    let long = "x".repeat(70_000);
    let broker = BrokerProcess::start_with_env(
        &data_dir("cli"),
        &[],
        &[("ACTORMQ__LIMITS__MAX_DESTINATION_NAME_BYTES", "100000")],
    );
    let sent = run(
        &broker,
        &["send", "--to", &format!("queue:{long}"), "--body", "x"],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let stat = run(&broker, &["stat"]);
    assert!(
        stat.status.success(),
        "{}",
        String::from_utf8_lossy(&stat.stderr)
    );
    assert!(String::from_utf8_lossy(&stat.stdout).contains(&long));

    let default = broker_process(&[]);
    let refused = run(
        &default,
        &["send", "--to", &format!("queue:{long}"), "--body", "x"],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("exceeds the limit of 1024"), "{stderr}");
}

/// Start-up errors are said once, with what to do.
#[test]
fn an_address_in_use_is_said_once_with_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut command = Command::new(BIN);
    command
        .args(["broker", "--listen", &addr, "--stomp-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir("cli-in-use"))
        .stdin(Stdio::null());
    let output = run_with_deadline(command, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("--listen"),
        "{stderr}"
    );
}

/// `--listen` takes a host name, as every server does.
#[test]
fn a_broker_listens_on_a_host_name() {
    let broker = BrokerProcess::start(&data_dir("cli-localhost"), &["--listen", "localhost:0"]);
    assert!(broker.url.starts_with("tcp://127.0.0.1:"), "{}", broker.url);
    let output = run(&broker, &["stat"]);
    assert!(output.status.success(), "{output:?}");
}

/// The client commands take `ACTORMQ_URL` when `--url` is not given, and an unknown scheme
/// is refused naming those they take.
#[test]
fn client_commands_honour_actormq_url_and_name_the_schemes() {
    let broker = broker_process(&[]);
    let mut command = Command::new(BIN);
    command.arg("stat").env("ACTORMQ_URL", &broker.url);
    let output = run_with_deadline(command, Duration::from_secs(20));
    assert!(output.status.success(), "{output:?}");
    let mut command = Command::new(BIN);
    command.args(["stat", "--url", "http://127.0.0.1:7670"]);
    let output = run_with_deadline(command, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("unknown scheme `http://`")
            && stderr.contains("tcp://HOST:PORT")
            && stderr.contains("failover:("),
        "{stderr}"
    );
}

/// `--profile` looks in `$ACTORMQ_CONFIG_DIR`, `./config` and `/etc/actormq`, and says
/// where it looked when the profile is in none of them.
#[test]
fn profiles_are_found_in_actormq_config_dir_and_the_error_lists_where_it_looked() {
    let dir = settings_file("mine.toml", "[broker]\nname = \"mine\"\n")
        .parent()
        .unwrap()
        .to_path_buf();
    let config_dir = dir.to_str().unwrap();
    let broker = BrokerProcess::start_with_env(
        &data_dir("cli-profile-dir"),
        &["--profile", "mine"],
        &[("ACTORMQ_CONFIG_DIR", config_dir)],
    );
    assert!(
        broker.startup.iter().any(|l| l.contains("profile: mine")),
        "{:?}",
        broker.startup
    );
    let mut command = Command::new(BIN);
    command
        .args(["broker", "--profile", "nosuch", "--listen", "127.0.0.1:0"])
        .env("ACTORMQ_CONFIG_DIR", config_dir);
    let output = run_with_deadline(command, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "there is no nosuch.toml in {config_dir}, ./config, /etc/actormq"
        )),
        "{stderr}"
    );
}

/// `send`'s message options reach the consumer; `receive` refuses a destination that does
/// not exist unless `--create`; `stat --json` is JSON; counts read as English.
#[test]
fn send_options_receive_create_and_stat_json() {
    let broker = broker_process(&[]);
    let body_file = settings_file("body.txt", "from a file");
    let mut command = Command::new(BIN);
    command
        .args(["send", "--url", &broker.url, "--to", "queue:opts"])
        .args(["--header", "region=eu", "--header", "kind=order"])
        .args(["--priority", "7", "--ttl", "600000"])
        .args(["--correlation-id", "c-1", "--reply-to", "queue:answers"])
        .arg("--body-file")
        .arg(&body_file);
    let sent = run_with_deadline(command, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(sent.status.success(), "{stderr}");
    assert!(stderr.contains("sent 1 message to queue:opts"), "{stderr}");

    // The body from standard input.
    let mut child = Command::new(BIN)
        .args([
            "send",
            "--url",
            &broker.url,
            "--to",
            "queue:opts",
            "--body",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"from stdin").unwrap();
    }
    assert!(child.wait_with_output().unwrap().status.success());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connection = actormq::client::Connection::connect(&broker.url)
            .await
            .unwrap();
        let session = connection.session(actormq::AckMode::Auto).unwrap();
        let mut consumer = session
            .consumer(actormq::Destination::queue("opts"))
            .await
            .unwrap();
        let first = consumer
            .receive(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.body_text(), "from a file");
        assert_eq!(first.headers.get("region").map(String::as_str), Some("eu"));
        assert_eq!(first.headers.get("kind").map(String::as_str), Some("order"));
        assert_eq!(first.priority, 7);
        assert!(first.expiration > 0);
        assert_eq!(first.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(first.reply_to, Some(actormq::Destination::queue("answers")));
        let second = consumer
            .receive(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.body_text(), "from stdin");
        drop(consumer);
        drop(session);
        connection.close().await.unwrap();
    });

    // A mistyped name is an error, not a new queue.
    let missing = run(
        &broker,
        &["receive", "--from", "queue:optz", "--count", "1"],
    );
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("queue:optz does not exist on the broker (check the name, or pass --create"),
        "{missing:?}"
    );
    let stat = run(&broker, &["stat"]);
    let table = String::from_utf8_lossy(&stat.stdout).to_string();
    assert!(!table.contains("optz"), "{table}");
    assert!(table.contains("store: journal, 1 segment, "), "{table}");

    let json = run(&broker, &["stat", "--json"]);
    assert!(json.status.success());
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(
        text.trim_start().starts_with('{')
            && text.contains("\"destinations\":[")
            && text.contains("\"name\":\"opts\""),
        "{text}"
    );
}

/// An interrupted `send` says how many messages were confirmed.
#[test]
fn an_interrupted_send_says_how_many_were_confirmed() {
    let broker = broker_process(&[]);
    let child = Command::new(BIN)
        .args([
            "send",
            "--url",
            &broker.url,
            "--to",
            "queue:long",
            "--count",
            "100000000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connection = actormq::client::Connection::connect(&broker.url)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let enqueued = connection
                .stat()
                .await
                .unwrap()
                .iter()
                .find(|d| d.name == "long")
                .map_or(0, |d| d.enqueued);
            if enqueued >= 10_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the send never got going"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        connection.close().await.unwrap();
    });
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: ") && stderr.contains(" of 100000000 confirmed"),
        "{stderr}"
    );
}

/// A second broker on a data folder in use is told so once, and what to do.
#[test]
fn a_data_folder_in_use_is_said_once_with_what_to_do() {
    let dir = data_dir("cli-lock");
    let _first = BrokerProcess::start(&dir, &[]);
    let mut command = Command::new(BIN);
    command
        .args([
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--stomp-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .stdin(Stdio::null());
    let output = run_with_deadline(command, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(
        stderr.matches("is in use by another broker").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("another --data-dir"), "{stderr}");
}
