package kafka

import (
	"fmt"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/schema"
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

// field is an event field a topic template can name.
type field uint8

const (
	fieldNone field = iota // a literal part
	fieldAggregateType
	fieldEventType
)

// placeholders maps each allowed placeholder to its field.
var placeholders = map[string]field{
	"{aggregate_type}": fieldAggregateType,
	"{event_type}":     fieldEventType,
}

const allowedPlaceholders = "{aggregate_type} and {event_type}"

// topicTemplate is a parsed Config.Topic.
type topicTemplate struct {
	raw   string
	parts []templatePart
	// uses records which fields appear, so events that differ only in
	// an unused field share a topic.
	uses [fieldEventType + 1]bool
}

// templatePart is literal text, or a field when field is not fieldNone.
type templatePart struct {
	lit   string
	field field
}

// parseTopicTemplate parses a Config.Topic. It fails when the template uses
// another placeholder, or when no event could make it a legal topic name.
func parseTopicTemplate(s string) (topicTemplate, error) {
	t := topicTemplate{raw: s}
	literal := 0
	for rest := s; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			open = len(rest)
		}
		if lit := rest[:open]; lit != "" {
			for i := 0; i < len(lit); i++ {
				if !topicChar(lit[i]) {
					return topicTemplate{}, fmt.Errorf("topic template %q: %q is not allowed in a Kafka topic name; use a-z A-Z 0-9 . _ - and the placeholders %s",
						s, lit[i], allowedPlaceholders)
				}
			}
			literal += len(lit)
			t.parts = append(t.parts, templatePart{lit: lit})
		}
		rest = rest[open:]
		if rest == "" {
			break
		}
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			return topicTemplate{}, fmt.Errorf("topic template %q: %q is not closed; the allowed placeholders are %s",
				s, rest, allowedPlaceholders)
		}
		name := rest[:end+1]
		f, ok := placeholders[name]
		if !ok {
			return topicTemplate{}, fmt.Errorf("topic template %q: unknown placeholder %q; the allowed placeholders are %s",
				s, name, allowedPlaceholders)
		}
		t.uses[f] = true
		t.parts = append(t.parts, templatePart{field: f})
		rest = rest[end+1:]
	}
	switch {
	case literal > maxTopicLen:
		return topicTemplate{}, fmt.Errorf("topic template %q: %d characters besides placeholders, more than the %d Kafka allows in a topic name",
			s, literal, maxTopicLen)
	case len(t.parts) == 1 && t.parts[0].field == fieldNone && !legalTopic(s):
		return topicTemplate{}, fmt.Errorf("topic template %q is not a legal Kafka topic name; %q and %q are reserved", s, ".", "..")
	case len(t.parts) == 0:
		return topicTemplate{}, fmt.Errorf("topic template is empty; use a name such as %q", DefaultTopic)
	}
	return t, nil
}

// render returns the topic name t gives ev, legal or not.
func (t *topicTemplate) render(ev *schema.Event) string {
	if len(t.parts) == 1 && t.parts[0].field == fieldNone {
		return t.parts[0].lit
	}
	var b strings.Builder
	n := 0
	for _, p := range t.parts {
		n += len(t.value(p, ev))
	}
	b.Grow(n)
	for _, p := range t.parts {
		b.WriteString(t.value(p, ev))
	}
	return b.String()
}

func (t *topicTemplate) value(p templatePart, ev *schema.Event) string {
	switch p.field {
	case fieldAggregateType:
		return ev.AggregateType
	case fieldEventType:
		return ev.EventType
	default:
		return p.lit
	}
}

// key returns what distinguishes ev's topic from others: the fields t uses.
func (t *topicTemplate) key(ev *schema.Event) topicKey {
	var k topicKey
	if t.uses[fieldAggregateType] {
		k.aggregateType = ev.AggregateType
	}
	if t.uses[fieldEventType] {
		k.eventType = ev.EventType
	}
	return k
}

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
	tmpl    topicTemplate
	metrics *metrics

	mu     sync.Mutex
	topics map[topicKey]*topic
}

func newTopicCache(tmpl topicTemplate, m *metrics) *topicCache {
	return &topicCache{tmpl: tmpl, metrics: m, topics: make(map[topicKey]*topic)}
}

// lookup returns ev's topic, or a *RecordError if the name is not legal.
func (c *topicCache) lookup(ev *schema.Event) (*topic, error) {
	k := c.tmpl.key(ev)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.topics[k]; ok {
		return t, nil
	}
	name := c.tmpl.render(ev)
	if !legalTopic(name) {
		return nil, &RecordError{Reason: ReasonTopic, Err: fmt.Errorf(
			"event %s: topic %q from template %q is not a legal Kafka topic name (1 to %d characters of a-z A-Z 0-9 . _ -, not %q or %q); fix the event's aggregate_type %q or event_type %q, or change the topic template",
			ev.ID, name, c.tmpl.raw, maxTopicLen, ".", "..", ev.AggregateType, ev.EventType)}
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
