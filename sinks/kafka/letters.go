package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Kinds of dead letter, told apart by their headers.
const (
	// KindRelay is a dead letter of the relay (Sink.DeadLetter): it
	// carries HeaderDLQReason.
	KindRelay = "relay"
	// KindInbox is a dead letter of an inbox consumer: it carries
	// HeaderInboxDLQTopic and the original record's key, value and
	// headers.
	KindInbox = "inbox"
	// KindUnknown is a record with neither kind's headers.
	KindUnknown = "unknown"
)

// Headers of an inbox consumer's dead letter, besides the original
// record's own.
const (
	HeaderInboxDLQTopic        = "inbox_dlq_topic"     // the topic the record was consumed from
	HeaderInboxDLQPartition    = "inbox_dlq_partition" // its partition
	HeaderInboxDLQOffset       = "inbox_dlq_offset"    // its offset
	HeaderInboxDLQConsumer     = "inbox_dlq_consumer"
	HeaderInboxDLQGroup        = "inbox_dlq_group"
	HeaderInboxDLQError        = "inbox_dlq_error"
	HeaderInboxDLQAttempts     = "inbox_dlq_attempts"
	HeaderInboxDLQFirstAttempt = "inbox_dlq_first_attempt"
	HeaderInboxDLQLastAttempt  = "inbox_dlq_last_attempt"
	HeaderInboxDLQRecordTime   = "inbox_dlq_record_time"
)

// HeaderDLQReplayedFrom marks a record republished from a dead letter:
// "<dead-letter topic>/<partition>/<offset>".
const HeaderDLQReplayedFrom = "dlq_replayed_from"

// ErrNoTopic reports a dead-letter topic the brokers do not have.
var ErrNoTopic = errors.New("kafka: no such topic")

// Letter is a dead letter read back from a dead-letter topic, and the
// record that republishes it.
type Letter struct {
	// Topic, Partition and Offset locate the dead letter.
	Topic     string
	Partition int32
	Offset    int64
	// Kind is KindRelay, KindInbox or KindUnknown.
	Kind string
	// Time is when the event was set aside: HeaderDLQTime, or
	// HeaderInboxDLQLastAttempt, or else the record's timestamp.
	Time time.Time
	// ID, EventType and AggregateType are the event's headers; empty when
	// the record has none.
	ID, EventType, AggregateType string
	// Reason is the relay's HeaderDLQReason; empty for other kinds.
	Reason string
	// Error is the error text that set the event aside.
	Error string
	// Attempts counts the attempts to publish or to handle the event; zero
	// when the record does not say.
	Attempts int
	// Consumer and Group name the inbox consumer; empty for other kinds.
	Consumer, Group string
	// PayloadOmitted is true when the relay left the payload out.
	PayloadOmitted bool
	// Original is the record Replay produces: the original topic, key,
	// value and headers, without the dlq_* and inbox_dlq_* headers and
	// with HeaderDLQReplayedFrom. Its Topic is empty when the original
	// topic cannot be named.
	Original *kgo.Record
	// Refused is why the letter cannot be replayed, from a closed set
	// (empty when it can be), for callers that say what to do about it.
	Refused Refused
	// Refusal says why the letter cannot be replayed, and what to do
	// instead; empty when it can.
	Refusal string
}

// Where is the letter's place in its topic: "<partition>/<offset>".
func (l *Letter) Where() string { return fmt.Sprintf("%d/%d", l.Partition, l.Offset) }

// ParseLetter reads rec, a record of a dead-letter topic. The kind comes
// from its headers. A relay dead letter's original topic is its
// HeaderDLQTopic, or for one without it (written by an older relay, or
// whose topic name was illegal) the one topic names for its event. The
// headers of the original record are the dead letter's own without the
// dlq_* and inbox_dlq_* ones, and for a relay dead letter the members of
// HeaderDLQHeaders as Sink.Publish maps them; then HeaderDLQReplayedFrom.
func ParseLetter(rec *kgo.Record, topic func(*schema.Event) (string, error)) *Letter {
	l := &Letter{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Kind: KindUnknown, Time: rec.Timestamp}
	get := func(key string) (string, bool) {
		for _, h := range rec.Headers {
			if h.Key == key {
				return string(h.Value), true
			}
		}
		return "", false
	}
	value := func(key string) string { v, _ := get(key); return v }
	l.ID, l.EventType, l.AggregateType = value(HeaderID), value(HeaderEventType), value(HeaderAggregateType)
	setTime := func(key string) {
		if t, err := time.Parse(time.RFC3339Nano, value(key)); err == nil {
			l.Time = t
		}
	}

	orig := &kgo.Record{Key: rec.Key, Value: rec.Value}
	for _, h := range rec.Headers {
		if !strings.HasPrefix(h.Key, "dlq_") && !strings.HasPrefix(h.Key, "inbox_dlq_") {
			orig.Headers = append(orig.Headers, h)
		}
	}
	l.Original = orig
	_, inbox := get(HeaderInboxDLQTopic)
	_, relay := get(HeaderDLQReason)
	switch {
	case inbox:
		l.Kind = KindInbox
		setTime(HeaderInboxDLQLastAttempt)
		l.Error, l.Consumer, l.Group = value(HeaderInboxDLQError), value(HeaderInboxDLQConsumer), value(HeaderInboxDLQGroup)
		l.Attempts, _ = strconv.Atoi(value(HeaderInboxDLQAttempts))
		orig.Topic = value(HeaderInboxDLQTopic)
		if !legalTopic(orig.Topic) {
			l.Refusal = fmt.Sprintf("its %s header %q is not a topic name; it cannot say where the record came from", HeaderInboxDLQTopic, orig.Topic)
			orig.Topic = ""
		}
	case relay:
		l.Kind = KindRelay
		setTime(HeaderDLQTime)
		l.Reason, l.Error = value(HeaderDLQReason), value(HeaderDLQError)
		l.Attempts, _ = strconv.Atoi(value(HeaderDLQAttempts))
		l.PayloadOmitted = value(HeaderDLQPayloadOmitted) == "true"
		l.Refused, l.Refusal = relayOriginal(l, rec, orig, get, topic)
	default:
		l.Refusal = fmt.Sprintf("it is no dead letter of the relay or of an inbox consumer: it has neither a %s nor an %s header", HeaderDLQReason, HeaderInboxDLQTopic)
	}
	orig.Headers = append(orig.Headers, kgo.RecordHeader{Key: HeaderDLQReplayedFrom,
		Value: []byte(fmt.Sprintf("%s/%d/%d", rec.Topic, rec.Partition, rec.Offset))})
	return l
}

// Refused is why a relay's dead letter cannot be replayed.
type Refused string

// The reasons a relay's dead letter cannot be replayed.
const (
	// RefusedNoTopic: the letter has no dlq_topic header, and the topic
	// template names no legal topic for its event.
	RefusedNoTopic Refused = "no_topic"
	// RefusedPayloadOmitted: the payload was too large to keep; the row
	// is still in the outbox table unless it was pruned.
	RefusedPayloadOmitted Refused = "payload_omitted"
	// RefusedMessagePayloadOmitted: the payload was too large to keep, and
	// the event came from a logical decoding message, which only the WAL
	// held.
	RefusedMessagePayloadOmitted Refused = "message_payload_omitted"
	// RefusedContent: the letter holds the content of a logical decoding
	// message that is no outbox event.
	RefusedContent Refused = "content"
	// RefusedNoAggregateID: the event has no aggregate ID, so no key.
	RefusedNoAggregateID Refused = "aggregate_id"
	// RefusedHeaders: its dlq_headers header is not a JSON object.
	RefusedHeaders Refused = "headers"
)

// relayOriginal completes orig, the original record of the relay's dead
// letter l, and returns why it cannot be replayed, or "". It names the
// original topic even then, when it can.
func relayOriginal(l *Letter, rec *kgo.Record, orig *kgo.Record, get func(string) (string, bool), topic func(*schema.Event) (string, error)) (Refused, string) {
	var topicRefused Refused
	topicRefusal := ""
	if t, ok := get(HeaderDLQTopic); ok && legalTopic(t) {
		orig.Topic = t
	} else if topic == nil {
		topicRefused, topicRefusal = RefusedNoTopic, fmt.Sprintf("it has no %s header and no topic template was given", HeaderDLQTopic)
	} else if t, err := topic(&schema.Event{ID: l.ID, AggregateType: l.AggregateType, AggregateID: string(rec.Key), EventType: l.EventType}); err != nil {
		topicRefused, topicRefusal = RefusedNoTopic, fmt.Sprintf("it has no %s header, and the topic template names no legal topic for it (%v)", HeaderDLQTopic, err)
	} else {
		orig.Topic = t
	}

	prefix, message := get(HeaderDLQMessagePrefix)
	if l.PayloadOmitted {
		if message {
			return RefusedMessagePayloadOmitted, fmt.Sprintf("its payload was too large to keep, and event %s came from a logical decoding message (prefix %q), which only the WAL held: publish it again from the application", l.ID, prefix)
		}
		return RefusedPayloadOmitted, "its payload was too large to keep; the row is in the outbox table unless it was pruned"
	}
	switch l.Reason {
	case ReasonContent:
		return RefusedContent, "its value is the content of a logical decoding message that is no outbox event; there is no event to publish: fix the writer and emit the event again"
	case ReasonAggregateID:
		return RefusedNoAggregateID, fmt.Sprintf("event %s has no aggregate ID, so no key; the relay publishes no event without one", l.ID)
	}
	if len(rec.Key) == 0 {
		return RefusedNoAggregateID, fmt.Sprintf("event %s has no key (aggregate ID); the relay publishes no event without one", l.ID)
	}
	if js, ok := get(HeaderDLQHeaders); ok {
		hs, err := appendJSONHeaders(orig.Headers, []byte(js))
		if err != nil {
			return RefusedHeaders, fmt.Sprintf("its %s header is not the JSON object the relay maps to headers (%v)", HeaderDLQHeaders, err)
		}
		orig.Headers = hs
	}
	return topicRefused, topicRefusal
}

// Letters reads dead-letter topics and republishes their letters. Its
// methods are not safe for concurrent use.
type Letters struct {
	brokers []string
	reader  *kgo.Client
	writer  *kgo.Client
	topic   func(*schema.Event) (string, error)
	maxSize int
}

// letterDeliveryTimeout bounds how long Replay waits for one record.
const letterDeliveryTimeout = time.Minute

// NewLetters returns a Letters for cfg: its brokers, security, topic
// template (which names the original topic of relay dead letters without
// HeaderDLQTopic) and producer settings. The producer is idempotent and
// waits for all in-sync replicas. It dials no broker until used; Close
// releases it.
func NewLetters(cfg Config) (*Letters, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	topic, err := TopicNamer(cfg.Topic)
	if err != nil {
		return nil, err
	}
	readCfg := cfg
	readCfg.AllowAutoTopicCreation = false // reading must never create a topic
	reader, err := kgo.NewClient(append(readCfg.opts(), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return nil, fmt.Errorf("create kafka client for brokers %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	writer, err := kgo.NewClient(append(cfg.opts(), kgo.RecordDeliveryTimeout(letterDeliveryTimeout))...)
	if err != nil {
		reader.Close()
		return nil, fmt.Errorf("create kafka client for brokers %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	return &Letters{brokers: cfg.Brokers, reader: reader, writer: writer, topic: topic, maxSize: cfg.MaxMessageBytes}, nil
}

// Close closes the clients.
func (d *Letters) Close() {
	d.reader.Close()
	d.writer.Close()
}

// Ping checks that a broker answers, as Sink.Ping does.
func (d *Letters) Ping(ctx context.Context) error {
	return pingError(d.brokers, d.reader.Ping(ctx))
}

// quietPolls is how many empty one-second polls end Read while offsets
// below the end are still unread: they hold transaction markers or
// aborted records, which read_committed fetches skip.
const quietPolls = 3

// Read calls fn with each letter of topic, partition by partition in
// offset order, from the start of each partition to the end it had when
// Read began (the last stable offset: records of open transactions are not
// read). It returns ErrNoTopic, wrapped, if the topic does not exist, and
// fn's first error.
func (d *Letters) Read(ctx context.Context, topic string, fn func(*Letter) error) error {
	start, end, err := d.bounds(ctx, topic)
	if err != nil {
		return err
	}
	next := make(map[int32]int64)
	offsets := make(map[int32]kgo.Offset)
	for p, e := range end {
		if start[p] < e {
			next[p] = start[p]
			offsets[p] = kgo.NewOffset().At(start[p])
		}
	}
	if len(next) == 0 {
		return nil
	}
	d.reader.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets})
	defer d.reader.RemoveConsumePartitions(map[string][]int32{topic: slices.Collect(maps.Keys(offsets))})
	for quiet := 0; len(next) > 0 && quiet < quietPolls; {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := d.reader.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && ferr == nil {
				ferr = fmt.Errorf("read dead-letter topic %q partition %d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		if fs.NumRecords() == 0 {
			quiet++
			continue
		}
		quiet = 0
		for _, rec := range fs.Records() {
			n, ok := next[rec.Partition]
			if !ok || rec.Offset < n {
				continue
			}
			if rec.Offset >= end[rec.Partition] {
				delete(next, rec.Partition)
				continue
			}
			if err := fn(ParseLetter(rec, d.topic)); err != nil {
				return err
			}
			if next[rec.Partition] = rec.Offset + 1; rec.Offset+1 >= end[rec.Partition] {
				delete(next, rec.Partition)
			}
		}
	}
	return nil
}

// bounds returns the first and the end (last stable) offset of each
// partition of topic.
func (d *Letters) bounds(ctx context.Context, topic string) (start, end map[int32]int64, err error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	meta.AllowAutoTopicCreation = false
	resp, err := meta.RequestWith(ctx, d.reader)
	if err != nil {
		return nil, nil, pingError(d.brokers, err)
	}
	if len(resp.Topics) != 1 {
		return nil, nil, fmt.Errorf("metadata of topic %q: %d topics in the answer", topic, len(resp.Topics))
	}
	rt := resp.Topics[0]
	if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, nil, fmt.Errorf("%w: %q on brokers %s", ErrNoTopic, topic, strings.Join(d.brokers, ","))
		}
		return nil, nil, fmt.Errorf("metadata of topic %q: %w", topic, err)
	}
	start, end = make(map[int32]int64), make(map[int32]int64)
	for _, ts := range []int64{-2, -1} { // earliest, latest
		req := kmsg.NewPtrListOffsetsRequest()
		req.IsolationLevel = 1 // read_committed: the end is the last stable offset
		lt := kmsg.NewListOffsetsRequestTopic()
		lt.Topic = topic
		for _, p := range rt.Partitions {
			lp := kmsg.NewListOffsetsRequestTopicPartition()
			lp.Partition, lp.Timestamp, lp.CurrentLeaderEpoch = p.Partition, ts, -1
			lt.Partitions = append(lt.Partitions, lp)
		}
		req.Topics = append(req.Topics, lt)
		resp, err := req.RequestWith(ctx, d.reader)
		if err != nil {
			return nil, nil, fmt.Errorf("list offsets of topic %q: %w", topic, err)
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return nil, nil, fmt.Errorf("list offsets of topic %q partition %d: %w", topic, p.Partition, err)
				}
				if ts == -2 {
					start[p.Partition] = p.Offset
				} else {
					end[p.Partition] = p.Offset
				}
			}
		}
	}
	return start, end, nil
}

// Replay produces l.Original and waits for all in-sync replicas to have
// it; it returns where the record went. It refuses a letter with a
// Refusal. A produce error says what to change.
func (d *Letters) Replay(ctx context.Context, l *Letter) (partition int32, offset int64, err error) {
	if l.Refusal != "" {
		return 0, 0, fmt.Errorf("dead letter %s/%s: %s", l.Topic, l.Where(), l.Refusal)
	}
	rec := &kgo.Record{Topic: l.Original.Topic, Key: l.Original.Key, Value: l.Original.Value, Headers: l.Original.Headers}
	r, err := d.writer.ProduceSync(ctx, rec).First()
	switch {
	case err == nil:
		return r.Partition, r.Offset, nil
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return 0, 0, fmt.Errorf("produce to topic %q: a record of about %d bytes is too large for the producer's limit (%d bytes) or the topic's max.message.bytes: %w",
			rec.Topic, batchBytes(rec), d.maxSize, err)
	case errors.Is(err, kerr.TopicAuthorizationFailed):
		return 0, 0, fmt.Errorf("produce to topic %q: the brokers refuse this client's writes; grant it WRITE on the topic: %w", rec.Topic, err)
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return 0, 0, fmt.Errorf("produce to topic %q: no such topic: %w", rec.Topic, err)
	default:
		return 0, 0, fmt.Errorf("produce to topic %q: %w", rec.Topic, err)
	}
}
