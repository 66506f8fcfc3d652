#!/usr/bin/env bash
# What exporting traces costs: `wamesh bench ingest --in-process` and `wamesh bench send`, each
# run alternately without and with OTLP export to `wamesh otlp-sink` (a receiver that counts and
# discards spans), RUST_LOG=info both ways so the same spans exist and only the export differs.
# Prints every run's summary (stderr), then per bench the medians and what export cost (stdout).
#
#   scripts/bench-tracing.sh [pairs] [send rate]      # defaults: 3 pairs, 2000 messages/s
#
# The sink runs on the same two cores as the mesh and Postgres; its CPU is printed, so it can
# be told apart (in production the collector runs elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wamesh-target}"
pairs="${1:-3}"
rate="${2:-2000}"

source scripts/services.sh
ensure_postgres
ensure_redis

cargo build --release --locked -p wamesh
bin="$CARGO_TARGET_DIR/release/wamesh"
work="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" otlp-sink --addr "127.0.0.1:$port" >"$work/sink.log" 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null; rm -rf "$work"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$sink/stat"; }
spans() { sleep 6; tail -n 1 "$work/sink.log" | awk '{print $1 + 0}'; }

# run <bench> <off|on> <args...>: one bench run; appends its JSON summary to $work/<bench>.jsonl
run() {
  local bench=$1 mode=$2
  shift 2
  local before_ticks before_spans endpoint=""
  before_ticks=$(cpu_ticks)
  before_spans=$(spans)
  [ "$mode" = on ] && endpoint="http://127.0.0.1:$port"
  OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" RUST_LOG=info "$bin" bench "$bench" "$@" >"$work/run.log"
  grep -v '^{' "$work/run.log" >&2
  local exported=$(($(spans) - before_spans)) sink_ms=$((($(cpu_ticks) - before_ticks) * 10))
  grep "\"name\":\"$bench\"" "$work/run.log" | python3 -c "
import json, sys
d = json.load(sys.stdin)
d.update(mode='$mode', spans_exported=$exported, sink_cpu_ms=$sink_ms)
print(json.dumps(d))
print(f\"$bench, export $mode: {d['throughput_per_s']:.0f}/s, ratio {d.get('ratio')}, p99 {d['p99_ms']} ms, \"
      f\"CPU/message {d.get('cpu_us_per_message', '-')} us; {$exported} spans exported, sink CPU {$sink_ms} ms\", file=sys.stderr)
" >>"$work/$bench.jsonl"
}

for _ in $(seq "$pairs"); do
  run ingest off --in-process --duration 20s --rounds 4
  run ingest on --in-process --duration 20s --rounds 4
  run send off --rate "$rate" --duration 15s
  run send on --rate "$rate" --duration 15s
done

python3 - "$work" <<'EOF'
import json, statistics, sys
work = sys.argv[1]
print()
for bench, keys in (("ingest", ("throughput_per_s", "ratio", "p99_ms")),
                    ("send", ("throughput_per_s", "p99_ms", "cpu_us_per_message"))):
    runs = [json.loads(line) for line in open(f"{work}/{bench}.jsonl")]
    med = {m: {k: statistics.median(r[k] for r in runs if r["mode"] == m) for k in keys}
           for m in ("off", "on")}
    spans = sum(r["spans_exported"] for r in runs if r["mode"] == "on")
    print(f"{bench}: medians of {len(runs) // 2} runs each way ({spans} spans exported)")
    for k in keys:
        off, on = med["off"][k], med["on"][k]
        print(f"  {k:20} without export {off:10.2f}   with export {on:10.2f}   change {100 * (on - off) / off:+6.1f}%")
EOF
