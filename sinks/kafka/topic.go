package kafka

import (
	"fmt"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// maxTopicLen is the longest topic name Kafka accepts.
const maxTopicLen = 249

// legalTopic reports whether Kafka accepts name as a topic name: 1 to 249
// characters of a-z A-Z 0-9 . _ -, and neither "." nor "..".
func legalTopic(name string) bool {
	if name == "" || len(name) > maxTopicLen || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !topicChar(name[i]) {
			return false
		}
	}
	return true
}

func topicChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// topicFields are the fields a Config.Topic may name: an aggregate's events
// land on one topic, or on one per event type, never on one per aggregate.
const topicFields = delivery.FieldAggregateType | delivery.FieldEventType

// topicSyntax is what a Config.Topic may hold.
var topicSyntax = delivery.TemplateSyntax{Fields: topicFields, Literal: checkTopicText}

// checkTopicText reports the first byte of lit, literal text of a topic
// template, that no topic name may hold.
func checkTopicText(lit string) error {
	for i := 0; i < len(lit); i++ {
		if !topicChar(lit[i]) {
			return fmt.Errorf("%q is not allowed in a Kafka topic name; use a-z A-Z 0-9 . _ - and the placeholders %s",
				lit[i], topicFields.Placeholders())
		}
	}
	return nil
}

// parseTopicTemplate parses a Config.Topic. It fails when the template uses
// another placeholder, or when no event could make it a legal topic name.
func parseTopicTemplate(s string) (delivery.Template, error) {
	t, err := delivery.ParseTemplate(s, topicSyntax)
	switch {
	case err != nil:
		return delivery.Template{}, fmt.Errorf("topic template %q: %w", s, err)
	case t.LiteralLen() > maxTopicLen:
		return delivery.Template{}, fmt.Errorf("topic template %q: %d characters besides placeholders, more than the %d Kafka allows in a topic name",
			s, t.LiteralLen(), maxTopicLen)
	case s != "" && t.Literal() && !legalTopic(s):
		return delivery.Template{}, fmt.Errorf("topic template %q is not a legal Kafka topic name; %q and %q are reserved", s, ".", "..")
	case s == "":
		return delivery.Template{}, fmt.Errorf("topic template is empty; use a name such as %q", DefaultTopic)
	}
	return t, nil
}

// topicKey is what distinguishes an event's topic from others: the fields
// the template uses.
type topicKey struct{ aggregateType, eventType string }

// topic is a legal topic name and its per-topic counters, looked up once.
type topic struct {
	name      string
	published prometheus.Counter
	bytes     prometheus.Counter
}

// maxCachedTopics bounds topicCache; topics past it are rendered and
// checked for each event, which is slower but still correct.
const maxCachedTopics = 4096

// topicCache resolves events to topics, remembering the answer per distinct
// aggregate type (and event type, when the template uses it). It is safe
// for concurrent use.
type topicCache struct {
	tmpl    delivery.Template
	metrics *metrics

	mu     sync.Mutex
	topics map[topicKey]*topic
}

func newTopicCache(tmpl delivery.Template, m *metrics) *topicCache {
	return &topicCache{tmpl: tmpl, metrics: m, topics: make(map[topicKey]*topic)}
}

// lookup returns ev's topic, or a *RecordError if the name is not legal.
func (c *topicCache) lookup(ev *schema.Event) (*topic, error) {
	k := c.key(ev)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.topics[k]; ok {
		return t, nil
	}
	if err := c.tmpl.Unfilled(ev, "topic"); err != nil {
		return nil, &RecordError{Reason: ReasonTopic, Err: err}
	}
	name := c.tmpl.Render(ev)
	if !legalTopic(name) {
		return nil, &RecordError{Reason: ReasonTopic, Err: fmt.Errorf(
			"event %s: topic %q from template %q is not a legal Kafka topic name (1 to %d characters of a-z A-Z 0-9 . _ -, not %q or %q); fix the event's aggregate_type %q or event_type %q, or change the topic template",
			ev.ID, name, c.tmpl.String(), maxTopicLen, ".", "..", ev.AggregateType, ev.EventType)}
	}
	t := &topic{
		name:      name,
		published: c.metrics.published.WithLabelValues(name),
		bytes:     c.metrics.publishedBytes.WithLabelValues(name),
	}
	if len(c.topics) < maxCachedTopics {
		// The event's strings are views into its whole WAL message,
		// payload included: a cached key must not keep it alive.
		k.aggregateType, k.eventType = strings.Clone(k.aggregateType), strings.Clone(k.eventType)
		c.topics[k] = t
	}
	return t, nil
}

// key returns ev's topicKey.
func (c *topicCache) key(ev *schema.Event) topicKey {
	var k topicKey
	if c.tmpl.Uses(delivery.FieldAggregateType) {
		k.aggregateType = ev.AggregateType
	}
	if c.tmpl.Uses(delivery.FieldEventType) {
		k.eventType = ev.EventType
	}
	return k
}

// TopicNamer returns the function that names each event's topic as a Sink
// with Config.Topic set to template does (empty means DefaultTopic), for
// callers that show where events would go without producing them. The
// function returns a *RecordError for a name Kafka would refuse.
func TopicNamer(template string) (func(ev *schema.Event) (string, error), error) {
	if template == "" {
		template = DefaultTopic
	}
	tmpl, err := parseTopicTemplate(template)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	// Nothing reads these counters.
	m, err := newMetrics(prometheus.NewRegistry(), func() int { return 0 })
	if err != nil {
		return nil, err
	}
	c := newTopicCache(tmpl, m)
	return func(ev *schema.Event) (string, error) {
		t, err := c.lookup(ev)
		if err != nil {
			return "", err
		}
		return t.name, nil
	}, nil
}
