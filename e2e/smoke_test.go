package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestSmoke(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	p.waitStreaming(30 * time.Second)
	conn, err := pgx.Connect(t.Context(), e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := schema.Insert(t.Context(), conn, schema.Message{AggregateType: "order", AggregateID: "1", EventType: "created", Payload: []byte(`{"a":1}`), Headers: map[string]string{"h": "v"}}); err != nil {
		t.Fatal(err)
	}
	c := e.consumer()
	var n int
	for deadline := time.Now().Add(30 * time.Second); n < 1 && time.Now().Before(deadline); {
		recs, err := c.poll(t.Context(), time.Second)
		if err != nil {
			t.Log(err)
		}
		for _, r := range recs {
			t.Logf("record %s/%d key=%s value=%s headers=%v", r.Topic, r.Partition, r.Key, r.Value, r.Headers)
		}
		n += len(recs)
	}
	if n != 1 {
		t.Fatalf("consumed %d records, want 1\n%s", n, p.logText())
	}
	if code := p.term(30 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
	t.Log(p.logText())
}
