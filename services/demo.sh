#!/usr/bin/env bash
# The MongoDB → Redis → Kafka demo (`make demo` runs it after the quickstart). It starts redis-server,
# mongo-java-server and a Kafka broker on 127.0.0.1 (services/cmd/services), runs configs/mongo-to-kafka.yaml,
# makes changes in MongoDB, shows them arriving in Kafka with a read_committed consumer, and stops
# everything it started. Needs Go, Java 17, Maven and redis-server; nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/demo
rm -rf "$out" && mkdir -p "$out"
(cd services && go build -o ../bin/services ./cmd/services && go build -o ../bin/demo ./cmd/demo)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== starting redis-server, mongo-java-server and Kafka (logs in $out/services)"
bin/services "$out/services" > "$out/services.log" 2>&1 & pids+=($!)
for _ in $(seq 1 240); do [ -f "$out/services/services.env" ] && break; sleep 0.5; done
[ -f "$out/services/services.env" ] || { echo "services did not start:"; tail -20 "$out/services.log"; exit 1; }
set -a; . "$out/services/services.env"; set +a
cat "$out/services/services.env"

echo "== bin/sluice run configs/mongo-to-kafka.yaml (log: $out/sluice.log)"
bin/sluice run --data-dir "$out/state" configs/mongo-to-kafka.yaml > "$out/sluice.log" 2>&1 & sluice=$!
pids=("$sluice" "${pids[@]}")
for _ in $(seq 1 120); do grep -q "change stream open" "$out/sluice.log" && break; sleep 0.5; done
grep -q "change stream open" "$out/sluice.log" || { echo "sluice did not start:"; tail -20 "$out/sluice.log"; exit 1; }

echo "== changes in MongoDB"
n=200
bin/demo changes "$MONGO_URI" "$n"
want=$((n + (n + 2) / 3 + (n + 4) / 5))

echo "== what arrives in Kafka (bin/kafka-tail, read_committed)"
bin/kafka-tail -brokers "$KAFKA_BROKERS" -topics shop.orders -n "$want" -idle 60s > "$out/kafka.txt"
head -4 "$out/kafka.txt" | cut -c1-200
echo "…"
got=$(wc -l < "$out/kafka.txt")
echo "$got of $want changes in topic shop.orders"

kill -TERM "$sluice"; wait "$sluice" || true
grep "^pipeline " "$out/sluice.log" || true
[ "$got" -eq "$want" ] || { echo "demo: want $want changes in Kafka, got $got" >&2; exit 1; }
