package main

import (
	"fmt"
	"strings"
)

// The exactly-once part of the report: each -EO workload against its
// at-least-once workload of the same runs, the relay's Kafka transactions,
// and issue 10's targets.

// anyExactlyOnce reports whether an -EO workload ran.
func (r report) anyExactlyOnce() bool {
	for _, res := range r.results {
		if res.exactlyOnce {
			return true
		}
	}
	return false
}

// eoLatencyLimit is the target for W3-EO's p99 commit-to-consumer latency,
// in seconds: the transaction interval + 10 ms.
func (r report) eoLatencyLimit() float64 {
	return r.opts.txnInterval.Seconds() + 0.010
}

// pair is an exactly-once run and the at-least-once run of its base
// workload with the same run number; alo is nil without one.
type pair struct {
	eo  result
	alo *result
}

// pairs returns the runs of exactly-once workload w, each with its
// at-least-once counterpart.
func pairs(byW map[string][]result, w string) []pair {
	var ps []pair
	for _, eo := range byW[w] {
		p := pair{eo: eo}
		for i, alo := range byW[eo.base] {
			if alo.run == eo.run {
				p.alo = &byW[eo.base][i]
			}
		}
		ps = append(ps, p)
	}
	return ps
}

// drainRatio is the exactly-once run's rows/s over its at-least-once
// run's, to the slot's confirmation (the exactly-once relay confirms only
// committed fences); -1 without a counterpart.
func (p pair) drainRatio() float64 {
	if p.alo == nil || p.alo.relay <= 0 || p.eo.relay <= 0 {
		return -1
	}
	return p.eo.rowsPerSec() / p.alo.rowsPerSec()
}

// statPairs is stat over pairs.
func statPairs(ps []pair, format string, f func(pair) float64) string {
	rs := make([]result, len(ps))
	at := map[int]pair{}
	for i, p := range ps {
		rs[i], at[p.eo.run] = p.eo, p
	}
	return stat(rs, format, func(r result) float64 { return f(at[r.run]) })
}

// exactlyOnceText writes the section comparing the modes.
func (r report) exactlyOnceText(b *strings.Builder, byW map[string][]result, order []string) {
	var backlog, latency, all []string
	for _, w := range order {
		rs := byW[w]
		if !rs[0].exactlyOnce {
			continue
		}
		all = append(all, w)
		switch {
		case len(byW[rs[0].base]) == 0:
		case rs[0].hist != nil:
			latency = append(latency, w)
		default:
			backlog = append(backlog, w)
		}
	}
	fmt.Fprintf(b, "\n### Exactly-once against at-least-once\n\n")
	fmt.Fprintf(b, "Each -EO workload is its at-least-once workload through a relay with `OUTBOX_RELAY_DELIVERY=exactly-once`: Kafka transactions of whole PostgreSQL transactions, each committed with a fence record at the first PostgreSQL commit after it has been open for the transaction interval (%s). The two take turns, run by run, on the same machine; ratios are of runs with the same number, median (min–max). Backlog rates are to the slot's confirmation, which for exactly-once follows the Kafka commit.\n", r.opts.txnInterval)
	if len(backlog) > 0 {
		b.WriteString("\n| workload | at-least-once rows/s | exactly-once rows/s | exactly-once ÷ at-least-once | relay CPU µs/row, at-least-once | relay CPU µs/row, exactly-once | relay peak RSS MB, at-least-once | relay peak RSS MB, exactly-once |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, w := range backlog {
			ps := pairs(byW, w)
			fmt.Fprintf(b, "| %s ÷ %s | %s | %s | %s | %s | %s | %s | %s |\n", w, ps[0].eo.base,
				stat(byW[ps[0].eo.base], "%.0f", func(r result) float64 { return r.rowsPerSec() }),
				stat(byW[w], "%.0f", func(r result) float64 { return r.rowsPerSec() }),
				statPairs(ps, "%.2f", pair.drainRatio),
				stat(byW[ps[0].eo.base], "%.2f", result.cpuPerRow),
				stat(byW[w], "%.2f", result.cpuPerRow),
				stat(byW[ps[0].eo.base], "%.1f", func(r result) float64 { return float64(r.relayRSS) / 1e6 }),
				stat(byW[w], "%.1f", func(r result) float64 { return float64(r.relayRSS) / 1e6 }))
		}
	}
	if len(latency) > 0 {
		b.WriteString("\nCommit to consumer, ms, measured per row, both read with read_committed: an at-least-once row is visible once produced, an exactly-once row once its Kafka transaction has committed.\n\n")
		b.WriteString("| workload | p50, at-least-once | p50, exactly-once | p99, at-least-once | p99, exactly-once | p999, at-least-once | p999, exactly-once | relay CPU µs/row, at-least-once | relay CPU µs/row, exactly-once | relay peak RSS MB, at-least-once | relay peak RSS MB, exactly-once |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, w := range latency {
			base := byW[w][0].base
			cq := func(rs []result, q float64) string {
				return stat(rs, "%.2f", func(r result) float64 {
					if r.consumed == nil {
						return -1
					}
					return r.consumed[q] * 1e3
				})
			}
			fmt.Fprintf(b, "| %s vs %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w, base,
				cq(byW[base], 0.5), cq(byW[w], 0.5), cq(byW[base], 0.99), cq(byW[w], 0.99), cq(byW[base], 0.999), cq(byW[w], 0.999),
				stat(byW[base], "%.2f", result.cpuPerRow),
				stat(byW[w], "%.2f", result.cpuPerRow),
				stat(byW[base], "%.1f", func(r result) float64 { return float64(r.relayRSS) / 1e6 }),
				stat(byW[w], "%.1f", func(r result) float64 { return float64(r.relayRSS) / 1e6 }))
		}
	}
	b.WriteString("\nThe exactly-once relay's Kafka transactions, from `outbox_relay_kafka_transactions_committed_total`, `..._aborted_total` and `outbox_relay_kafka_transaction_commit_duration_seconds` (CommitTxn: waiting for the transaction's acknowledgements, producing the fence, EndTxn; buckets double from 1 ms, interpolated as above), over the whole drain for a backlog and over the measured rows for W3. The relay's stream waits while a commit runs.\n\n")
	b.WriteString("| workload | transactions committed | per second | rows per transaction | commit p50 ms | commit p99 ms | aborted |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, w := range all {
		rs := byW[w]
		tq := func(q float64) string {
			return histStat(rs, q, func(r result) map[float64]bucketQuantile { return r.txns.commit })
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", w,
			stat(rs, "%.0f", func(r result) float64 { return r.txns.committed }),
			stat(rs, "%.1f", func(r result) float64 { return pos(r.txns.seconds, r.txns.committed/r.txns.seconds) }),
			stat(rs, "%.0f", func(r result) float64 { return pos(r.txns.committed, float64(r.txns.rows)/r.txns.committed) }),
			tq(0.5), tq(0.99),
			stat(rs, "%.0f", func(r result) float64 { return r.txns.aborted }))
	}
}

// exactlyOnceTargets checks issue 10's targets: W2-EO drains at least 0.8
// times as fast as W2 of the same runs, and W3-EO's p99 commit-to-consumer
// latency, at read_committed, is at most the transaction interval + 10 ms.
func (r report) exactlyOnceTargets(byW map[string][]result) []string {
	var out []string
	if len(byW["W2-EO"]) > 0 && len(byW["W2"]) > 0 {
		ps := pairs(byW, "W2-EO")
		var vs []float64
		for _, p := range ps {
			if v := p.drainRatio(); v >= 0 {
				vs = append(vs, v)
			}
		}
		if v := median(vs); v >= 0 {
			med := median(values(byW["W2-EO"], result.rowsPerSec)) / median(values(byW["W2"], result.rowsPerSec))
			out = append(out, fmt.Sprintf("W2-EO ≥ 0.8 × W2 rows/s, run by run (median): %s, %s (ratio of the medians: %.2f)",
				statPairs(ps, "%.2f", pair.drainRatio), verdict(v >= 0.8), med))
		}
	}
	if rs := byW["W3-EO"]; len(rs) > 0 {
		limit := r.eoLatencyLimit()
		p99 := func(rs []result) float64 {
			return median(values(rs, func(r result) float64 {
				if r.consumed == nil {
					return -1
				}
				return r.consumed[0.99]
			}))
		}
		if v := p99(rs); v >= 0 {
			line := fmt.Sprintf("W3-EO p99 commit to read_committed consumer ≤ transaction interval + 10 ms = %s ms: %s ms, %s", msNum(limit), msNum(v), verdict(v <= limit))
			if a := p99(byW["W3"]); a >= 0 {
				line += fmt.Sprintf("; W3 (at-least-once) %s ms", msNum(a))
			}
			out = append(out, line)
		} else {
			out = append(out, "W3-EO p99 commit to read_committed consumer: not measured (--w3-consume=false)")
		}
	}
	return out
}
