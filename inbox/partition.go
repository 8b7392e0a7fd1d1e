package inbox

import (
	"context"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// topicPartition names one partition.
type topicPartition struct {
	topic     string
	partition int32
}

// slot is one dispatched record and whether it is finished: applied,
// skipped as a duplicate, or dead-lettered.
type slot struct {
	rec  *kgo.Record
	done bool
}

// lane is the queue of one ordering key of a partition: under
// OrderByPartition the partition has one lane, under OrderByKey one per key
// with records not yet finished. One goroutine works a lane, head first.
type lane struct {
	queue []*slot
}

// partition holds the records of one owned partition from dispatch until
// they finish, and the offset up to which they have all finished.
//
// Invariant: next, the offset to commit, is the offset of the lowest
// unfinished dispatched record, or one past the last dispatched record when
// all have finished; so committing next never passes an unfinished record.
type partition struct {
	c  *Consumer
	cl *kgo.Client
	tp topicPartition

	stop     chan struct{} // closed by halt: start no record, no attempt, no wait
	haltOnce sync.Once
	hctx     context.Context // handler calls and their transactions
	abandon  context.CancelFunc
	lanes    sync.WaitGroup
	permits  chan struct{} // handler calls running at once
	fail     func(error)   // reports a fatal error to Run

	mu         sync.Mutex
	byKey      map[string]*lane
	pending    []*slot // dispatched and unfinished, and finished ones after the first unfinished
	dispatched int64   // one past the last dispatched offset; -1 before the first
	next       int64   // offset to commit; -1 before the first dispatch
	epoch      int32   // leader epoch of the record before next
	committed  int64   // offset last committed; -1 none
	hwm        int64   // high watermark from the last fetch
	paused     bool
}

// newPartition returns the state of tp; handler calls use contexts derived
// from base, without its cancellation.
func newPartition(c *Consumer, cl *kgo.Client, tp topicPartition, base context.Context, fail func(error)) *partition {
	hctx, abandon := context.WithCancel(context.WithoutCancel(base))
	n := 1
	if c.cfg.OrderBy == OrderByKey {
		n = c.cfg.KeyConcurrency
	}
	return &partition{
		c: c, cl: cl, tp: tp,
		stop: make(chan struct{}), hctx: hctx, abandon: abandon,
		permits: make(chan struct{}, n), fail: fail,
		byKey: make(map[string]*lane), dispatched: -1, next: -1, epoch: -1, committed: -1,
	}
}

// dispatch queues recs, fetched in offset order, with the partition's high
// watermark, and starts a goroutine for each lane that had none. It never
// blocks on handlers: beyond Config.MaxBuffered unfinished records it pauses
// fetching the partition instead. Called by Run's poll loop only.
func (p *partition) dispatch(recs []*kgo.Record, hwm int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hwm = hwm
	for _, rec := range recs {
		if rec.Offset < p.dispatched {
			continue // already queued; the client re-fetched it
		}
		if p.next < 0 {
			p.next = rec.Offset
		}
		p.dispatched = rec.Offset + 1
		s := &slot{rec: rec}
		p.pending = append(p.pending, s)
		key := ""
		if p.c.cfg.OrderBy == OrderByKey {
			key = string(rec.Key)
		}
		if l := p.byKey[key]; l != nil {
			l.queue = append(l.queue, s)
			continue
		}
		l := &lane{queue: []*slot{s}}
		p.byKey[key] = l
		p.lanes.Go(func() { p.work(key, l) })
	}
	if !p.paused && len(p.pending) >= p.c.cfg.MaxBuffered {
		p.paused = true
		p.cl.PauseFetchPartitions(map[string][]int32{p.tp.topic: {p.tp.partition}})
	}
	p.setLagLocked()
}

// work finishes the records of lane l, head first, until it is empty or the
// partition halts.
func (p *partition) work(key string, l *lane) {
	for {
		p.mu.Lock()
		if len(l.queue) == 0 {
			delete(p.byKey, key)
			p.mu.Unlock()
			return
		}
		s := l.queue[0]
		p.mu.Unlock()

		select {
		case p.permits <- struct{}{}:
		case <-p.stop:
			return
		}
		finished, err := p.c.handle(p, s.rec)
		<-p.permits
		if err != nil {
			p.fail(err)
			return
		}
		if !finished {
			return // halted or abandoned: the record's next reader applies it
		}
		p.mu.Lock()
		l.queue = l.queue[1:]
		s.done = true
		p.advanceLocked()
		p.mu.Unlock()
	}
}

// advanceLocked moves next past the finished records at the head of
// pending, and resumes a paused partition whose backlog has halved.
func (p *partition) advanceLocked() {
	i := 0
	for ; i < len(p.pending) && p.pending[i].done; i++ {
		p.next = p.pending[i].rec.Offset + 1
		p.epoch = p.pending[i].rec.LeaderEpoch
	}
	clear(p.pending[:i])
	p.pending = p.pending[i:]
	if p.paused && len(p.pending) <= p.c.cfg.MaxBuffered/2 {
		p.paused = false
		p.cl.ResumeFetchPartitions(map[string][]int32{p.tp.topic: {p.tp.partition}})
	}
	p.setLagLocked()
}

// setLagLocked publishes the high watermark minus next.
func (p *partition) setLagLocked() {
	if p.next < 0 {
		return
	}
	p.c.metrics.lag.WithLabelValues(p.c.metrics.name, p.tp.topic, strconv.Itoa(int(p.tp.partition))).Set(float64(max(p.hwm-p.next, 0)))
}

// toCommit returns the offset to commit and whether it is past the one last
// committed.
func (p *partition) toCommit() (kgo.EpochOffset, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return kgo.EpochOffset{Epoch: p.epoch, Offset: p.next}, p.next > p.committed
}

// setCommitted records that o was committed.
func (p *partition) setCommitted(o int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.committed = max(p.committed, o)
}

// halt makes the partition start no record, attempt or backoff wait.
// Running handler calls go on until they end or abandon is called.
func (p *partition) halt() {
	p.haltOnce.Do(func() { close(p.stop) })
}

// halted reports whether halt was called.
func (p *partition) halted() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// wait halts the partition and waits for its lanes to return; after grace
// it cancels the running handler calls and waits for them to return.
func (p *partition) wait(grace <-chan struct{}) {
	p.halt()
	done := make(chan struct{})
	go func() { p.lanes.Wait(); close(done) }()
	select {
	case <-done:
	case <-grace:
		p.abandon()
		<-done
	}
	p.abandon()
}

// forget removes the partition's lag gauge and resumes it if paused, so a
// later assignment of it starts fetching.
func (p *partition) forget() {
	p.c.metrics.lag.DeleteLabelValues(p.c.metrics.name, p.tp.topic, strconv.Itoa(int(p.tp.partition)))
	p.mu.Lock()
	paused := p.paused
	p.paused = false
	p.mu.Unlock()
	if paused {
		p.cl.ResumeFetchPartitions(map[string][]int32{p.tp.topic: {p.tp.partition}})
	}
}
