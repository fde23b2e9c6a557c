//! The README's commands stay true: every `actormq` command line in its shell blocks names
//! a subcommand the binary has, flags that subcommand takes, and profiles that exist.
//! (What the commands do is tested in `tests/cli.rs`, `tests/cluster.rs`, `tests/ha_*.rs`
//! and `tests/deploy.rs`; this keeps the text from drifting away from the binary.)

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::process::BIN;

/// The `actormq` command lines of the README's ```sh blocks, without the program.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("the README");
    let mut in_sh = false;
    let mut commands = Vec::new();
    for line in readme.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = line
            .split(" #")
            .next()
            .unwrap_or_default()
            .trim_end_matches('&')
            .trim();
        for program in [
            "$B ",
            "actormq ",
            "cargo run --release -- ",
            "./target/release/actormq ",
        ] {
            if let Some(rest) = line.strip_prefix(program) {
                commands.push(rest.to_string());
            }
        }
    }
    commands
}

#[test]
fn every_readme_command_is_one_the_binary_takes() {
    let commands = readme_commands();
    assert!(commands.len() >= 20, "found {} commands", commands.len());
    let mut helps: HashMap<String, String> = HashMap::new();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        let mut sub = vec![words[0]];
        if words[0] == "db" {
            sub.push(words[1]);
        }
        let key = sub.join(" ");
        let help = helps.entry(key.clone()).or_insert_with(|| {
            let out = Command::new(BIN)
                .args(&sub)
                .arg("--help")
                .output()
                .expect("actormq runs");
            assert!(
                out.status.success(),
                "`actormq {key}` is not a command (README: {command})"
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        });
        for word in &words {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap_or_default();
                assert!(
                    help.contains(&format!("--{flag}")),
                    "`actormq {key}` has no --{flag} (README: {command})"
                );
            }
        }
        if let Some(at) = words.iter().position(|w| *w == "--profile") {
            let profile = words[at + 1];
            assert!(
                config.join(format!("{profile}.toml")).is_file(),
                "the README's profile `{profile}` is not in config/ (README: {command})"
            );
        }
    }
}
