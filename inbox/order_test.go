package inbox

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestOrderByKey blocks the first record of key A: the records of key B on
// the same partition flow past it, A's records stay in order, and the
// committed offset does not pass A's first record until it finishes.
func TestOrderByKey(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	var recs []*kgo.Record
	for i := range 4 {
		recs = append(recs, event("A", i+1, 0), event("B", i+1, 0))
	}
	produce(t, c, recs...) // offsets: A1 B1 A2 B2 A3 B3 A4 B4
	cfg := testConfig(c, db, "by-key")
	cfg.OrderBy = OrderByKey
	cfg.MaxAttempts = 100
	release := make(chan struct{})
	var mu sync.Mutex
	order := map[string][]string{}
	h := func(ctx context.Context, tx pgx.Tx, ev Event) error {
		if string(ev.Key) == "A" && string(ev.Value) == "1" {
			select {
			case <-release:
			default:
				return errors.New("A1 not yet")
			}
		}
		if err := balanceHandler(ctx, tx, ev); err != nil {
			return err
		}
		mu.Lock()
		order[string(ev.Key)] = append(order[string(ev.Key)], string(ev.Value))
		mu.Unlock()
		return nil
	}
	r := start(t, cfg, h, nil)
	admin := newClient(t, c)
	waitFor(t, "B's four records applied", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order["B"]) == 4
	})
	mu.Lock()
	if len(order["A"]) != 0 {
		t.Errorf("A's records %v applied while A1 failed", order["A"])
	}
	mu.Unlock()
	time.Sleep(3 * cfg.CommitInterval)
	if got := committed(t, admin, "by-key", 1)[0]; got > 0 {
		t.Errorf("committed offset %d passes A1 (offset 0), still failing", got)
	}
	close(release)
	waitFor(t, "all 8 applied", func() bool { return testutil.ToFloat64(r.c.metrics.processed) == 8 })
	waitFor(t, "offset 8 committed", func() bool { return committed(t, admin, "by-key", 1)[0] == 8 })
	mu.Lock()
	defer mu.Unlock()
	for _, k := range []string{"A", "B"} {
		if want := []string{"1", "2", "3", "4"}; !slices.Equal(order[k], want) {
			t.Errorf("key %s applied in order %v, want %v", k, order[k], want)
		}
	}
}

// TestOrderByPartition: the same stream, by partition: nothing passes the
// failing record.
func TestOrderByPartition(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	produce(t, c, event("A", 1, 0), event("B", 1, 0), event("B", 2, 0))
	cfg := testConfig(c, db, "by-partition")
	cfg.MaxAttempts = 1000
	release := make(chan struct{})
	var mu sync.Mutex
	var order []string
	h := func(ctx context.Context, tx pgx.Tx, ev Event) error {
		if string(ev.Key) == "A" {
			select {
			case <-release:
			default:
				return errors.New("A not yet")
			}
		}
		mu.Lock()
		order = append(order, string(ev.Key)+string(ev.Value))
		mu.Unlock()
		return balanceHandler(ctx, tx, ev)
	}
	r := start(t, cfg, h, nil)
	waitFor(t, "a few retries", func() bool { return testutil.ToFloat64(r.c.metrics.retries) >= 3 })
	mu.Lock()
	if len(order) != 0 {
		t.Errorf("records %v applied while the partition's first record failed", order)
	}
	mu.Unlock()
	close(release)
	waitFor(t, "all 3 applied", func() bool { return testutil.ToFloat64(r.c.metrics.processed) == 3 })
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"A1", "B1", "B2"}; !slices.Equal(order, want) {
		t.Errorf("applied in order %v, want %v", order, want)
	}
}
