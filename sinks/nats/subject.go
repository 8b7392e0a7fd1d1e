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

// subjectSyntax is what a Config.Subject may hold: placeholders for all
// three fields, and literal text without white space, * or >, which no
// field value can make a valid subject.
var subjectSyntax = delivery.TemplateSyntax{Fields: delivery.AllFields, Literal: checkSubjectText}

// checkSubjectText reports the first byte of lit, literal text of a subject
// template, that no subject may hold.
func checkSubjectText(lit string) error {
	if i := strings.IndexFunc(lit, func(r rune) bool { return r == '}' || badSubjectRune(r) }); i >= 0 {
		return fmt.Errorf("%q is not allowed; NATS subjects are tokens separated by dots, without white space, * or >, and the placeholders are %s",
			lit[i], delivery.AllFields.Placeholders())
	}
	return nil
}

// subjectTemplate is a parsed Config.Subject.
type subjectTemplate struct {
	delivery.Template
	// pattern is the subject filter every rendered subject matches when
	// no field value holds a dot: each token with a placeholder is "*".
	pattern string
}

// parseSubjectTemplate parses a Config.Subject. It fails when the template
// uses another placeholder, or holds text no subject may hold whatever the
// events' fields are.
func parseSubjectTemplate(s string) (*subjectTemplate, error) {
	if s == "" {
		return nil, fmt.Errorf("subject template is empty; use one such as %q", DefaultSubject)
	}
	tmpl, err := delivery.ParseTemplate(s, subjectSyntax)
	if err != nil {
		return nil, fmt.Errorf("subject template %q: %w", s, err)
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
	return &subjectTemplate{Template: tmpl, pattern: strings.Join(tokens, ".")}, nil
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

// subject returns the subject t gives ev, or a *delivery.PermanentError of
// delivery.ReasonDestination when NATS would not take it.
func (t *subjectTemplate) subject(ev *schema.Event) (string, error) {
	if err := t.Unfilled(ev, "subject"); err != nil {
		return "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: err}
	}
	s := t.Render(ev)
	if err := checkSubject(s); err != nil {
		return "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: fmt.Errorf(
			"event %s: subject %q from template %q is not a valid NATS subject: %w; change the template, or the event's aggregate type, event type or aggregate ID it uses",
			ev.ID, s, t.String(), err)}
	}
	return s, nil
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
