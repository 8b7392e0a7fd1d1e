package rabbitmq

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/outbox-relay/outbox-relay/schema"
)

// field is an event field a template can name.
type field uint8

const (
	fieldNone field = iota // a literal part
	fieldAggregateType
	fieldEventType
	fieldAggregateID
)

// placeholders maps each placeholder a template may hold to its field.
type placeholders map[string]field

var (
	// exchangePlaceholders are those of Config.Exchange: an exchange per
	// aggregate would be an unbounded number of exchanges.
	exchangePlaceholders = placeholders{
		"{aggregate_type}": fieldAggregateType,
		"{event_type}":     fieldEventType,
	}
	// routingKeyPlaceholders are those of Config.RoutingKey.
	routingKeyPlaceholders = placeholders{
		"{aggregate_type}": fieldAggregateType,
		"{event_type}":     fieldEventType,
		"{aggregate_id}":   fieldAggregateID,
	}
)

// names lists p's placeholders for errors, in a fixed order.
func (p placeholders) names() string {
	if _, ok := p["{aggregate_id}"]; ok {
		return "{aggregate_type}, {event_type} and {aggregate_id}"
	}
	return "{aggregate_type} and {event_type}"
}

// template is a parsed exchange or routing key template.
type template struct {
	raw   string
	parts []part
}

// part is literal text, or a field when field is not fieldNone.
type part struct {
	lit   string
	field field
}

// parseTemplate parses s, which may hold the placeholders allowed. It
// fails when s holds another placeholder, is not UTF-8, or has more
// literal bytes than a name may.
func parseTemplate(s string, allowed placeholders) (template, error) {
	t := template{raw: s}
	if !utf8.ValidString(s) {
		return template{}, fmt.Errorf("template %q is not UTF-8; RabbitMQ names are UTF-8 text", s)
	}
	literal := 0
	for rest := s; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			open = len(rest)
		}
		if lit := rest[:open]; lit != "" {
			literal += len(lit)
			t.parts = append(t.parts, part{lit: lit})
		}
		rest = rest[open:]
		if rest == "" {
			break
		}
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			return template{}, fmt.Errorf("template %q: %q is not closed; the allowed placeholders are %s", s, rest, allowed.names())
		}
		name := rest[:end+1]
		f, ok := allowed[name]
		if !ok {
			return template{}, fmt.Errorf("template %q: unknown placeholder %q; the allowed placeholders are %s", s, name, allowed.names())
		}
		t.parts = append(t.parts, part{field: f})
		rest = rest[end+1:]
	}
	if literal > maxName {
		return template{}, fmt.Errorf("template %q: %d bytes besides placeholders, more than the %d RabbitMQ allows in a name", s, literal, maxName)
	}
	return t, nil
}

// literal reports whether t has no placeholder, so that every event gets
// the same name.
func (t *template) literal() bool {
	for _, p := range t.parts {
		if p.field != fieldNone {
			return false
		}
	}
	return true
}

// render returns the name t gives ev, legal or not. With star, the
// aggregate ID is rendered as "*", for a metrics label.
func (t *template) render(ev *schema.Event, star bool) string {
	if len(t.parts) == 1 && t.parts[0].field == fieldNone {
		return t.parts[0].lit
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch p.field {
		case fieldAggregateType:
			b.WriteString(ev.AggregateType)
		case fieldEventType:
			b.WriteString(ev.EventType)
		case fieldAggregateID:
			if star {
				b.WriteByte('*')
			} else {
				b.WriteString(ev.AggregateID)
			}
		default:
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// legalName reports whether RabbitMQ accepts name as an exchange or queue
// name: 1 to 255 bytes of UTF-8.
func legalName(name string) bool {
	return name != "" && len(name) <= maxName && utf8.ValidString(name)
}

// legalRoutingKey reports whether RabbitMQ accepts key as a routing key: at
// most 255 bytes of UTF-8, possibly none.
func legalRoutingKey(key string) bool {
	return len(key) <= maxName && utf8.ValidString(key)
}
