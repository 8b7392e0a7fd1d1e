package main

import (
	"fmt"
	"math"
	"strings"
)

// The relay's per-stage latency: the series of metricStage, one per stage,
// with the bucket bounds of its end-to-end histogram. A relay that does not
// export them gets n/a in the report.

// stages are the values of metricStage's label stage, in the order a row
// passes them; stagesText says what each times.
var stages = []string{"send", "receive", "publish", "acknowledge"}

// stagesText describes stages for the report.
const stagesText = "**send** is the transaction's commit to the server sending the row on the replication stream, both by the server's clock: the WAL flush, the walsender waking up and decoding, and a walsender held up by a relay that reads nothing; **receive** is that send to the relay reading the row; **publish** is that read to handing the row to the sink; **acknowledge** is the hand-over to the broker's acknowledgement."

// stageLatency is the quantiles of each stage, by stage then quantile. A
// stage the relay does not export is missing; nil means none is exported.
type stageLatency map[string]map[float64]bucketQuantile

// readStages returns the quantiles qs of each stage from the change of
// metricStage between two scrapes; a zero before means since the start.
func readStages(before, after scrape, qs []float64) stageLatency {
	var sl stageLatency
	for _, st := range stages {
		h := after.histogramWhere(metricStage, "stage", st)
		if len(h.bounds) == 0 {
			continue
		}
		h = h.minus(before.histogramWhere(metricStage, "stage", st))
		got := map[float64]bucketQuantile{}
		for _, q := range qs {
			if v, ok := h.quantile(q); ok {
				got[q] = v
			}
		}
		if sl == nil {
			sl = stageLatency{}
		}
		sl[st] = got
	}
	return sl
}

// stageCell is the median over rs of each of qs of stage st in ms, joined
// by " / ": "0.12 / 0.9 / 3.1"; n/a for a quantile no run has.
func stageCell(rs []result, st string, qs []float64) string {
	var parts []string
	for _, q := range qs {
		m := medianBucket(rs, q, func(r result) map[float64]bucketQuantile { return r.stages[st] })
		if math.IsNaN(m.value) {
			parts = append(parts, "n/a")
			continue
		}
		parts = append(parts, msNum(m.value))
	}
	return strings.Join(parts, " / ")
}

// backlogStagesText writes the table of the backlog workloads' stage
// latency: p50 and p99 of each stage, over the whole drain.
func backlogStagesText(b *strings.Builder, byW map[string][]result, backlog []string) {
	b.WriteString("\nPer-stage latency of the drain, ms, from the relay's `" + metricStage + "` histogram (interpolated inside buckets, the bucket shown as (lower, upper]; n/a if the relay does not export it): " + stagesText + " For a backlog, send includes the time the row waited for the relay to start.\n\n")
	b.WriteString("| workload |")
	for _, st := range stages {
		fmt.Fprintf(b, " %s p50 ms | %s p99 ms |", st, st)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", 2*len(stages)) + "\n")
	for _, w := range backlog {
		rs := byW[w]
		fmt.Fprintf(b, "| %s |", w)
		for _, st := range stages {
			for _, q := range []float64{0.5, 0.99} {
				fmt.Fprintf(b, " %s |", histStat(rs, q, func(r result) map[float64]bucketQuantile { return r.stages[st] }))
			}
		}
		b.WriteString("\n")
	}
}
