package inbox

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRebalance streams events while a second consumer joins the group and
// later leaves it: every event's effect is applied exactly once.
func TestRebalance(t *testing.T) {
	const partitions, total = 4, 600
	c := newBroker(t, partitions)
	db := newDB(t)
	producer := newClient(t, c)
	cfg := testConfig(c, db, "rebalance")
	cfg.OrderBy = OrderByKey
	first := start(t, cfg, balanceHandler, nil)

	var want int64
	produceSome := func(from, to int) {
		for i := from; i < to; i++ {
			cents := i + 1
			want += int64(cents)
			rec := event("acct-"+strconv.Itoa(i%13), cents, int32(i%partitions))
			producer.Produce(t.Context(), rec, func(_ *kgo.Record, err error) {
				if err != nil {
					t.Errorf("produce: %v", err)
				}
			})
			time.Sleep(2 * time.Millisecond)
		}
		if err := producer.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	produceSome(0, total/3)
	second := start(t, cfg, balanceHandler, nil)
	produceSome(total/3, 2*total/3)
	waitFor(t, "the second consumer to apply events", func() bool {
		return testutil.ToFloat64(second.c.metrics.processed) > 0
	})
	if err := second.stop(); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	produceSome(2*total/3, total)

	waitFor(t, "every effect", func() bool {
		return queryInt(t, db, `SELECT count(DISTINCT event_id) FROM effects`) == total
	})
	waitFor(t, "all offsets committed", func() bool {
		var sum int64
		for _, o := range committed(t, producer, "rebalance", partitions) {
			sum += o
		}
		return sum == total
	})
	if got := queryInt(t, db, `SELECT count(*) FROM effects`); got != total {
		t.Errorf("%d effects, want %d: some event applied twice", got, total)
	}
	if got := queryInt(t, db, `SELECT sum(cents) FROM balances`); got != want {
		t.Errorf("sum of balances = %d, want %d", got, want)
	}
	if got := queryInt(t, db, `SELECT count(*) FROM outbox_inbox WHERE consumer = 'rebalance'`); got != total {
		t.Errorf("%d inbox rows, want %d", got, total)
	}
	p1, p2 := testutil.ToFloat64(first.c.metrics.processed), testutil.ToFloat64(second.c.metrics.processed)
	d := testutil.ToFloat64(first.c.metrics.duplicates) + testutil.ToFloat64(second.c.metrics.duplicates)
	t.Logf("first consumer applied %v, second %v; %v duplicates skipped", p1, p2, d)
	if p1+p2 != total {
		t.Errorf("consumers applied %v events, want %d", p1+p2, total)
	}
}
