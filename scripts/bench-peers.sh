#!/usr/bin/env bash
# Runs the same workloads against actormq and the peer brokers in one go and prints one
# JSON line per run. Needs a release build, an actormq broker on 127.0.0.1:7670 (STOMP on
# 61613), and the peers from ../shared/peers/start-peers.sh (ActiveMQ STOMP 61633,
# RabbitMQ STOMP 61623, NATS 4222).
#   cargo build --release && ./target/release/actormq broker --data-dir /tmp/peerbench &
#   ../shared/peers/start-peers.sh && scripts/bench-peers.sh | tee bench.jsonl
# DATA_DIR (default /tmp/peerbench) is the broker's data folder: the disk floor is
# measured there. WARMUP (default 3) rounds of queue 1→1 and topic runs go to every
# target first, their lines to stderr: each broker is measured warm (a JVM's JIT, a
# fresh process's first pages), the same for all of them.
set -uo pipefail
cd "$(dirname "$0")/.."
B=./target/release/actormq
COUNT=${COUNT:-100000}
ACTORMQ_NATIVE=tcp://127.0.0.1:7670
ACTORMQ_STOMP=stomp://127.0.0.1:61613
ACTIVEMQ=stomp://127.0.0.1:61633
RABBITMQ=stomp://127.0.0.1:61623
NATS=nats://127.0.0.1:4222

DATA_DIR=${DATA_DIR:-/tmp/peerbench}

run() { timeout 300 "$B" bench "$@" --json --idle-timeout 30 || echo "{\"failed\":\"$*\"}"; }

# Resident memory of each broker (kB), as one JSON line labelled $1.
rss() { [ -n "${1:-}" ] && ps -o rss= -p "$1" 2>/dev/null | tr -d ' ' || true; }
pid_of() { [ -s "$1" ] && cat "$1" || true; }
ACTORMQ_PID=$(pgrep -f 'actormq broker' | head -n 1)
ANCHORS=${ANCHORS:-/tmp/anchors}
resident() {
  printf '{"resident_kb":"%s","actormq":"%s","activemq":"%s","rabbitmq":"%s","nats":"%s"}\n' "$1" \
    "$(rss "$ACTORMQ_PID")" "$(rss "$(pid_of "$ANCHORS/activemq.pid")")" \
    "$(rss "$(pid_of "$ANCHORS/rabbitmq.pid")")" "$(rss "$(pid_of "$ANCHORS/nats.pid")")"
}

resident before

WARMUP=${WARMUP:-3}
for _ in $(seq "$WARMUP"); do
  for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
    run queue --url "$url" --count "$COUNT" | sed 's/^/warm-up: /' >&2
    run topic --url "$url" --count $((COUNT / 4)) --subscribers 4 | sed 's/^/warm-up: /' >&2
  done
done

for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run queue --url "$url" --count "$COUNT"
done
for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run topic --url "$url" --count $((COUNT / 4)) --subscribers 4
done
for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run latency --url "$url" --rate 5000 --duration 10
done
for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run queue --url "$url" --count "$COUNT" --producers 4 --consumers 4
done
for url in $ACTORMQ_NATIVE $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run request-reply --url "$url" --count 5000
done
# Persistent with a window of 100 unconfirmed sends (natively, batches of 100).
for url in $ACTORMQ_NATIVE $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run queue --url "$url" --persistent --confirm-window 100 --count 50000
done
# The durable round trip: one producer, persistent, each send confirmed before the next
# (confirm_p50_us is send to confirmation), against the disk's floor: a 4 KiB append
# with fdatasync into a preallocated file on the broker's data disk.
run disk --dir "$DATA_DIR" --count 3000
for url in $ACTORMQ_NATIVE $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run queue --url "$url" --persistent --batch 1 --confirm-window 1 --count 3000
done
# Large messages: 1,000 of 1 MiB.
for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run queue --url "$url" --size 1048576 --count 1000
done
# Resident memory right after the runs, and after 30 s idle (what bursts took, returned).
resident after
sleep 30
resident idle30
