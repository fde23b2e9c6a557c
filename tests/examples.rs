//! Every example in `examples/` runs against a real broker (on port 0, through
//! `ACTORMQ_URL`) and exits 0. `cargo test` builds the examples before running tests.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let mut path = std::env::current_exe().expect("the test binary's path");
    path.pop();
    path.pop();
    path.push("examples");
    path.push(name);
    path
}

#[test]
fn every_example_runs_and_exits_0() {
    let broker = common::broker();
    let examples = [
        "readme",
        "queue",
        "topic",
        "actor_consumer",
        "request_reply",
        "oneway",
        "future",
        "callback",
        "pubsub",
        "multicast",
        "stream",
    ];
    for name in examples {
        let path = example(name);
        assert!(
            path.exists(),
            "{} is missing: `cargo test` builds the examples (or run `cargo build --examples`)",
            path.display()
        );
        let mut child = Command::new(&path)
            .env("ACTORMQ_URL", broker.url())
            .args(if name == "request_reply" {
                vec!["500"]
            } else {
                vec![]
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the example starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("example {name} did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = child.wait_with_output().expect("output");
        assert!(
            status.success(),
            "example {name} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The README's client snippet is `examples/readme.rs`, word for word: what a reader
/// copies is what CI compiles and runs.
#[test]
fn the_readme_snippet_is_the_readme_example() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let marker = "`examples/readme.rs`, exactly";
    let after = &readme[readme.find(marker).expect("the README names the example")..];
    let start = after.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let block = &after[start..];
    let block = &block[..block.find("```\n").expect("the block ends")];
    let example = std::fs::read_to_string(root.join("examples/readme.rs")).unwrap();
    assert_eq!(block, example);
}
