package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// The targets the report checks: the performance issue's, and issue 10's
// for exactly-once (exactlyOnceTargets).

// latencyTarget is a W3 target on the commit-to-consumer latency: the
// q-quantile at most limit seconds.
type latencyTarget struct {
	q     float64
	limit float64
}

// w3Targets are the W3 targets, measured with w3Conditions.
var w3Targets = []latencyTarget{{0.99, 0.005}, {0.999, 0.020}}

// w3Writers is the number of writers the W3 targets are set for.
const w3Writers = 8

// verdict is how the report marks a target.
func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

// targets checks the figures against the project's goals.
func (r report) targets(byW map[string][]result) []string {
	var out []string
	cores := r.machine.Cores
	ratioLine := func(w string, goal float64, byConsumer bool) {
		rs := byW[w]
		if len(rs) == 0 {
			return
		}
		relay := median(values(rs, result.ratio))
		ack := median(values(rs, result.ackRatio))
		cons := median(values(rs, result.consumerRatio))
		// What the machine left to the relay: a target above it needs the
		// other processes' CPU, not only the relay's.
		free := ""
		if f := median(values(rs, func(r result) float64 { return r.freeRelayRatio(cores) })); f >= 0 {
			free = fmt.Sprintf("; a relay spending no CPU could have reached %.2f here, the walsender, broker and consumer spending what they did on %d cores", f, cores)
		}
		switch {
		case !byConsumer:
			line := fmt.Sprintf("%s relay ≥ %g × pg_recvlogical (median, to the slot's confirmation): %.2f, %s (to ack %.2f", w, goal, relay, verdict(relay >= goal), ack)
			if cons >= 0 {
				line += fmt.Sprintf(", to consumer %.2f", cons)
			}
			out = append(out, line+")"+free)
		case cons < 0:
			out = append(out, fmt.Sprintf("%s ≥ %g × pg_recvlogical with the consumer in the loop: not measured (--consume=false); relay to confirm %.2f", w, goal, relay))
		default:
			out = append(out, fmt.Sprintf("%s ≥ %g × pg_recvlogical with the consumer in the loop (median, until the consumer had every row): %.2f, %s (relay to confirm %.2f, to ack %.2f)%s", w, goal, cons, verdict(cons >= goal), relay, ack, free))
		}
	}
	ratioLine("W4", 0.8, false)
	if rs := byW["W4"]; len(rs) > 0 {
		peak := 0.0
		for _, res := range rs {
			peak = max(peak, float64(res.relayRSS)/1e6)
		}
		line := fmt.Sprintf("W4 relay peak RSS ≤ 64 MB: %.1f MB at most, %s", peak, verdict(peak <= 64))
		if w, all := r.peakRSS(byW); all > peak {
			line += fmt.Sprintf(" (of every workload: %.1f MB, %s)", all, w)
		}
		out = append(out, line)
	}
	ratioLine("W2", 1.2, true)
	ratioLine("W1", 1.5, false)
	if rs := byW["W2"]; len(rs) > 0 {
		v := median(values(rs, result.cpuPerRow))
		out = append(out, fmt.Sprintf("W2 relay CPU ≤ 1.5 µs per row: %.2f µs, %s", v, verdict(v <= 1.5)))
	}
	if rs := byW["W3"]; len(rs) > 0 {
		out = append(out, r.w3TargetLines(rs)...)
	}
	return append(out, r.exactlyOnceTargets(byW)...)
}

// w3TargetLines checks W3's commit-to-consumer quantiles, naming any
// condition of the run that differs from the target's.
func (r report) w3TargetLines(rs []result) []string {
	var differ []string
	if r.opts.w3Writers != w3Writers {
		differ = append(differ, fmt.Sprintf("--w3-writers %d", r.opts.w3Writers))
	}
	if r.machine.Fsync != "on" {
		differ = append(differ, "fsync="+r.machine.Fsync)
	}
	cond := ""
	if len(differ) > 0 {
		cond = " (the target is for 8 writers and fsync=on; this run had " + strings.Join(differ, ", ") + ")"
	}
	var out []string
	for _, t := range w3Targets {
		hq := medianBucket(rs, t.q, func(r result) map[float64]bucketQuantile { return r.hist })
		hist := "n/a"
		if !math.IsNaN(hq.value) {
			hist = msNum(hq.value) + " ms"
		}
		c := median(values(rs, func(r result) float64 {
			if r.consumed == nil {
				return -1
			}
			return r.consumed[t.q]
		}))
		head := fmt.Sprintf("W3 with %d writers, fsync on, consumer in the loop: commit-to-consumer p%s ≤ %s ms", w3Writers, qName(t.q), msNum(t.limit))
		if c < 0 {
			out = append(out, fmt.Sprintf("%s: not measured (--w3-consume=false); relay histogram (commit to ack) %s%s", head, hist, cond))
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s ms, %s; relay histogram (commit to ack) %s%s", head, msNum(c), verdict(c <= t.limit), hist, cond))
	}
	return out
}

// peakRSS is the highest relay peak RSS of any run, in MB, and the workload
// of that run.
func (r report) peakRSS(byW map[string][]result) (string, float64) {
	var at string
	var peak float64
	for _, w := range slices.Sorted(maps.Keys(byW)) {
		for _, res := range byW[w] {
			if v := float64(res.relayRSS) / 1e6; v > peak {
				at, peak = w, v
			}
		}
	}
	return at, peak
}
