package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// Exactly-once: a Kafka transaction that did not commit for certain (the
// broker went away while the relay ended it, or it was aborted) leaves the
// Kafka sink unusable. The way on is the one a restarted process takes: a
// new sink, a new stream from the slot's confirmed position, and the last
// committed fence telling which PostgreSQL transactions Kafka already has.
// The daemon does that in-process, after a backoff and once the brokers
// answer again, instead of exiting and counting on a supervisor.

// maxTxnRestarts is how many restarts in a row may end the same way without
// committing a Kafka transaction before the relay gives up and exits: a
// transaction that fails every time (a broker that refuses the relay's
// records for good) is not retried forever.
const maxTxnRestarts = 10

// restartBackOff spaces the restarts: from about a second, doubling, up to
// 30 s; it starts again from a second after a restart that made progress.
func restartBackOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = time.Second
	b.MaxInterval = 30 * time.Second
	return b
}

// txnRestartable reports whether err ended a run with a Kafka transaction
// that a new run resolves: its commit's outcome unknown, or aborted for a
// cause that may pass (a connection lost, a retriable error outlasting the
// client's retries). Not a refusal for good (a record too large, a denied
// ACL), which would come back on every run, nor a fenced producer: another
// relay holds the transactional ID.
func txnRestartable(err error) bool {
	if errors.Is(err, kafka.ErrCommitUnknown) {
		return true
	}
	if !errors.Is(err, kafka.ErrTxnAborted) {
		return false
	}
	var ke *kerr.Error
	return !errors.As(err, &ke) || ke.Retriable
}

// restarter decides, run after run, whether the daemon starts again.
type restarter struct {
	log      *slog.Logger
	bo       *backoff.ExponentialBackOff
	inRow    int           // restarts since the last progress
	best     pglogrepl.LSN // the highest committed position a run reached
	restarts prometheus.Counter
	// waiting, if set, is called when a restart is decided, before its
	// backoff: the daemon's probes say it restarts.
	waiting func()
}

func newRestarter(logger *slog.Logger) *restarter {
	return &restarter{
		log: logger,
		bo:  restartBackOff(),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_kafka_transaction_restarts_total",
			Help: "Times the exactly-once relay started its stream and Kafka producer again in-process after a Kafka transaction did not commit for certain.",
		}),
	}
}

// register adds the restart counter to the daemon's registry, which
// outlives its runs.
func (r *restarter) register(reg prometheus.Registerer) error {
	if err := reg.Register(r.restarts); err != nil {
		return fmt.Errorf("register restart metrics: %w", err)
	}
	return nil
}

// again reports whether the daemon should run again after a run that ended
// with err, having committed up to flushed; it waits out the backoff
// first, and returns false at once when ctx ends. Once it returns true,
// the next run waits for the brokers (pending).
func (r *restarter) again(ctx context.Context, err error, flushed pglogrepl.LSN) bool {
	if !txnRestartable(err) || ctx.Err() != nil {
		return false
	}
	if flushed > r.best {
		r.best, r.inRow = flushed, 0
		r.bo.Reset()
	}
	if r.inRow >= maxTxnRestarts {
		r.log.Error("exactly-once: giving up; Kafka transactions failed in each of the last runs, which committed nothing",
			"runs", r.inRow+1, "err", err)
		return false
	}
	r.inRow++
	wait := r.bo.NextBackOff()
	r.log.Warn("exactly-once: the Kafka transaction did not commit for certain; starting the stream and the producer again from the last committed fence",
		"in", wait.String(), "restart", r.inRow, "err", err)
	if r.waiting != nil {
		r.waiting()
	}
	if sleep(ctx, wait) != nil {
		return false
	}
	r.restarts.Inc()
	return true
}

// sleep waits for d, or returns ctx's error as soon as ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pending reports whether the next run is a restart: it waits for the
// brokers rather than failing its start-up check.
func (r *restarter) pending() bool { return r.inRow > 0 }
