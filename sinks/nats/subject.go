package nats

import (
	"errors"
	"fmt"
	"strings"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// maxSubjectLen bounds a rendered subject. The server reads a publish as
// one control line, "HPUB <subject> <reply> <sizes>", of at most 4096 bytes
// by default (max_control_line), and closes the connection on a longer
// one; 256 bytes are left for the rest of the line.
const maxSubjectLen = 4096 - 256

// field is an event field a subject template can name.
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

// subjectTemplate is a parsed Config.Subject.
type subjectTemplate struct {
	raw   string
	parts []templatePart
	// pattern is the subject filter every rendered subject matches when
	// no field value holds a dot: each token with a placeholder is "*".
	pattern string
	// label is the template with {aggregate_id} replaced by "*", or nil
	// when it does not use {aggregate_id}.
	label []templatePart
}

// templatePart is literal text, or a field when field is not fieldNone.
type templatePart struct {
	lit   string
	field field
}

// parseSubjectTemplate parses a Config.Subject. It fails when the template
// uses another placeholder, or holds text no subject may hold whatever the
// events' fields are.
func parseSubjectTemplate(s string) (*subjectTemplate, error) {
	if s == "" {
		return nil, fmt.Errorf("subject template is empty; use one such as %q", DefaultSubject)
	}
	t := &subjectTemplate{raw: s}
	for rest := s; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			open = len(rest)
		}
		if lit := rest[:open]; lit != "" {
			if i := strings.IndexFunc(lit, func(r rune) bool { return r == '}' || badSubjectRune(r) }); i >= 0 {
				return nil, fmt.Errorf("subject template %q: %q is not allowed; NATS subjects are tokens separated by dots, without white space, * or >, and the placeholders are %s",
					s, lit[i], allowedPlaceholders)
			}
			t.parts = append(t.parts, templatePart{lit: lit})
		}
		rest = rest[open:]
		if rest == "" {
			break
		}
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("subject template %q: %q is not closed; the allowed placeholders are %s", s, rest, allowedPlaceholders)
		}
		name := rest[:end+1]
		f, ok := placeholders[name]
		if !ok {
			return nil, fmt.Errorf("subject template %q: unknown placeholder %q; the allowed placeholders are %s", s, name, allowedPlaceholders)
		}
		t.parts = append(t.parts, templatePart{field: f})
		rest = rest[end+1:]
	}
	// Placeholder names hold no dot, so the template's tokens are the
	// subjects' tokens, each with or without a placeholder.
	tokens := strings.Split(s, ".")
	for i, tok := range tokens {
		if tok == "" {
			return nil, fmt.Errorf("subject template %q: token %d is empty; do not begin or end it with a dot, or put two dots in a row", s, i+1)
		}
		if strings.Contains(tok, "{") {
			tokens[i] = "*"
		}
	}
	t.pattern = strings.Join(tokens, ".")
	if strings.Contains(s, "{aggregate_id}") {
		for _, p := range t.parts {
			if p.field == fieldAggregateID {
				p = templatePart{lit: "*"}
			}
			t.label = append(t.label, p)
		}
	}
	return t, nil
}

// streamSubject returns the stream subject that captures every subject t
// renders, dots in field values included: the literal tokens before the
// first token with a placeholder, then ">"; or t itself when it has no
// placeholder. It is "" when t begins with a placeholder, since ">" alone
// would capture every subject of the account.
func (t *subjectTemplate) streamSubject() string {
	if !strings.Contains(t.pattern, "*") {
		return t.pattern
	}
	var prefix []string
	for tok := range strings.SplitSeq(t.pattern, ".") {
		if tok == "*" {
			break
		}
		prefix = append(prefix, tok)
	}
	if len(prefix) == 0 {
		return ""
	}
	return strings.Join(prefix, ".") + ".>"
}

// render returns the subject t gives ev, valid or not.
func (t *subjectTemplate) render(ev *schema.Event) string { return render(t.parts, ev) }

// subject returns the subject t gives ev, or a *delivery.PermanentError of
// delivery.ReasonDestination when NATS would not take it.
func (t *subjectTemplate) subject(ev *schema.Event) (string, error) {
	s := t.render(ev)
	if err := checkSubject(s); err != nil {
		return "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: fmt.Errorf(
			"event %s: subject %q from template %q is not a valid NATS subject: %w; change the template, or the event's aggregate type, event type or aggregate ID it uses",
			ev.ID, s, t.raw, err)}
	}
	return s, nil
}

// destination returns the name of ev's destination in metrics: its subject
// with the aggregate ID replaced by "*", so that the label has a bounded
// number of values.
func (t *subjectTemplate) destination(ev *schema.Event) string {
	if t.label == nil {
		return t.render(ev)
	}
	return render(t.label, ev)
}

// render returns the text of parts for ev.
func render(parts []templatePart, ev *schema.Event) string {
	if len(parts) == 1 && parts[0].field == fieldNone {
		return parts[0].lit
	}
	n := 0
	for _, p := range parts {
		n += len(p.value(ev))
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range parts {
		b.WriteString(p.value(ev))
	}
	return b.String()
}

// value returns the text p stands for in ev.
func (p templatePart) value(ev *schema.Event) string {
	switch p.field {
	case fieldAggregateType:
		return ev.AggregateType
	case fieldEventType:
		return ev.EventType
	case fieldAggregateID:
		return ev.AggregateID
	}
	return p.lit
}

// badSubjectRune reports whether r may not appear in a subject the relay
// publishes to: white space and other control characters, which end a
// subject on the wire, and the wildcards * and >.
func badSubjectRune(r rune) bool {
	return r <= ' ' || r == 0x7f || r == '*' || r == '>'
}

// errEmptyToken reports a subject with an empty token.
var errEmptyToken = errors.New("it has an empty token (a dot at either end, or two in a row)")

// checkSubject reports why NATS would not take s as the subject of a
// published message, or nil if it would.
func checkSubject(s string) error {
	switch {
	case s == "":
		return errors.New("it is empty")
	case len(s) > maxSubjectLen:
		return fmt.Errorf("it is %d bytes long, more than the %d the relay publishes to", len(s), maxSubjectLen)
	case s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, ".."):
		return errEmptyToken
	}
	if i := strings.IndexFunc(s, badSubjectRune); i >= 0 {
		return fmt.Errorf("it holds %q at byte %d; subjects hold no white space, control characters, * or >", s[i], i)
	}
	return nil
}

// checkFilter reports why s is not a valid subject filter (a subject whose
// tokens may be the wildcards * and >, > only last), or nil.
func checkFilter(s string) error {
	if s == "" {
		return errors.New("it is empty")
	}
	tokens := strings.Split(s, ".")
	for i, tok := range tokens {
		switch {
		case tok == "":
			return errEmptyToken
		case tok == ">" && i < len(tokens)-1:
			return errors.New("> may only be its last token")
		case tok == "*" || tok == ">":
		case strings.ContainsFunc(tok, badSubjectRune):
			return fmt.Errorf("token %q holds white space, a control character, or a wildcard that is not a whole token", tok)
		}
	}
	return nil
}

// covers reports whether every subject that matches pattern also matches
// filter. Both are valid subject filters.
func covers(filter, pattern string) bool {
	f, p := strings.Split(filter, "."), strings.Split(pattern, ".")
	for i, ft := range f {
		if ft == ">" {
			return i < len(p) // > matches one token or more
		}
		if i >= len(p) {
			return false
		}
		switch pt := p[i]; {
		case pt == ">":
			return false // pattern matches more tokens than filter
		case ft == "*":
		case ft != pt:
			return false
		}
	}
	return len(f) == len(p)
}

// coveredBy reports whether one of filters covers pattern.
func coveredBy(filters []string, pattern string) bool {
	for _, f := range filters {
		if covers(f, pattern) {
			return true
		}
	}
	return false
}

// SubjectNamer returns the function that names each event's subject as a
// Sink with Config.Subject set to template does (empty means
// DefaultSubject), for callers that show where events would go without
// publishing them. The function returns a *delivery.PermanentError of
// delivery.ReasonDestination for a subject NATS would refuse.
func SubjectNamer(template string) (func(ev *schema.Event) (string, error), error) {
	if template == "" {
		template = DefaultSubject
	}
	t, err := parseSubjectTemplate(template)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	return func(ev *schema.Event) (string, error) { return t.subject(ev) }, nil
}
