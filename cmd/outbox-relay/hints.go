package main

import (
	"errors"
	"fmt"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// The packages say what went wrong; only the command knows its flags and
// subcommands, so it adds the way out here.

// hinted is an error whose text already says what to do.
type hinted struct{ error }

func (h hinted) Unwrap() error { return h.error }

// withHint returns err with what the user can do about it, when the
// command knows; otherwise err itself.
func withHint(err error, cfg Config) error {
	if err == nil || errors.As(err, new(hinted)) {
		return err
	}
	if hint := hintFor(err, cfg); hint != "" {
		return hinted{fmt.Errorf("%w; %s", err, hint)}
	}
	return err
}

// hintFor returns what to do about err, or "".
func hintFor(err error, cfg Config) string {
	var pe *relay.PoisonError
	t, pub, slot := cfg.CDC.Table, cfg.CDC.Publication, cfg.CDC.Slot
	switch {
	case errors.As(err, &pe) && pe.Reason == delivery.ReasonSize:
		return fmt.Sprintf("to go on, raise --%s-max-message-bytes if the broker takes larger messages, or restart once with --poison-policy=dlq to set it aside in the dead-letter %s", cfg.Sink, deadLetterPlace(cfg))
	case errors.As(err, &pe):
		return "to go on, restart once with --poison-policy=dlq to set it aside in the dead-letter " + deadLetterPlace(cfg)
	case errors.Is(err, cdc.ErrRowColumns):
		return fmt.Sprintf("if the table lacks a mapped column now, set the column mapping (--column-...) to its name; if it has them again (renamed and renamed back), the rows written in between cannot be decoded with them: with the relay stopped, move the slot past them (SELECT pg_replication_slot_advance('%s', pg_current_wal_lsn())), republish them with `outbox-relay replay --since` a time minutes before the first rename (rows published twice carry the header replayed=true), and start the relay; table-less events (logical decoding messages) in that stretch are not in the table and cannot be republished", slot)
	case errors.Is(err, cdc.ErrNoDSN):
		return "set --pg-dsn or OUTBOX_RELAY_PG_DSN, e.g. postgres://user:pass@host:5432/db"
	case errors.Is(err, cdc.ErrNoTable):
		return "run `outbox-relay setup` or set --table"
	case errors.Is(err, cdc.ErrNoPublication):
		return "run `outbox-relay setup` (as the table's owner)"
	case errors.Is(err, cdc.ErrNotPublished):
		return fmt.Sprintf("run `outbox-relay setup`, or ALTER PUBLICATION %s ADD TABLE %s; if the table was created again or left the publication since the relay last ran, republish what was written to it meanwhile with `outbox-relay replay --since`", pub, t)
	case errors.Is(err, cdc.ErrNoSlot):
		return "run `outbox-relay setup`"
	case errors.Is(err, cdc.ErrSlotPlugin):
		return "drop it or choose another --slot"
	case errors.Is(err, cdc.ErrSlotInvalidated):
		return fmt.Sprintf("drop the slot (SELECT pg_drop_replication_slot('%s')), run `outbox-relay setup`, and republish the outbox rows written since then (`outbox-relay replay --since`), or start with --on-slot-lost=recover, which does both", slot)
	case errors.Is(err, cdc.ErrSlotRecovering):
		return "start with --on-slot-lost=recover, which waits for a running recovery or does it again"
	case errors.Is(err, cdc.ErrSlotLost):
		return "recreate it with `outbox-relay setup` and republish from the outbox table the rows written since then (`outbox-relay replay --since`)"
	case errors.Is(err, cdc.ErrSystemChanged):
		return "check the DSN and the slot's position on the server it now names, run `outbox-relay setup` there if it lacks the slot, republish from the outbox table the rows written since then (`outbox-relay replay --since`), and restart the relay"
	}
	return ""
}

// deadLetterPlace names where the sink of cfg sets events aside.
func deadLetterPlace(cfg Config) string {
	switch cfg.Sink {
	case sinkNATS:
		return fmt.Sprintf("subject %q", cfg.NATS.DeadLetterSubject)
	case sinkRabbitMQ:
		return fmt.Sprintf("queue %q", cfg.RabbitMQ.DeadLetterQueue)
	case sinkRedis:
		return fmt.Sprintf("stream %q", cfg.Redis.DeadLetterStream)
	}
	return fmt.Sprintf("topic %q", cfg.Kafka.DeadLetterTopic)
}
