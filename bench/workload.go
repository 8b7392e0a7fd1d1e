package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// workload is one of W1 to W4, in at-least-once mode, or one of them
// with the suffix -EO (W2-EO), the same rows through a relay started with
// OUTBOX_RELAY_DELIVERY=exactly-once.
type workload struct {
	name       string
	base       string // the at-least-once workload: W2 for W2 and W2-EO
	what       string // for the report
	rows       int64  // backlog rows, or W3's rows at rate × duration
	perTxn     int64  // rows per transaction
	payload    int    // approximate payload bytes
	aggregates int
	latency    bool // W3: steady load with the relay running
	rate       float64
	duration   time.Duration
	hasCeiling bool
	// exactlyOnce runs the relay with --delivery=exactly-once; W3's
	// consumer then reads with read_committed, the only isolation at which
	// the guarantee holds and rows become visible at the Kafka commit.
	exactlyOnce bool
	// sink is the relay's --sink for a run of W1 or W2 through another
	// broker than Kafka: sinkNATS, sinkRabbitMQ or sinkRedis; empty for
	// Kafka, which every workload runs through.
	sink string
}

// perSink reports whether w runs through the other sinks too: W1 and W2,
// at least once.
func (w workload) perSink() bool {
	return !w.exactlyOnce && (w.base == "W1" || w.base == "W2")
}

// onSink returns w run through sink, sinkNATS, sinkRabbitMQ or sinkRedis.
func (w workload) onSink(sink string) workload {
	w.sink = sink
	w.what += "; through " + sinkTitle(sink)
	return w
}

// sinkName is the relay's --sink for w.
func (w workload) sinkName() string {
	if w.sink == "" {
		return sinkKafka
	}
	return w.sink
}

// title names w in logs and tables: W2, or W2 (nats) through NATS.
func (w workload) title() string {
	if w.sink == "" {
		return w.name
	}
	return w.name + " (" + w.sink + ")"
}

// eoSuffix makes a workload name the exactly-once variant: W2-EO.
const eoSuffix = "-EO"

// lookupWorkload returns the workload named name (upper case): W1 to W4,
// or one of them with eoSuffix.
func lookupWorkload(name string) (workload, bool) {
	base, eo := strings.CutSuffix(name, eoSuffix)
	w, ok := workloadByName[base]
	if !ok {
		return w, false
	}
	w.base = base
	if eo {
		w.name, w.exactlyOnce = name, true
		w.what += "; exactly-once delivery"
	}
	return w, true
}

// delivery is the relay's --delivery for w.
func (w workload) delivery() string {
	if w.exactlyOnce {
		return "exactly-once"
	}
	return "at-least-once"
}

// ident is w's name as a lower-case identifier: w2_eo, and w2_nats for W2
// through NATS.
func (w workload) ident() string {
	id := strings.ToLower(strings.ReplaceAll(w.name, "-", "_"))
	if w.sink != "" {
		id += "_" + w.sink
	}
	return id
}

var workloadByName = map[string]workload{
	"W1": {name: "W1", what: "200,000 transactions of 1 row, ~200 B payload, 1,000 aggregates",
		rows: 200_000, perTxn: 1, payload: 200, aggregates: 1000, hasCeiling: true},
	"W2": {name: "W2", what: "2,000,000 rows in transactions of 100 rows, ~200 B payload",
		rows: 2_000_000, perTxn: 100, payload: 200, aggregates: 1000, hasCeiling: true},
	"W3": {name: "W3", what: "steady 5,000 single-row transactions/s for 60 s, relay running",
		perTxn: 1, payload: 200, aggregates: 1000, latency: true},
	"W4": {name: "W4", what: "100,000 rows of ~8 KB incompressible payload (TOASTed), 10 per transaction",
		rows: 100_000, perTxn: 10, payload: 8192, aggregates: 1000, hasCeiling: true},
}

// scaled applies --scale and the W3 flags; a run through another sink than
// Kafka takes --sink-scale instead when it is smaller.
func (w workload) scaled(o options) workload {
	if w.latency {
		w.rate = o.w3Rate
		w.duration = max(5*time.Second, time.Duration(float64(o.w3Duration)*o.scale))
		w.rows = int64(w.rate * w.duration.Seconds())
		w.what = fmt.Sprintf("steady %g single-row transactions/s for %s, relay running", w.rate, w.duration)
		if w.exactlyOnce {
			w.what += "; exactly-once delivery"
		}
		return w
	}
	scale := o.scale
	if w.sink != "" {
		scale = min(scale, o.sinkScale)
	}
	w.rows = max(w.perTxn, int64(math.Round(float64(w.rows)*scale)))
	return w
}

// loadProcedure inserts rows first to last, committing every per_txn rows.
// Payloads are {"n": row, "pad": text}, the pad pad_len characters of
// base64 of random bytes (64 of them, drawn round-robin), which pglz does
// not compress: a pad over ~2 KB is stored out of line, TOASTed.
const loadProcedure = `
CREATE OR REPLACE PROCEDURE bench_load(first bigint, last bigint, per_txn bigint, pad_len int, aggregates int, agg_type text)
LANGUAGE plpgsql AS $$
DECLARE
	pads text[];
	i bigint := first;
BEGIN
	SELECT array_agg(substr(translate(encode(decode(h, 'hex'), 'base64'), E'\n', ''), 1, pad_len))
	INTO pads
	FROM (SELECT p, string_agg(md5(random()::text || k::text), '') AS h
	      FROM generate_series(1, 64) p, generate_series(1, pad_len / 16 + 1) k
	      GROUP BY p) s;
	WHILE i <= last LOOP
		INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
		SELECT gen_random_uuid(), agg_type, 'agg-' || (g % aggregates), 'created',
		       jsonb_build_object('n', g, 'pad', pads[1 + g % 64])
		FROM generate_series(i, least(i + per_txn - 1, last)) g;
		COMMIT;
		i := i + per_txn;
	END LOOP;
END $$`

// padLen is the pad that makes a payload of about w.payload bytes:
// {"n": 1234567, "pad": ""} takes about 26.
func (w workload) padLen() int { return max(1, w.payload-26) }

// loadBacklog inserts w's rows, of aggregate type aggType (letters, digits
// and _ only), through clients connections in parallel and returns how long
// it took.
func loadBacklog(ctx context.Context, srv *server, database string, w workload, clients int, aggType string) (time.Duration, error) {
	conn, err := srv.connect(ctx, database)
	if err != nil {
		return 0, err
	}
	_, err = conn.Exec(ctx, loadProcedure)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return 0, fmt.Errorf("create procedure bench_load: %w", err)
	}
	// Slices of whole transactions.
	txns := (w.rows + w.perTxn - 1) / w.perTxn
	per := (txns + int64(clients) - 1) / int64(clients)
	began := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for c := int64(0); c < int64(clients); c++ {
		first := c*per*w.perTxn + 1
		last := min(w.rows, (c+1)*per*w.perTxn)
		if first > last {
			break
		}
		g.Go(func() error {
			conn, err := srv.connect(gctx, database)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(gctx))
			// No parameters: pgx sends it with the simple protocol, in
			// which a procedure may commit.
			call := fmt.Sprintf("CALL bench_load(%d, %d, %d, %d, %d, '%s')", first, last, w.perTxn, w.padLen(), w.aggregates, aggType)
			if _, err := conn.Exec(gctx, call); err != nil {
				return fmt.Errorf("%s: %w", call, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return time.Since(began), nil
}

// steadyWriter commits single-row transactions at a fixed rate through
// several connections, recording when each commit returned.
type steadyWriter struct {
	w         workload
	aggType   string
	committed []atomic.Int64 // unix nanoseconds the commit of row n returned; 0 if not (yet)
	pad       [64]string
}

// newSteadyWriter returns a writer of up to rows rows of w's shape.
func newSteadyWriter(w workload, rows int64, aggType string) *steadyWriter {
	s := &steadyWriter{w: w, aggType: aggType, committed: make([]atomic.Int64, rows)}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := range s.pad {
		b := make([]byte, w.padLen())
		for j := range b {
			b[j] = alphabet[rand.IntN(len(alphabet))]
		}
		s.pad[i] = string(b)
	}
	return s
}

// run writes rows from to to-1, row n due at start + (n-from)/rate, and
// returns the rate achieved. Late rows are written as soon as a connection
// is free.
func (s *steadyWriter) run(ctx context.Context, srv *server, database string, writers int, from, to int64) (float64, error) {
	due := make(chan int64, 4096)
	g, gctx := errgroup.WithContext(ctx)
	for range writers {
		conn, err := srv.connect(ctx, database)
		if err != nil {
			return 0, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		g.Go(func() error { return s.write(gctx, conn, due) })
	}
	began := time.Now()
	g.Go(func() error {
		defer close(due)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		next := from
		for next < to {
			upTo := min(to, from+int64(time.Since(began).Seconds()*s.w.rate)+1)
			for ; next < upTo; next++ {
				select {
				case due <- next:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			select {
			case <-t.C:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return float64(to-from) / time.Since(began).Seconds(), nil
}

func (s *steadyWriter) write(ctx context.Context, conn *pgx.Conn, due <-chan int64) error {
	const insert = `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
		VALUES (gen_random_uuid(), $1, $2, 'created', $3)`
	for n := range due {
		agg := "agg-" + strconv.FormatInt(n%int64(s.w.aggregates), 10)
		payload := `{"n": ` + strconv.FormatInt(n, 10) + `, "pad": "` + s.pad[n%int64(len(s.pad))] + `"}`
		if _, err := conn.Exec(ctx, insert, s.aggType, agg, payload); err != nil {
			return fmt.Errorf("insert row %d: %w", n, err)
		}
		s.committed[n].Store(time.Now().UnixNano())
	}
	return nil
}

// lagSampler reads the slot's lag in bytes every interval.
type lagSampler struct {
	mu      sync.Mutex
	samples []float64
}

func (l *lagSampler) run(ctx context.Context, srv *server, database string, every time.Duration) error {
	conn, err := srv.connect(ctx, database)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st, err := readSlot(ctx, conn, slotName, "0/0")
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		l.mu.Lock()
		l.samples = append(l.samples, float64(st.lagBytes))
		l.mu.Unlock()
	}
}

func (l *lagSampler) values() []float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]float64(nil), l.samples...)
}
