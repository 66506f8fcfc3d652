#!/usr/bin/env bash
# What exporting traces costs: `wamesh bench ingest --in-process` and `wamesh bench send`, each
# run alternately without and with OTLP export to `wamesh otlp-sink` (a receiver that counts and
# discards spans), RUST_LOG=info both ways so the same spans exist and only the export differs.
# Prints every run's summary (stderr), then per bench the medians and what export changed
# (stdout): throughput, p99, and the machine's CPU per webhook or message (the bench process,
# Postgres and the sink's share), which is what bounds throughput on a CPU-bound machine.
#
#   scripts/bench-tracing.sh [pairs] [send rate]      # defaults: 3 pairs, 1000 messages/s
#
# The sink runs on the same two cores as the mesh and Postgres, niced (in production the
# collector runs elsewhere); its CPU is counted in the CPU per webhook and message.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs="${1:-3}"
rate="${2:-1000}"

source scripts/services.sh
ensure_postgres
ensure_redis

cargo build --release --locked -p wamesh
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/wamesh"
work="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# At the lowest priority: the sink stands in for a collector on another machine, so it takes
# only what the mesh and Postgres leave idle (its CPU is still counted per webhook and message).
nice -n 19 "$bin" otlp-sink --addr "127.0.0.1:$port" >"$work/sink.log" 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null || true; rm -rf "$work"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$sink/stat"; }
spans() { sleep 6; awk '/spans received/ {n = $1} END {print n + 0}' "$work/sink.log"; }

# run <bench> <off|on> <unit> <args...>: one bench run; appends its JSON summary, with the spans
# exported and the machine's CPU per unit, to $work/<bench>.jsonl
run() {
  local bench=$1 mode=$2 unit=$3
  shift 3
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
units = d['${unit}s_posted' if '$unit' == 'webhook' else '${unit}s_queued']
sink_us = $sink_ms * 1000 / max(units, 1)
d.update(mode='$mode', spans_exported=$exported, sink_cpu_ms=$sink_ms,
         spans_per_$unit=round($exported / max(units, 1), 2),
         machine_cpu_us_per_$unit=round(d['cpu_us_per_$unit'] + d['postgres_cpu_us_per_$unit'] + sink_us, 1))
print(json.dumps(d))
print(f\"$bench, export $mode: {d['throughput_per_s']:.0f}/s, p99 {d['p99_ms']} ms, CPU per $unit: \"
      f\"process {d['cpu_us_per_$unit']} + Postgres {d['postgres_cpu_us_per_$unit']} + sink {sink_us:.1f} us; \"
      f\"{$exported} spans exported ({d['spans_per_$unit']} per $unit)\", file=sys.stderr)
" >>"$work/$bench.jsonl"
}

for _ in $(seq "$pairs"); do
  run ingest off webhook --in-process --duration 20s --rounds 4
  run ingest on webhook --in-process --duration 20s --rounds 4
  run send off message --rate "$rate" --duration 15s
  run send on message --rate "$rate" --duration 15s
done
kill -INT $sink && wait $sink || true
sed -n '/spans by service and name/,$p' "$work/sink.log" >&2

python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
print()
for bench, unit in (("ingest", "webhook"), ("send", "message")):
    keys = ("throughput_per_s", "p99_ms", f"machine_cpu_us_per_{unit}")
    runs = [json.loads(line) for line in open(f"{work}/{bench}.jsonl")]
    med = {m: {k: statistics.median(r[k] for r in runs if r["mode"] == m) for k in keys}
           for m in ("off", "on")}
    spans = sum(r["spans_exported"] for r in runs if r["mode"] == "on")
    print(f"{bench}: medians of {len(runs) // 2} runs each way ({spans} spans exported)")
    for k in keys:
        off, on = med["off"][k], med["on"][k]
        print(f"  {k:28} without export {off:10.2f}   with export {on:10.2f}   change {100 * (on - off) / off:+6.1f}%")
PY
