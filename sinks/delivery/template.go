package delivery

import (
	"fmt"
	"strings"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Fields is a set of the event fields a destination template can name, each
// with its placeholder. Combine them with |.
type Fields uint8

// The fields a template can name.
const (
	FieldAggregateType Fields = 1 << iota // {aggregate_type}
	FieldEventType                        // {event_type}
	FieldAggregateID                      // {aggregate_id}

	// AllFields are the three.
	AllFields = FieldAggregateType | FieldEventType | FieldAggregateID
)

// placeholders are the fields' placeholders, in the order errors list them.
var placeholders = []struct {
	name  string
	field Fields
}{
	{"{aggregate_type}", FieldAggregateType},
	{"{event_type}", FieldEventType},
	{"{aggregate_id}", FieldAggregateID},
}

// Placeholders lists the placeholders of f for errors, such as
// "{aggregate_type} and {event_type}".
func (f Fields) Placeholders() string {
	var names []string
	for _, p := range placeholders {
		if f&p.field != 0 {
			names = append(names, p.name)
		}
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// TemplateSyntax is what a kind of destination template may hold.
type TemplateSyntax struct {
	// Fields are those whose placeholders the template may hold.
	Fields Fields
	// Literal, when not nil, reports why a run of text between
	// placeholders cannot stand in a destination, or nil. ParseTemplate
	// calls it on each run in order, so that the first fault of a
	// template is the one reported. Nil allows any text.
	Literal func(lit string) error
	// StrictBraces allows a brace only in a placeholder: a "}" outside
	// one, like a "{" that is not closed, is "not a placeholder".
	// Without it a "}" outside a placeholder is literal text, left to
	// Literal.
	StrictBraces bool
}

// Template is a parsed destination template: literal text and
// placeholders, each replaced by its field of the event when rendered. The
// zero Template renders "". A Template is immutable and safe for
// concurrent use.
type Template struct {
	raw        string
	parts      []templatePart
	fields     Fields // those t names
	literalLen int
}

// templatePart is literal text, or a field when field is not zero.
type templatePart struct {
	lit   string
	field Fields
}

// ParseTemplate parses s as syn says. It fails on a placeholder syn does
// not allow, a "{" that is not closed, or literal text syn.Literal
// refuses. Its errors do not quote s: callers wrap them with what the
// template names, as in fmt.Errorf("topic template %q: %w", s, err). An
// empty s parses, to a Template that renders "".
func ParseTemplate(s string, syn TemplateSyntax) (Template, error) {
	t := Template{raw: s}
	braces := "{"
	if syn.StrictBraces {
		braces = "{}"
	}
	for rest := s; rest != ""; {
		open := strings.IndexAny(rest, braces)
		if open < 0 {
			open = len(rest)
		}
		if lit := rest[:open]; lit != "" {
			if syn.Literal != nil {
				if err := syn.Literal(lit); err != nil {
					return Template{}, err
				}
			}
			t.literalLen += len(lit)
			t.parts = append(t.parts, templatePart{lit: lit})
		}
		rest = rest[open:]
		if rest == "" {
			break
		}
		end := strings.IndexByte(rest, '}')
		switch {
		case syn.StrictBraces && (rest[0] == '}' || end < 0):
			return Template{}, fmt.Errorf("%q is not a placeholder; the allowed placeholders are %s, and braces are allowed nowhere else",
				rest, syn.Fields.Placeholders())
		case end < 0:
			return Template{}, fmt.Errorf("%q is not closed; the allowed placeholders are %s", rest, syn.Fields.Placeholders())
		}
		name := rest[:end+1]
		f := fieldOf(name) & syn.Fields
		if f == 0 {
			return Template{}, fmt.Errorf("unknown placeholder %q; the allowed placeholders are %s", name, syn.Fields.Placeholders())
		}
		t.fields |= f
		t.parts = append(t.parts, templatePart{field: f})
		rest = rest[end+1:]
	}
	return t, nil
}

// fieldOf returns the field of the placeholder name, or zero.
func fieldOf(name string) Fields {
	for _, p := range placeholders {
		if p.name == name {
			return p.field
		}
	}
	return 0
}

// String returns the template as written.
func (t Template) String() string { return t.raw }

// Uses reports whether t names one of fields.
func (t Template) Uses(fields Fields) bool { return t.fields&fields != 0 }

// Literal reports whether t has no placeholder, so that it gives every
// event the same destination.
func (t Template) Literal() bool { return t.fields == 0 }

// LiteralLen returns the bytes of t's literal text: the fewest a
// destination it renders holds.
func (t Template) LiteralLen() int { return t.literalLen }

// Unfilled returns an error when a field t names is empty in ev, saying
// which: what names such a destination ("outbox." for "outbox.{aggregate_type}")
// is often legal to the broker, but not where the event was meant to go.
// what names the template in the error ("topic"). The aggregate ID is left
// out: an event without one is poison for its own reason, before mapping.
func (t Template) Unfilled(ev *schema.Event, what string) error {
	for _, f := range []struct {
		field Fields
		name  string
		value string
	}{
		{FieldAggregateType, "aggregate_type", ev.AggregateType},
		{FieldEventType, "event_type", ev.EventType},
	} {
		if t.Uses(f.field) && f.value == "" {
			return fmt.Errorf("event %s: its %s is empty, and the %s template %q names it; write the %s, or change the template",
				ev.ID, f.name, what, t.raw, f.name)
		}
	}
	return nil
}

// Render returns the destination t gives ev, whether or not the broker
// would take it.
func (t Template) Render(ev *schema.Event) string { return t.render(ev, false) }

// Label returns the destination t gives ev with the aggregate ID, if t
// names it, as "*": the name of the destination in metrics, whose labels
// must take as few values as the aggregate and event types.
func (t Template) Label(ev *schema.Event) string { return t.render(ev, true) }

// render is Render, or Label with star.
func (t Template) render(ev *schema.Event, star bool) string {
	if len(t.parts) == 1 && t.parts[0].field == 0 {
		return t.parts[0].lit
	}
	n := 0
	for _, p := range t.parts {
		n += len(p.value(ev, star))
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range t.parts {
		b.WriteString(p.value(ev, star))
	}
	return b.String()
}

// value returns the text p stands for in ev; with star, "*" for the
// aggregate ID.
func (p templatePart) value(ev *schema.Event, star bool) string {
	switch p.field {
	case FieldAggregateType:
		return ev.AggregateType
	case FieldEventType:
		return ev.EventType
	case FieldAggregateID:
		if star {
			return "*"
		}
		return ev.AggregateID
	}
	return p.lit
}
