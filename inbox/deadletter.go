package inbox

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Headers a dead-lettered record carries besides the original record's own.
// The dead letter has the original key, value and headers; these are
// appended after them. Numbers are decimal text; times are RFC 3339 with
// nanoseconds, in UTC (time.RFC3339Nano).
const (
	// HeaderDLQTopic is the topic the record was consumed from.
	HeaderDLQTopic = "inbox_dlq_topic"
	// HeaderDLQPartition is its partition.
	HeaderDLQPartition = "inbox_dlq_partition"
	// HeaderDLQOffset is its offset.
	HeaderDLQOffset = "inbox_dlq_offset"
	// HeaderDLQConsumer is the consumer's name (Config.Name): the inbox
	// rows a replay of the dead letter must be checked against.
	HeaderDLQConsumer = "inbox_dlq_consumer"
	// HeaderDLQGroup is the consumer group (Config.Group).
	HeaderDLQGroup = "inbox_dlq_group"
	// HeaderDLQError is the text of the last error.
	HeaderDLQError = "inbox_dlq_error"
	// HeaderDLQAttempts is how many handler failures were counted: at most
	// Config.MaxAttempts; fewer for a Permanent error; 0 when the handler
	// was never called (no deduplication key).
	HeaderDLQAttempts = "inbox_dlq_attempts"
	// HeaderDLQFirstAttempt is when the first attempt started.
	HeaderDLQFirstAttempt = "inbox_dlq_first_attempt"
	// HeaderDLQLastAttempt is when the last attempt started.
	HeaderDLQLastAttempt = "inbox_dlq_last_attempt"
	// HeaderDLQRecordTime is the original record's timestamp.
	HeaderDLQRecordTime = "inbox_dlq_record_time"
)

// deadLetter produces rec with the HeaderDLQ* headers to the dead-letter
// topic and waits for the acknowledgement, retrying with backoff. It
// returns true once acknowledged, false if p halted first (the record's
// next reader retries it, and may dead-letter it again: dead letters are
// at least once, and a replay of them is deduplicated by the inbox).
func (c *Consumer) deadLetter(p *partition, rec *kgo.Record, cause error, attempts int, first, last time.Time) (bool, error) {
	dl := c.deadLetterRecord(rec, cause, attempts, first, last)
	log := c.logger.With("topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset)
	bo := c.backoff()
	for {
		err := p.cl.ProduceSync(p.hctx, dl).FirstErr()
		if err == nil {
			break
		}
		if p.hctx.Err() != nil {
			return false, nil
		}
		log.Warn("produce to the dead-letter topic failed, retrying", "dlq_topic", c.cfg.DeadLetterTopic, "err", err)
		if !c.sleep(p, bo) {
			return false, nil
		}
	}
	c.metrics.dead.Inc()
	log.Error("record dead-lettered", "dlq_topic", c.cfg.DeadLetterTopic, "attempts", attempts, "err", cause)
	c.hooks.deadLettered(rec)
	return true, nil
}

// deadLetterRecord returns the dead letter of rec: its key, value and
// headers, then the HeaderDLQ* headers.
func (c *Consumer) deadLetterRecord(rec *kgo.Record, cause error, attempts int, first, last time.Time) *kgo.Record {
	headers := make([]kgo.RecordHeader, 0, len(rec.Headers)+10)
	headers = append(headers, rec.Headers...)
	add := func(k, v string) { headers = append(headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(HeaderDLQTopic, rec.Topic)
	add(HeaderDLQPartition, strconv.Itoa(int(rec.Partition)))
	add(HeaderDLQOffset, strconv.FormatInt(rec.Offset, 10))
	add(HeaderDLQConsumer, c.cfg.Name)
	add(HeaderDLQGroup, c.cfg.Group)
	add(HeaderDLQError, cause.Error())
	add(HeaderDLQAttempts, strconv.Itoa(attempts))
	add(HeaderDLQFirstAttempt, first.UTC().Format(time.RFC3339Nano))
	add(HeaderDLQLastAttempt, last.UTC().Format(time.RFC3339Nano))
	add(HeaderDLQRecordTime, rec.Timestamp.UTC().Format(time.RFC3339Nano))
	return &kgo.Record{Topic: c.cfg.DeadLetterTopic, Key: rec.Key, Value: rec.Value, Headers: headers}
}

// createDeadLetterTopic creates the dead-letter topic with the broker's
// default partitions and replication, unless it exists. A broker that
// refuses (no CREATE permission, creation disabled) is only logged: the
// topic may exist under rules the consumer cannot see, and a record that
// cannot be dead-lettered is retried, never skipped.
func (c *Consumer) createDeadLetterTopic(ctx context.Context, cl *kgo.Client) {
	topic := c.cfg.DeadLetterTopic
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10_000
	resp, err := req.RequestWith(ctx, cl)
	if err == nil && len(resp.Topics) == 1 {
		err = kerr.ErrorForCode(resp.Topics[0].ErrorCode)
	}
	switch {
	case err == nil:
		c.logger.Info("created the dead-letter topic", "topic", topic)
	case errors.Is(err, kerr.TopicAlreadyExists) || ctx.Err() != nil:
	default:
		c.logger.Warn("cannot create the dead-letter topic; create it, or records the consumer gives up on wait for it", "topic", topic, "err", err)
	}
}
