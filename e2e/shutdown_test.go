package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/schema"
)

// TestShutdownWithinTimeoutUnderLoad sends SIGTERM while rows pour in and
// the broker answers slowly: the whole stop (reading to the end of the open
// transaction, draining, the final confirmation) fits in --shutdown-timeout,
// and the slot holds the position the relay says it confirmed.
//
// It runs alone, not in parallel: it bounds the relay's stop to a margin
// of 2 s, which other tests' load could use up.
func TestShutdownWithinTimeoutUnderLoad(t *testing.T) {
	const timeout = 4 * time.Second
	e := newEnv(t)
	// Every produce request waits 3s: neither the open transaction nor the drain can finish in time.
	e.broker.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.broker.KeepControl()
		e.broker.SleepControl(func() { time.Sleep(3 * time.Second) })
		return nil, nil, false
	})
	p := e.startRun([]string{"--shutdown-timeout=" + timeout.String()})
	p.waitStreaming(30 * time.Second)

	// Writers: transactions of 5000 rows, until the test ends.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var written atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		conn, err := pgx.Connect(ctx, e.dsn)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		for n := 0; ctx.Err() == nil; n++ {
			msgs := make([]schema.Message, 5000)
			for i := range msgs {
				msgs[i] = schema.Message{AggregateType: "load", AggregateID: fmt.Sprint(i % 20), EventType: "e", Payload: []byte(`{"n":1}`)}
			}
			if schema.Insert(ctx, conn, msgs...) == nil {
				written.Add(int64(len(msgs)))
			}
		}
	}()
	time.Sleep(3 * time.Second)

	sent := time.Now()
	code := p.term(30 * time.Second)
	took := time.Since(sent)
	cancel()
	<-writerDone
	t.Logf("--shutdown-timeout=%s: exited %s after SIGTERM with code %d; %d rows written", timeout, took.Round(time.Millisecond), code, written.Load())
	if took > timeout+2*time.Second {
		t.Errorf("relay took %s to stop after SIGTERM, want at most the shutdown timeout %s plus 2s\n%s", took.Round(time.Millisecond), timeout, p.logText())
	}

	var final pglogrepl.LSN
	for _, line := range strings.Split(p.logText(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
			LSN string `json:"lsn"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "final position confirmed" {
			lsn, err := pglogrepl.ParseLSN(rec.LSN)
			if err != nil {
				t.Fatalf("final position %q: %v", rec.LSN, err)
			}
			final = lsn
		}
	}
	if final == 0 {
		t.Fatalf("relay did not log its final position\n%s", p.logText())
	}
	st := e.slotState(t)
	if st.confirmed != final {
		t.Errorf("slot confirmed %s after the stop, want the logged final position %s", st.confirmed, final)
	}
}
