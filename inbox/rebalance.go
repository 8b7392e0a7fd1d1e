package inbox

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitTimeout bounds one synchronous offset commit.
const commitTimeout = 10 * time.Second

// session is the state of one Run: the client and the owned partitions.
type session struct {
	c    *Consumer
	cl   *kgo.Client
	base context.Context // Run's ctx, for handler contexts
	fail func(error)

	mu    sync.Mutex
	parts map[topicPartition]*partition

	commitMu sync.Mutex // one commit at a time, and none of a partition being taken away
}

// partition returns the state of tp, made on its first records. Called by
// the poll loop only, which BlockRebalanceOnPoll keeps apart from the
// rebalance callbacks.
func (s *session) partition(tp topicPartition) *partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.parts[tp]
	if p == nil {
		p = newPartition(s.c, s.cl, tp, s.base, s.fail)
		s.parts[tp] = p
	}
	return p
}

// take removes the partitions named in tps, or all when tps is nil, and
// returns them.
func (s *session) take(tps map[string][]int32) []*partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*partition
	for tp, p := range s.parts {
		if tps == nil || containsPartition(tps[tp.topic], tp.partition) {
			out = append(out, p)
			delete(s.parts, tp)
		}
	}
	return out
}

func containsPartition(ps []int32, p int32) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// revoked is the OnPartitionsRevoked callback: it stops the revoked
// partitions (running handlers get Config.ShutdownTimeout), then commits
// what they finished, synchronously, before the group moves them.
func (s *session) revoked(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	if len(tps) == 0 {
		return // franz-go may call with none (nil): take(nil) would take all
	}
	parts := s.take(tps)
	if len(parts) == 0 {
		return
	}
	s.c.logger.Info("partitions revoked; stopping them", "partitions", tps)
	s.stop(parts, s.c.cfg.ShutdownTimeout)
	s.commitLocked(parts)
}

// lost is the OnPartitionsLost callback: the member was fenced, so the
// partitions' handler calls are canceled at once and nothing is committed;
// the next owner reads them again.
func (s *session) lost(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	if len(tps) == 0 {
		return // as in revoked
	}
	parts := s.take(tps)
	if len(parts) == 0 {
		return
	}
	s.c.logger.Warn("partitions lost; abandoning their records", "partitions", tps)
	s.stop(parts, 0)
}

// stop halts parts at once, gives their running handler calls grace to
// finish, and waits until every goroutine of theirs has returned.
func (s *session) stop(parts []*partition, grace time.Duration) {
	for _, p := range parts {
		p.halt()
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, p := range parts {
		p.wait(ctx.Done())
		p.forget()
	}
}

// commit commits the finished offsets of every owned partition.
func (s *session) commit() {
	s.mu.Lock()
	parts := make([]*partition, 0, len(s.parts))
	for _, p := range s.parts {
		parts = append(parts, p)
	}
	s.mu.Unlock()
	s.commitLocked(parts)
}

// commitLocked commits the finished offsets of parts, synchronously, and
// logs a failure: the offsets stay uncommitted, so the records are read
// again and skipped by the inbox.
func (s *session) commitLocked(parts []*partition) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	offsets := make(map[string]map[int32]kgo.EpochOffset)
	byTP := make(map[topicPartition]*partition)
	for _, p := range parts {
		o, ok := p.toCommit()
		if !ok {
			continue
		}
		if offsets[p.tp.topic] == nil {
			offsets[p.tp.topic] = make(map[int32]kgo.EpochOffset)
		}
		offsets[p.tp.topic][p.tp.partition] = o
		byTP[p.tp] = p
	}
	if len(offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.base), commitTimeout)
	defer cancel()
	var failed error
	s.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			failed = err
			return
		}
		for _, t := range resp.Topics {
			for _, pr := range t.Partitions {
				tp := topicPartition{t.Topic, pr.Partition}
				if err := kerr.ErrorForCode(pr.ErrorCode); err != nil {
					failed = fmt.Errorf("partition %s/%d: %w", t.Topic, pr.Partition, err)
					continue
				}
				if p := byTP[tp]; p != nil {
					p.setCommitted(offsets[t.Topic][pr.Partition].Offset)
				}
			}
		}
	})
	if failed != nil {
		s.c.logger.Warn("commit offsets failed; the records will be read again and skipped as duplicates", "err", failed)
		return
	}
	s.c.logger.Debug("offsets committed", "offsets", offsets)
}
