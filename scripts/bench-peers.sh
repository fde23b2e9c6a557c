#!/usr/bin/env bash
# Runs the same workloads against actormq and the peer brokers in one go and prints one
# JSON line per run. Needs a release build, an actormq broker on 127.0.0.1:7670 (STOMP on
# 61613), and the peers from ../shared/peers/start-peers.sh (ActiveMQ STOMP 61633,
# RabbitMQ STOMP 61623, NATS 4222).
#   cargo build --release && ./target/release/actormq broker &
#   ../shared/peers/start-peers.sh && scripts/bench-peers.sh | tee bench.jsonl
set -uo pipefail
cd "$(dirname "$0")/.."
B=./target/release/actormq
COUNT=${COUNT:-100000}
ACTORMQ_NATIVE=tcp://127.0.0.1:7670
ACTORMQ_STOMP=stomp://127.0.0.1:61613
ACTIVEMQ=stomp://127.0.0.1:61633
RABBITMQ=stomp://127.0.0.1:61623
NATS=nats://127.0.0.1:4222

run() { timeout 300 "$B" bench "$@" --json --idle-timeout 30 || echo "{\"failed\":\"$*\"}"; }

for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run queue --url "$url" --count "$COUNT"
done
for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run topic --url "$url" --count $((COUNT / 4)) --subscribers 4
done
for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run latency --url "$url" --rate 5000 --duration 10
done
run queue --url $ACTORMQ_NATIVE --count "$COUNT" --producers 4 --consumers 4
run queue --url $NATS --count "$COUNT" --producers 4 --consumers 4
for url in $ACTORMQ_NATIVE $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run request-reply --url "$url" --count 5000
done
# The durable round trip: one producer, persistent, each send confirmed before the next.
for url in $ACTORMQ_NATIVE $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run queue --url "$url" --persistent --batch 1 --confirm-window 1 --count 3000
done
# Large messages: 1,000 of 1 MiB.
for url in $ACTORMQ_NATIVE $NATS $ACTORMQ_STOMP $ACTIVEMQ $RABBITMQ; do
  run queue --url "$url" --size 1048576 --count 1000
done
# Resident memory of each broker after the runs (kB), as one JSON line.
rss() { [ -n "${1:-}" ] && ps -o rss= -p "$1" 2>/dev/null | tr -d ' ' || true; }
pid_of() { [ -s "$1" ] && cat "$1" || true; }
ACTORMQ_PID=$(pgrep -f 'actormq broker' | head -n 1)
ANCHORS=${ANCHORS:-/tmp/anchors}
printf '{"resident_kb":{"actormq":"%s","activemq":"%s","rabbitmq":"%s","nats":"%s"}}\n' \
  "$(rss "$ACTORMQ_PID")" "$(rss "$(pid_of "$ANCHORS/activemq.pid")")" \
  "$(rss "$(pid_of "$ANCHORS/rabbitmq.pid")")" "$(rss "$(pid_of "$ANCHORS/nats.pid")")"
