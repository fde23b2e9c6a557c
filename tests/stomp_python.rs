//! A real third-party STOMP client, Python's stomp.py, against actormq's STOMP listener:
//! sending, subscribing, acking (client, client-individual, 1.1 message-id), NACK,
//! transactions, request/reply through `/temp-queue/`, heart-beats and topics.
//! `.ci/run` (through `scripts/test.sh`) installs stomp.py from PyPI.

mod common;

use std::process::Command;

#[test]
fn stomp_py_scenarios_pass() {
    let broker = common::broker();
    let stomp = broker.stomp_addr().expect("the STOMP listener is on");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/stomp/stomp_py_client.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(stomp.ip().to_string())
        .arg(stomp.port().to_string())
        .output()
        .expect("python3 runs (install it, and stomp.py: python3 -m pip install stomp.py)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'stomp'"),
        "stomp.py is not installed: run scripts/test.sh, or python3 -m pip install stomp.py"
    );
    assert!(
        output.status.success(),
        "stomp.py scenarios failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
