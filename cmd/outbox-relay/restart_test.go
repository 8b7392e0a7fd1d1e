package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// fastRestarter is a restarter whose backoff is a millisecond.
func fastRestarter() *restarter {
	r := newRestarter(slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.bo.InitialInterval, r.bo.MaxInterval = time.Millisecond, time.Millisecond
	return r
}

func TestRestarterAgain(t *testing.T) {
	ctx := context.Background()
	unknown := fmt.Errorf("relay stopped: commit: %w", kafka.ErrCommitUnknown)
	aborted := fmt.Errorf("relay stopped: %w", kafka.ErrTxnAborted)

	t.Run("other errors end the daemon", func(t *testing.T) {
		r := fastRestarter()
		r.waiting = func() { t.Error("waiting called for an error that does not restart") }
		for _, err := range []error{
			errors.New("relay stopped: no kafka broker answered"),
			fmt.Errorf("relay stopped: %w", kafka.ErrFenced),
			fmt.Errorf("relay stopped: %w", cdc.ErrSlotLost),
			fmt.Errorf("relay stopped: record refused: %w; %w", kerr.MessageTooLarge, kafka.ErrTxnAborted),
		} {
			if r.again(ctx, err, 100) {
				t.Errorf("again(%v) = true, want false", err)
			}
		}
		if got := testutil.ToFloat64(r.restarts); got != 0 || r.pending() {
			t.Errorf("restarts = %v, pending %t; want 0, false", got, r.pending())
		}
	})

	t.Run("transaction errors restart, and progress resets the count", func(t *testing.T) {
		r := fastRestarter()
		waited := 0
		r.waiting = func() { waited++ }
		for i := range maxTxnRestarts {
			if !r.again(ctx, unknown, 100) {
				t.Fatalf("restart %d refused", i+1)
			}
		}
		if !r.pending() {
			t.Error("pending() = false after a restart")
		}
		// A run that committed past the best position so far, ended by
		// an error the broker may not give again.
		if !r.again(ctx, fmt.Errorf("produce: %w; %w", kerr.NotEnoughReplicas, aborted), 200) {
			t.Fatal("restart after progress refused")
		}
		if r.inRow != 1 {
			t.Errorf("restarts in a row after progress = %d, want 1", r.inRow)
		}
		if got := testutil.ToFloat64(r.restarts); got != maxTxnRestarts+1 {
			t.Errorf("restarts counted = %v, want %d", got, maxTxnRestarts+1)
		}
		if waited != maxTxnRestarts+1 {
			t.Errorf("waiting called %d times, want once per restart, %d", waited, maxTxnRestarts+1)
		}
	})

	t.Run("gives up without progress", func(t *testing.T) {
		r := fastRestarter()
		n := 0
		for r.again(ctx, unknown, 100) {
			n++
			if n > maxTxnRestarts {
				t.Fatalf("more than %d restarts without progress", maxTxnRestarts)
			}
		}
		if n != maxTxnRestarts {
			t.Errorf("restarts without progress = %d, want %d", n, maxTxnRestarts)
		}
	})

	t.Run("an ended context stops the wait", func(t *testing.T) {
		r := newRestarter(slog.New(slog.NewTextHandler(io.Discard, nil)))
		r.bo.InitialInterval, r.bo.MaxInterval = time.Hour, time.Hour
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if r.again(ctx, unknown, 100) {
			t.Error("again = true after ctx ended")
		}
		if got := testutil.ToFloat64(r.restarts); got != 0 {
			t.Errorf("restarts counted = %v, want 0", got)
		}
	})
}
