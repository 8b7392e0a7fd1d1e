package redis

import (
	"fmt"
	"strings"

	"github.com/outbox-relay/outbox-relay/schema"
)

// field is an event field a stream key template can name.
type field uint8

const (
	fieldNone field = iota // a literal part
	fieldAggregateType
	fieldEventType
	fieldAggregateID
)

// placeholders maps each allowed placeholder to its field.
var placeholders = map[string]field{
	"{aggregate_type}": fieldAggregateType,
	"{event_type}":     fieldEventType,
	"{aggregate_id}":   fieldAggregateID,
}

const allowedPlaceholders = "{aggregate_type}, {event_type} and {aggregate_id}"

// template is a parsed Config.Stream.
type template struct {
	raw   string
	parts []part
}

// part is literal text, or a field when field is not fieldNone.
type part struct {
	lit   string
	field field
}

// parseTemplate parses a stream key template. Redis keys are binary safe,
// so any literal text is allowed except braces, which only open and close
// placeholders.
func parseTemplate(s string) (template, error) {
	t := template{raw: s}
	for rest := s; rest != ""; {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			open = len(rest)
		}
		if lit := rest[:open]; lit != "" {
			t.parts = append(t.parts, part{lit: lit})
		}
		rest = rest[open:]
		if rest == "" {
			break
		}
		end := strings.IndexByte(rest, '}')
		if rest[0] == '}' || end < 0 {
			return template{}, fmt.Errorf("stream template %q: %q is not a placeholder; the allowed placeholders are %s, and braces are allowed nowhere else",
				s, rest, allowedPlaceholders)
		}
		name := rest[:end+1]
		f, ok := placeholders[name]
		if !ok {
			return template{}, fmt.Errorf("stream template %q: unknown placeholder %q; the allowed placeholders are %s",
				s, name, allowedPlaceholders)
		}
		t.parts = append(t.parts, part{field: f})
		rest = rest[end+1:]
	}
	if len(t.parts) == 0 {
		return template{}, fmt.Errorf("stream template is empty; use a template such as %q", DefaultStream)
	}
	return t, nil
}

// render returns the stream key t gives ev, and the destination that
// labels its metrics: the key with the aggregate ID, if the template uses
// it, replaced by "*", so that the label takes as few values as the
// aggregate and event types.
func (t *template) render(ev *schema.Event) (key, dest string) {
	if len(t.parts) == 1 && t.parts[0].field == fieldNone {
		return t.parts[0].lit, t.parts[0].lit
	}
	var k, d strings.Builder
	for _, p := range t.parts {
		switch p.field {
		case fieldNone:
			k.WriteString(p.lit)
			d.WriteString(p.lit)
		case fieldAggregateType:
			k.WriteString(ev.AggregateType)
			d.WriteString(ev.AggregateType)
		case fieldEventType:
			k.WriteString(ev.EventType)
			d.WriteString(ev.EventType)
		case fieldAggregateID:
			k.WriteString(ev.AggregateID)
			d.WriteByte('*')
		}
	}
	return k.String(), d.String()
}
