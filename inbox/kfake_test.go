package inbox

// TestKfakeGroups checks what the consumer relies on in kfake, the broker
// of these tests: a consumer group assigns partitions, offsets committed
// with CommitOffsetsSync are fetched back, a new member of the group
// resumes from them, and a second member gets a share of the partitions.

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestKfakeGroups(t *testing.T) {
	c := newBroker(t, 2)
	for i := range 10 {
		produce(t, c, event("k", i, int32(i%2)))
	}
	group := "kfake-check"
	member := func(opts ...kgo.Opt) *kgo.Client {
		return newClient(t, c, append([]kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(testTopic),
			kgo.DisableAutoCommit(), kgo.HeartbeatInterval(100 * time.Millisecond),
			kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)...)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	a := member()
	var got []*kgo.Record
	for len(got) < 10 {
		fs := a.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("first member read %d records, want 10", len(got))
		}
		got = append(got, fs.Records()...)
	}
	// Commit offset 3 of each partition: a resuming member must start there.
	var commitErr error
	a.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{
		testTopic: {0: {Epoch: -1, Offset: 3}, 1: {Epoch: -1, Offset: 3}},
	}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if commitErr = err; err != nil {
			return
		}
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					commitErr = err
				}
			}
		}
	})
	if commitErr != nil {
		t.Fatalf("CommitOffsetsSync: %v", commitErr)
	}
	if got := committed(t, a, group, 2); !slices.Equal(got, []int64{3, 3}) {
		t.Fatalf("committed offsets = %v, want [3 3]", got)
	}
	a.Close()

	// A resuming member starts at the committed offsets; when a second
	// member joins, each owns one partition, and the first gives one up
	// through OnPartitionsRevoked.
	owned := []*ownership{{}, {}}
	b := member(owned[0].opts()...)
	var again []*kgo.Record
	for len(again) < 4 {
		fs := b.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("resuming member read %d records, want 4", len(again))
		}
		again = append(again, fs.Records()...)
	}
	for _, r := range again {
		if r.Offset < 3 {
			t.Errorf("resuming member read %s/%d@%d, below the committed offset 3", r.Topic, r.Partition, r.Offset)
		}
	}

	c2 := member(owned[1].opts()...)
	pollCtx, stopPolling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, cl := range []*kgo.Client{b, c2} {
		wg.Go(func() {
			for pollCtx.Err() == nil {
				cl.PollFetches(pollCtx)
			}
		})
	}
	deadline := time.Now().Add(15 * time.Second)
	for owned[0].count() != 1 || owned[1].count() != 1 || owned[0].revokedCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after a second member joined, they own %d and %d partitions (first revoked %d), want 1 and 1 (first revoked 1)",
				owned[0].count(), owned[1].count(), owned[0].revokedCount())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopPolling()
	wg.Wait()
}

// ownership tracks the partitions of testTopic a group member owns.
type ownership struct {
	mu      sync.Mutex
	parts   map[int32]bool
	revoked int
}

func (o *ownership) opts() []kgo.Opt {
	return []kgo.Opt{
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			o.mu.Lock()
			defer o.mu.Unlock()
			if o.parts == nil {
				o.parts = make(map[int32]bool)
			}
			for _, p := range m[testTopic] {
				o.parts[p] = true
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			o.mu.Lock()
			defer o.mu.Unlock()
			for _, p := range m[testTopic] {
				delete(o.parts, p)
				o.revoked++
			}
		}),
	}
}

func (o *ownership) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.parts)
}

func (o *ownership) revokedCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.revoked
}
