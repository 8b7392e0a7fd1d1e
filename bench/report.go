package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"
)

// machine describes where the benchmark ran.
type machine struct {
	CPU        string
	Cores      int
	Memory     string
	Kernel     string
	PostgreSQL string
	PGSettings string
	Fsync      string // the server's fsync: on or off
	Go         string
	Relay      string
	Broker     string
	NATS       string // the NATS server of --sinks nats; empty without
	RabbitMQ   string // the RabbitMQ node of --sinks rabbitmq; empty without
	Redis      string // the Redis server of --sinks redis; empty without
	Load       string
	Date       string
}

// describeMachine reads /proc, the server and the relay binary.
func describeMachine(ctx context.Context, srv *server, relayBin string) (machine, error) {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02 15:04 MST")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				m.Memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if st := autogroupState(); st != "" {
		m.Kernel += ", autogroup scheduling " + st
	}
	m.Load = loadAverage()
	conn, err := srv.connect(ctx, "")
	if err != nil {
		return m, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&m.PostgreSQL); err != nil {
		return m, fmt.Errorf("read server_version: %w", err)
	}
	var settings []string
	for _, name := range []string{"shared_buffers", "fsync", "synchronous_commit", "full_page_writes", "wal_level"} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return m, fmt.Errorf("read setting %s: %w", name, err)
		}
		settings = append(settings, name+"="+v)
		if name == "fsync" {
			m.Fsync = v
		}
	}
	m.PGSettings = strings.Join(settings, ", ")
	if srv.local() {
		m.PostgreSQL += " (private cluster, cdc/pgtest, in the benchmark's session)"
	} else {
		m.PostgreSQL += " (--pg-dsn)"
	}
	out, err := exec.CommandContext(ctx, relayBin, "version").Output()
	if err != nil {
		return m, fmt.Errorf("%s version: %w", relayBin, err)
	}
	m.Relay = strings.TrimSpace(string(out))
	m.Broker = "kfake"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/twmb/franz-go/pkg/kfake" {
				m.Broker += " " + d.Version
			}
		}
	}
	m.Broker += ", one broker in its own process, restarted for every run, its log segments in files of a temporary directory, under /dev/shm when there is one (bench/broker --store files: kfake's in-memory files grow by copying, which took 60% of its CPU on W4)"
	return m, nil
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// report renders the results.
type report struct {
	machine machine
	opts    options
	results []result
	profile *profileRun
	took    time.Duration
}

// marker separates the hand-written top of the Markdown file from the
// results, which writeMarkdown replaces.
const marker = "<!-- Everything below this line is written by `make bench` (bench); edit above it. -->"

const defaultTop = `# Benchmarks

Run ` + "`make bench`" + ` to measure outbox-relay on your machine; see bench.

`

// writeMarkdown replaces everything after the marker in path with the
// results, keeping what is above it; a file without the marker gets a
// default top.
func (r report) writeMarkdown(path string) error {
	top := defaultTop
	if b, err := os.ReadFile(path); err == nil {
		if i := bytes.Index(b, []byte(marker)); i >= 0 {
			top = string(b[:i])
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, []byte(top+marker+"\n\n"+r.text()), 0o644)
}

// text is the results in Markdown, which reads well in a terminal too.
func (r report) text() string {
	var b strings.Builder
	m := r.machine
	fmt.Fprintf(&b, "## Results\n\n")
	fmt.Fprintf(&b, "- Date: %s; the whole benchmark took %s\n", m.Date, r.took.Round(time.Second))
	fmt.Fprintf(&b, "- CPU: %s, %d cores; memory %s; %s; load average at start %s\n", m.CPU, m.Cores, m.Memory, m.Kernel, m.Load)
	fmt.Fprintf(&b, "- PostgreSQL %s: %s\n", m.PostgreSQL, m.PGSettings)
	fmt.Fprintf(&b, "- Go %s; relay `%s`\n", m.Go, m.Relay)
	fmt.Fprintf(&b, "- Broker: %s\n", brokerText(r))
	settings := "relay defaults (`OUTBOX_RELAY_LOG_LEVEL=warn`)"
	if len(r.opts.relayEnv) > 0 {
		settings = "relay settings `" + strings.Join(r.opts.relayEnv, " ") + "`, otherwise defaults (`OUTBOX_RELAY_LOG_LEVEL=warn`)"
	}
	fmt.Fprintf(&b, "- Flags: --scale %g --runs %d --insert-clients %d --w3-writers %d --w3-consume=%t --consume=%t --sinks %s --sink-scale %g%s; %s\n",
		r.opts.scale, r.opts.runs, r.opts.insertClients, r.opts.w3Writers, r.opts.w3Consume, r.opts.consume, strings.Join(r.opts.sinks, ","), r.opts.sinkScale, fsyncFlag(r.opts), settings)
	if r.opts.consume || r.opts.w3Consume {
		fmt.Fprintf(&b, "- Consumer in the loop: franz-go in the benchmark's process, read_committed, fetch max wait %s, reading the topic from its start while the relay runs\n", consumerFetchMaxWait)
	}
	b.WriteString("- CPU per row: user + system CPU time of the process (/proc/PID/stat) over its whole life, start-up included, divided by the run's rows, in µs; the broker's from the relay's start, which leaves out the seconds of CPU a RabbitMQ node spends starting\n")
	if r.anyExactlyOnce() {
		fmt.Fprintf(&b, "- Delivery: `OUTBOX_RELAY_DELIVERY=exactly-once` for the -EO workloads (Kafka transaction interval %s), `at-least-once` for the others\n", r.opts.txnInterval)
	}
	b.WriteString("\nFigures are medians over the runs, with (min–max) when there are several.\n")

	// Kafka's runs; perSinkText shows W1 and W2 through the other sinks.
	byW := map[string][]result{}
	var order []string
	for _, res := range r.results {
		if res.sink != "" {
			continue
		}
		if _, ok := byW[res.workload]; !ok {
			order = append(order, res.workload)
		}
		byW[res.workload] = append(byW[res.workload], res)
	}

	var backlog, latency []string
	for _, w := range order {
		if byW[w][0].hist != nil {
			latency = append(latency, w)
		} else {
			backlog = append(backlog, w)
		}
	}
	if len(backlog) > 0 {
		fmt.Fprintf(&b, "\n### Backlog throughput (%s)\n\n", strings.Join(backlog, ", "))
		b.WriteString("Rows inserted with the relay stopped; timed from the relay's start until the slot's confirmed_flush_lsn passes the WAL position after the backlog (Kafka has acknowledged every row). ")
		if r.opts.consume {
			b.WriteString("Meanwhile a read_committed consumer in the benchmark counts the relay's records, and the run ends once it has every row as well: \"to consumer\" stops the clock when it received the last one. ")
		}
		b.WriteString("pg_recvlogical drains a copy of the same slot before the relay and another copy after it; the faster of the two drains is the ceiling logical decoding sets for a streaming client, so that a drain slowed by the machine does not flatter the relay. It is a client-bound ceiling: it makes two write() calls per message, and the walsender serving it works harder than the one serving the relay, so the relay can pass it. \"SQL decode\" is pg_logical_slot_peek_binary_changes decoding another copy inside a backend (no walsender, network or client): what decoding alone costs. \"to ack\" stops the clock when the relay's published count reaches the row count instead of at the confirmation, which comes with the next status update (`--status-interval`, 1 s).\n\n")
		b.WriteString("| workload | rows | relay rows/s | payload MB/s | to consumer rows/s | pg_recvlogical rows/s | SQL decode rows/s | relay ÷ pg_recvlogical | to ack ÷ pg_recvlogical | to consumer ÷ pg_recvlogical | relay CPU µs/row | relay peak RSS MB | broker CPU µs/row | insert s (not timed) |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, w := range backlog {
			rs := byW[w]
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w, rs[0].rows,
				stat(rs, "%.0f", func(r result) float64 { return r.rowsPerSec() }),
				stat(rs, "%.1f", func(r result) float64 { return r.mbPerSec() }),
				stat(rs, "%.0f", result.consumerRowsPerSec),
				stat(rs, "%.0f", func(r result) float64 { c := r.ceiling().seconds; return pos(c, float64(r.rows)/c) }),
				stat(rs, "%.0f", func(r result) float64 { return pos(r.decode, float64(r.rows)/r.decode) }),
				stat(rs, "%.2f", func(r result) float64 { return r.ratio() }),
				stat(rs, "%.2f", func(r result) float64 { return r.ackRatio() }),
				stat(rs, "%.2f", result.consumerRatio),
				stat(rs, "%.2f", result.cpuPerRow),
				stat(rs, "%.1f", func(r result) float64 { return float64(r.relayRSS) / 1e6 }),
				stat(rs, "%.2f", result.brokerCPUPerRow),
				stat(rs, "%.1f", func(r result) float64 { return r.insert }))
		}
		backlogStagesText(&b, byW, backlog)
	}
	if len(latency) > 0 {
		fmt.Fprintf(&b, "\n### Latency under steady load (%s)\n\n", strings.Join(latency, ", "))
		b.WriteString("Commit to Kafka acknowledgement, from the relay's `outbox_relay_end_to_end_latency_seconds` histogram (its change over the measured rows), quantiles interpolated linearly inside the bucket as PromQL's histogram_quantile does; the bucket is shown as (lower, upper] ms. ")
		if rs := byW[latency[0]]; len(rs[0].buckets) > 0 {
			fmt.Fprintf(&b, "Bucket bounds: %s ms. ", boundsText(rs[0].buckets))
		}
		fmt.Fprintf(&b, "\"consumer\" is exact per row, a close cousin rather than a bound: from the writer's commit returning to a consumer in the benchmark receiving the record (read_committed, fetch max wait %s), fetch included;", consumerFetchMaxWait)
		b.WriteString(" \"seconds p99 ≤ limit\" counts the one-second windows (by commit time) whose consumer-measured p99 was at most the limit, 5 ms for at-least-once, which tells steady slowness from bursts. Lag is pg_current_wal_lsn() − confirmed_flush_lsn sampled every 250 ms. The stage columns are p50 / p99 / p999 in ms of the relay's `" + metricStage + "` histogram over the measured rows (n/a if the relay does not export it): " + stagesText)
		if r.anyExactlyOnce() {
			fmt.Fprintf(&b, " For the -EO workloads read_committed is the only isolation at which exactly-once holds: a row arrives once the Kafka transaction holding it has committed, so its latency includes the wait for the transaction interval (%s) and the commit; the relay's histogram and produce → ack still stop at Kafka's acknowledgement inside the open transaction, before the row is visible. For exactly-once the limit of \"seconds p99 ≤ limit\" is the transaction interval + 10 ms, %s.", r.opts.txnInterval, ms(r.eoLatencyLimit()))
		}
		b.WriteString("\n\n")
		b.WriteString("| workload | tx/s | p50 ms | p99 ms | p999 ms | produce → ack p50 ms | produce → ack p99 ms | consumer p50 ms | consumer p99 ms | consumer p999 ms | consumer max ms | seconds p99 ≤ limit | send p50 / p99 / p999 ms | receive p50 / p99 / p999 ms | publish p50 / p99 / p999 ms | acknowledge p50 / p99 / p999 ms | lag p50 KB | lag max KB | relay CPU µs/row | broker CPU µs/row | relay peak RSS MB |\n")
		b.WriteString("|---|" + strings.Repeat("---:|", 20) + "\n")
		for _, w := range latency {
			rs := byW[w]
			hq := func(q float64) string {
				return histStat(rs, q, func(r result) map[float64]bucketQuantile { return r.hist })
			}
			pq := func(q float64) string {
				return histStat(rs, q, func(r result) map[float64]bucketQuantile { return r.produce })
			}
			cq := func(q float64) string {
				return stat(rs, "%.2f", func(r result) float64 {
					if r.consumed == nil {
						return -1
					}
					return r.consumed[q] * 1e3
				})
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w,
				stat(rs, "%.0f", func(r result) float64 { return r.rate }),
				hq(0.5), hq(0.99), hq(0.999), pq(0.5), pq(0.99), cq(0.5), cq(0.99), cq(0.999), cq(1),
				goodSeconds(rs),
				stageCell(rs, "send", quantiles), stageCell(rs, "receive", quantiles), stageCell(rs, "publish", quantiles), stageCell(rs, "acknowledge", quantiles),
				stat(rs, "%.0f", func(r result) float64 { return r.lagP50 / 1e3 }),
				stat(rs, "%.0f", func(r result) float64 { return r.lagMax / 1e3 }),
				stat(rs, "%.2f", result.cpuPerRow),
				stat(rs, "%.2f", result.brokerCPUPerRow),
				stat(rs, "%.1f", func(r result) float64 { return float64(r.relayRSS) / 1e6 }))
		}
	}

	if len(latency) > 0 {
		fmt.Fprintf(&b, "\nCPU while the measured W3 rows were written, in cores (CPU-seconds per second) of the machine's %d; \"machine busy\" counts every process, other tenants' included. PostgreSQL is the processes pg_stat_activity lists (backends, walsender, background workers); the benchmark's own writers and consumer are \"bench\".\n\n", m.Cores)
		b.WriteString("| workload | machine busy | relay | broker | PostgreSQL | bench |\n|---|---:|---:|---:|---:|---:|\n")
		for _, w := range latency {
			rs := byW[w]
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", w,
				stat(rs, "%.0f%%", func(r result) float64 { return pos(r.busy+1e-9, r.busy*100) }),
				stat(rs, "%.2f", func(r result) float64 { return r.cores.relay }),
				stat(rs, "%.2f", func(r result) float64 { return r.cores.broker }),
				stat(rs, "%.2f", func(r result) float64 { return r.cores.postgres }),
				stat(rs, "%.2f", func(r result) float64 { return r.cores.bench }))
		}
	}

	if r.anyExactlyOnce() {
		r.exactlyOnceText(&b, byW, order)
	}
	r.perSinkText(&b)

	b.WriteString("\n### Targets\n\n")
	for _, line := range r.targets(byW) {
		b.WriteString("- " + line + "\n")
	}

	b.WriteString("\n### Every run\n\n")
	b.WriteString("Seconds; a workload through another sink than Kafka names it: W1 (nats). CPU is user + system time from /proc/PID/stat; \"bench CPU\" is the benchmark's own process from the relay's start until its consumer had every row (the consumer, mostly); \"pg_recvlogical\" shows its drain before the relay / after it, the faster one being the ceiling, whose CPU columns are shown; the walsender columns are the server process decoding for the relay and for pg_recvlogical (n/a for an external server). \"busy\" is the share of the whole machine's CPU in use (/proc/stat) while the relay, or pg_recvlogical, was timed; for W3, while the measured rows were written. It shows how much the machine was shared.\n\n")
	b.WriteString("| workload | run | rows | insert | pg_recvlogical before / after | relay to ack | relay to confirm | to consumer | relay CPU | relay RSS MB | broker CPU | bench CPU | walsender CPU (relay) | walsender CPU (pg_recvlogical) | pg_recvlogical CPU | busy (relay) | busy (pg_recvlogical) | published |\n")
	b.WriteString("|---|" + strings.Repeat("---:|", 17) + "\n")
	all := r.results
	if r.profile != nil {
		all = append(append([]result(nil), all...), r.profile.result)
	}
	for _, res := range all {
		run := strconv.Itoa(res.run)
		if r.profile != nil && res.run == 0 {
			run = "profile"
		}
		ceil := res.ceiling()
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %.2f | %.1f | %s | %s | %s | %s | %s | %s | %s | %.0f |\n",
			res.title(), run, res.rows, opt(res.insert, "%.1f", res.hist == nil), res.drainsText(),
			opt(res.ack, "%.2f", res.hist == nil), opt(res.relay, "%.2f", res.hist == nil), opt(res.consumer, "%.2f", res.hist == nil),
			res.relayCPU, float64(res.relayRSS)/1e6, opt(res.brokerCPU, "%.2f", true), opt(res.benchCPU, "%.2f", true),
			opt(res.senderCPU, "%.2f", true), opt(ceil.walsender, "%.2f", true), opt(ceil.cpu, "%.2f", true),
			opt(res.busy*100, "%.0f%%", res.busy >= 0), opt(ceil.busy*100, "%.0f%%", ceil.busy >= 0), res.published)
	}
	if r.profile != nil {
		fmt.Fprintf(&b, "\nThe profile run (%s with `--pprof-addr`, not in the medians) saved its profiles in %s.\n", r.profile.result.workload, r.profile.dir)
	}
	return b.String()
}

// fsyncFlag is " --pg-fsync=false" when it is off for a private cluster,
// else empty: the server's own fsync is in the PostgreSQL line.
func fsyncFlag(o options) string {
	if o.pgDSN == "" && !o.pgFsync {
		return " --pg-fsync=false"
	}
	return ""
}

func brokerText(r report) string {
	if r.opts.brokers != "" {
		return "external, --brokers " + r.opts.brokers
	}
	return fmt.Sprintf("%s; topic outbox.bench, %d partitions", r.machine.Broker, r.opts.partitions)
}

// goodSeconds lists, per run, the one-second windows whose p99 was at most
// 5 ms out of all.
func goodSeconds(rs []result) string {
	var parts []string
	for _, r := range rs {
		if r.seconds > 0 {
			parts = append(parts, fmt.Sprintf("%d/%d", r.goodSeconds, r.seconds))
		}
	}
	if len(parts) == 0 {
		return "n/a"
	}
	return strings.Join(parts, ", ")
}

// values returns f of each result, skipping negative (unmeasured) ones.
func values(rs []result, f func(result) float64) []float64 {
	var vs []float64
	for _, r := range rs {
		if v := f(r); v >= 0 && !math.IsNaN(v) && !math.IsInf(v, 0) {
			vs = append(vs, v)
		}
	}
	return vs
}

// median of vs, -1 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return -1
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// stat formats the median of f over rs, with (min–max) for several runs.
func stat(rs []result, format string, f func(result) float64) string {
	vs := values(rs, f)
	if len(vs) == 0 {
		return "n/a"
	}
	s := fmt.Sprintf(format, median(vs))
	if len(vs) > 1 {
		lo, hi := vs[0], vs[0]
		for _, v := range vs {
			lo, hi = min(lo, v), max(hi, v)
		}
		s += fmt.Sprintf(" (%s–%s)", fmt.Sprintf(format, lo), fmt.Sprintf(format, hi))
	}
	return s
}

// medianBucket is the histogram quantile of the median run, from the
// histogram which picks.
func medianBucket(rs []result, q float64, which func(result) map[float64]bucketQuantile) bucketQuantile {
	var qs []bucketQuantile
	for _, r := range rs {
		if v, ok := which(r)[q]; ok {
			qs = append(qs, v)
		}
	}
	if len(qs) == 0 {
		return bucketQuantile{value: math.NaN(), lower: math.NaN(), upper: math.NaN()}
	}
	sort.Slice(qs, func(i, j int) bool { return qs[i].value < qs[j].value })
	return qs[(len(qs)-1)/2]
}

func histStat(rs []result, q float64, which func(result) map[float64]bucketQuantile) string {
	m := medianBucket(rs, q, which)
	if math.IsNaN(m.value) {
		return "n/a"
	}
	s := fmtBucket(m)
	vs := values(rs, func(r result) float64 {
		if v, ok := which(r)[q]; ok {
			return v.value
		}
		return -1
	})
	if len(vs) > 1 {
		lo, hi := vs[0], vs[0]
		for _, v := range vs {
			lo, hi = min(lo, v), max(hi, v)
		}
		s += fmt.Sprintf(" (%s–%s)", msNum(lo), msNum(hi))
	}
	return s
}

func fmtBucket(q bucketQuantile) string {
	return fmt.Sprintf("%s (%s, %s]", msNum(q.value), msNum(q.lower), msNum(q.upper))
}

// msNum formats seconds as milliseconds, to 0.01 ms.
func msNum(s float64) string {
	if math.IsInf(s, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(math.Round(s*1e5)/100, 'f', -1, 64)
}

func ms(s float64) string { return msNum(s) + "ms" }

func qName(q float64) string {
	switch q {
	case 0.5:
		return "50"
	case 0.99:
		return "99"
	case 0.999:
		return "999"
	}
	return strconv.FormatFloat(q*100, 'f', -1, 64)
}

func boundsText(bounds []float64) string {
	var parts []string
	for _, b := range bounds {
		parts = append(parts, msNum(b))
	}
	return strings.Join(parts, ", ")
}

// pos returns v if x is positive, else -1 (not measured).
func pos(x, v float64) float64 {
	if x <= 0 {
		return -1
	}
	return v
}

// opt formats v, or n/a when it was not measured or does not apply.
func opt(v float64, format string, applies bool) string {
	if !applies || v < 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

// drainsText is r's pg_recvlogical drains in seconds, before the relay /
// after it; n/a if there were none.
func (r result) drainsText() string {
	if len(r.drains) == 0 {
		return "n/a"
	}
	parts := make([]string, len(r.drains))
	for i, d := range r.drains {
		parts[i] = fmt.Sprintf("%.2f", d.seconds)
	}
	return strings.Join(parts, " / ")
}
