package main

import (
	"errors"
	"fmt"

	"github.com/outbox-relay/outbox-relay/relay"
)

// The packages say what went wrong; only the command knows its flags and
// subcommands, so it adds the way out here.

// withHint returns err with what the user can do about it, when the
// command knows; otherwise err itself.
func withHint(err error, cfg Config) error {
	var pe *relay.PoisonError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe):
		return fmt.Errorf("%w; to go on, restart once with --poison-policy=dlq to set it aside in the dead-letter %s", err, deadLetterPlace(cfg))
	}
	return err
}

// deadLetterPlace names where the sink of cfg sets events aside.
func deadLetterPlace(cfg Config) string {
	switch cfg.Sink {
	case sinkNATS:
		return fmt.Sprintf("subject %q", cfg.NATS.DeadLetterSubject)
	case sinkRedis:
		return fmt.Sprintf("stream %q", cfg.Redis.DeadLetterStream)
	}
	return fmt.Sprintf("topic %q", cfg.Kafka.DeadLetterTopic)
}
