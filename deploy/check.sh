#!/usr/bin/env bash
# Checks the monitoring files under deploy/:
#
#   - promtool check rules and promtool test rules on deploy/alerts/;
#   - the Grafana dashboard parses as JSON, and every PromQL expression in it
#     compiles (checked by promtool as recording rules, Grafana variables
#     replaced by sample values);
#   - the rules and the dashboard use only the relay's documented metrics
#     (the list below) and Prometheus' `up`.
#
# With an argument, a saved /metrics scrape or its URL, it also checks that
# every relay metric used appears in that scrape:
#
#   deploy/check.sh                                  # offline checks
#   deploy/check.sh http://localhost:9479/metrics    # and against a live relay
#   deploy/check.sh scrape.txt                       # or a saved scrape
#
# Needs promtool (Debian: apt-get install prometheus) and jq or python3.
# Exits non-zero on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

rules=deploy/alerts/outbox-relay.rules.yml
tests=deploy/alerts/outbox-relay.test.yml
dashboard=deploy/dashboards/outbox-relay.json

# The metrics the relay exports. Histograms are listed by their base name.
metrics=(
	outbox_relay_replication_lag_bytes
	outbox_relay_receive_lag_bytes
	outbox_relay_replication_lag_seconds
	outbox_relay_slot_retained_wal_bytes
	outbox_relay_slot_safe_wal_bytes
	outbox_relay_slot_active
	outbox_relay_streaming
	outbox_relay_standby
	outbox_relay_events_published_total
	outbox_relay_published_bytes_total
	outbox_relay_transactions_total
	outbox_relay_rows_received_total
	outbox_relay_end_to_end_latency_seconds
	outbox_relay_publish_duration_seconds
	outbox_relay_stage_latency_seconds
	outbox_relay_inflight_events
	outbox_relay_inflight_bytes
	outbox_relay_inflight_events_limit
	outbox_relay_inflight_bytes_limit
	outbox_relay_dlq_events_total
	outbox_relay_errors_total
	outbox_relay_reconnects_total
	outbox_relay_confirmed_lsn
	outbox_relay_received_lsn
	outbox_relay_flushed_lsn
	outbox_relay_backpressure_waits_total
	outbox_relay_replayed_rows_skipped_total
	outbox_relay_build_info
	outbox_relay_pruned_rows_total
	outbox_relay_outbox_table_bytes
)
histograms=(outbox_relay_end_to_end_latency_seconds outbox_relay_publish_duration_seconds outbox_relay_stage_latency_seconds)
# The Kafka client's metrics (franz-go kprom) are outbox_relay_kafka_*.
kafka_prefix=outbox_relay_kafka_

fail() {
	echo "check.sh: $*" >&2
	exit 1
}

if ! command -v promtool >/dev/null 2>&1; then
	fail "promtool not found; install it (Debian and Ubuntu: apt-get install prometheus) and run again"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== promtool check rules $rules"
promtool check rules "$rules" || fail "$rules: invalid rules"

echo "== promtool test rules $tests"
promtool test rules "$tests" || fail "$tests: unit tests failed"

echo "== $dashboard: JSON"
if command -v jq >/dev/null 2>&1; then
	jq empty "$dashboard" || fail "$dashboard: not valid JSON"
	jq -r '.. | objects | select(has("expr")) | .expr' "$dashboard" >"$tmp/exprs"
elif command -v python3 >/dev/null 2>&1; then
	python3 -m json.tool "$dashboard" >/dev/null || fail "$dashboard: not valid JSON"
	python3 - "$dashboard" >"$tmp/exprs" <<-'EOF'
		import json, sys
		def walk(v):
		    if isinstance(v, dict):
		        if "expr" in v:
		            print(v["expr"])
		        for x in v.values():
		            walk(x)
		    elif isinstance(v, list):
		        for x in v:
		            walk(x)
		walk(json.load(open(sys.argv[1])))
	EOF
else
	fail "neither jq nor python3 found; install one to check $dashboard"
fi
n=$(wc -l <"$tmp/exprs")
[ "$n" -gt 0 ] || fail "$dashboard: no PromQL expressions found"
if grep -n $'\t\|\\\\' "$tmp/exprs"; then
	fail "$dashboard: an expression holds a tab or a backslash, which this check cannot quote"
fi

echo "== $dashboard: $n PromQL expressions compile"
# Grafana variables become sample values; each expression becomes a
# recording rule, so that promtool parses it.
sed -e 's/\$__rate_interval/5m/g' -e 's/\$__interval/1m/g' -e 's/\$__range/1h/g' \
	-e 's/\${\{0,1\}job}\{0,1\}/.+/g' -e 's/\${\{0,1\}instance}\{0,1\}/.+/g' \
	"$tmp/exprs" >"$tmp/exprs.sub"
if grep -n '\$' "$tmp/exprs.sub"; then
	fail "$dashboard: an expression uses a Grafana variable this check does not know"
fi
{
	echo "groups:"
	echo "  - name: dashboard"
	echo "    rules:"
	i=0
	while IFS= read -r e; do
		i=$((i + 1))
		e=${e//\"/\\\"}
		echo "      - record: dashboard:expr_$i"
		echo "        expr: \"$e\""
	done <"$tmp/exprs.sub"
} >"$tmp/dashboard.rules.yml"
promtool check rules "$tmp/dashboard.rules.yml" >"$tmp/promtool.out" 2>&1 || {
	cat "$tmp/promtool.out" >&2
	nl -ba "$tmp/exprs" >&2
	fail "$dashboard: an expression does not compile (expr_N is line N above)"
}

echo "== metric names used by $rules and $dashboard"
cat "$rules" "$tmp/exprs" | grep -oE 'outbox_relay_[a-z0-9_]+' | sort -u >"$tmp/used.raw"
: >"$tmp/used"
while IFS= read -r m; do
	base=$m
	for h in "${histograms[@]}"; do
		case $m in "${h}_bucket" | "${h}_sum" | "${h}_count") base=$h ;; esac
	done
	echo "$base" >>"$tmp/used"
done <"$tmp/used.raw"
sort -u -o "$tmp/used" "$tmp/used"
unknown=()
while IFS= read -r m; do
	known=false
	for k in "${metrics[@]}"; do [ "$m" = "$k" ] && known=true; done
	case $m in "$kafka_prefix"*) known=true ;; esac
	$known || unknown+=("$m")
done <"$tmp/used"
# Any other selector (name{...}) in the dashboard must be `up`.
others=$(grep -oE '(^|[^a-zA-Z0-9_:])[a-zA-Z_:][a-zA-Z0-9_:]*\{' "$tmp/exprs" |
	sed -E 's/^[^a-zA-Z_:]//; s/\{$//' | grep -vE '^(outbox_relay_[a-z0-9_]+|up)$' | sort -u || true)
if ((${#unknown[@]})) || [ -n "$others" ]; then
	printf '  not a relay metric: %s\n' "${unknown[@]}" $others >&2
	fail "the rules or the dashboard use metrics outside the list in deploy/check.sh"
fi
sed 's/^/  /' "$tmp/used"

if [ $# -gt 0 ]; then
	src=$1
	case $src in
	http://* | https://*)
		command -v curl >/dev/null 2>&1 || fail "curl not found; save the scrape to a file and pass its path"
		curl -fsS "$src" >"$tmp/scrape" || fail "cannot fetch $src"
		;;
	*)
		[ -r "$src" ] || fail "cannot read $src"
		cp "$src" "$tmp/scrape"
		;;
	esac
	echo "== metric names present in $src"
	missing=() late=()
	while IFS= read -r m; do
		grep -qE "^${m}(_bucket|_sum|_count)?[{ ]" "$tmp/scrape" && continue
		# The Kafka client creates a series at its first event (a
		# connect error may never happen): absent is not wrong.
		case $m in
		"$kafka_prefix"*) late+=("$m") ;;
		*) missing+=("$m") ;;
		esac
	done <"$tmp/used"
	if ((${#late[@]})); then
		printf '  not yet in the scrape (Kafka client series appear at their first event): %s\n' "${late[@]}"
	fi
	if ((${#missing[@]})); then
		printf '  missing: %s\n' "${missing[@]}" >&2
		fail "$src lacks metrics the rules or the dashboard use"
	fi
	echo "  $(($(wc -l <"$tmp/used") - ${#late[@]})) of $(wc -l <"$tmp/used") present"
fi

echo "OK"
