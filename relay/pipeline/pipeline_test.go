package pipeline_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/relay/pipeline"
	"github.com/outbox-relay/outbox-relay/schema"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// sink acknowledges every event at once and hands it to got.
type sink struct{ got chan string }

func (s sink) Publish(_ context.Context, ev *schema.Event, done func(error)) {
	s.got <- ev.ID
	done(nil)
}

func (sink) Flush(context.Context) error { return nil }

func newPipeline(t *testing.T) (*pipeline.Pipeline, *pgx.Conn, sink) {
	t.Helper()
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "pipeline_test", ShutdownTimeout: 5 * time.Second}
	conn, err := pgx.Connect(t.Context(), cfg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := cdc.Setup(t.Context(), conn, cfg, nil); err != nil {
		t.Fatal(err)
	}
	s := sink{got: make(chan string, 10)}
	p, err := pipeline.New(pipeline.Config{CDC: cfg}, s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p, conn, s
}

// TestRunRelaysUntilCancelled relays a committed row, and returns nil once
// its context ends, after every actor returned.
func TestRunRelaysUntilCancelled(t *testing.T) {
	p, conn, s := newPipeline(t)
	ctx, cancel := context.WithCancel(t.Context())
	actorDone := false
	result := make(chan error, 1)
	go func() {
		result <- p.Run(ctx, func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(10 * time.Millisecond)
			actorDone = true
			return nil
		})
	}()
	const id = "5f0b4e0e-4c4e-4f62-9a43-2d4fd9a6e8a1"
	if err := schema.Insert(t.Context(), conn, schema.Message{ID: id, AggregateType: "a", AggregateID: "1", EventType: "x", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-s.got:
		if got != id {
			t.Errorf("relayed %q, want %q", got, id)
		}
	case err := <-result:
		t.Fatalf("Run() = %v before relaying", err)
	case <-time.After(30 * time.Second):
		t.Fatal("nothing relayed after 30s")
	}
	cancel()
	if err := <-result; err != nil {
		t.Errorf("Run() = %v after cancel, want nil", err)
	}
	if !actorDone {
		t.Error("Run returned before its actor did")
	}
}

// TestRunStopsOnActorError stops the stream when an actor fails and
// returns the actor's error.
func TestRunStopsOnActorError(t *testing.T) {
	p, _, _ := newPipeline(t)
	boom := errors.New("boom")
	err := p.Run(t.Context(), func(context.Context) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("Run() = %v, want the actor's error", err)
	}
}
