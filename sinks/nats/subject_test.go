package nats

import (
	"errors"
	"strings"
	"testing"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

func TestParseSubjectTemplate(t *testing.T) {
	for _, tt := range []struct {
		name, template string
		pattern        string // "" when it fails
		streamSubject  string
		wantErr        string
	}{
		{name: "Default", template: DefaultSubject, pattern: "outbox.*.*", streamSubject: "outbox.>"},
		{name: "Literal", template: "events", pattern: "events", streamSubject: "events"},
		{name: "TwoLiteralTokens", template: "app.events.{event_type}", pattern: "app.events.*", streamSubject: "app.events.>"},
		{name: "PlaceholderInToken", template: "outbox.agg-{aggregate_type}.x", pattern: "outbox.*.x", streamSubject: "outbox.>"},
		{name: "PlaceholderFirst", template: "{aggregate_type}.events", pattern: "*.events", streamSubject: ""},
		{name: "Empty", template: "", wantErr: "empty"},
		{name: "Unknown", template: "outbox.{table}", wantErr: `unknown placeholder "{table}"`},
		{name: "Unclosed", template: "outbox.{aggregate_type", wantErr: "not closed"},
		{name: "StrayBrace", template: "outbox}.x", wantErr: `'}' is not allowed`},
		{name: "Space", template: "out box.{aggregate_id}", wantErr: `' ' is not allowed`},
		{name: "Star", template: "outbox.*", wantErr: `'*' is not allowed`},
		{name: "Greater", template: "outbox.>", wantErr: `'>' is not allowed`},
		{name: "LeadingDot", template: ".outbox.{aggregate_id}", wantErr: "token 1 is empty"},
		{name: "TrailingDot", template: "outbox.{aggregate_id}.", wantErr: "token 3 is empty"},
		{name: "DoubleDot", template: "outbox..{aggregate_id}", wantErr: "token 2 is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseSubjectTemplate(tt.template)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSubjectTemplate(%q) = %v, want an error with %q", tt.template, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseSubjectTemplate(%q): %v", tt.template, err)
			}
			if tmpl.pattern != tt.pattern || tmpl.streamSubject() != tt.streamSubject {
				t.Errorf("parseSubjectTemplate(%q): pattern %q stream subject %q, want %q %q", tt.template, tmpl.pattern, tmpl.streamSubject(), tt.pattern, tt.streamSubject)
			}
		})
	}
}

func TestRenderSubject(t *testing.T) {
	ev := func(typ, id, evType string) *schema.Event {
		return &schema.Event{ID: "e1", AggregateType: typ, AggregateID: id, EventType: evType}
	}
	for _, tt := range []struct {
		name, template string
		ev             *schema.Event
		subject, dest  string // subject "" when it fails
		wantErr        string
	}{
		{name: "Default", template: DefaultSubject, ev: ev("order", "42", "Created"), subject: "outbox.order.42", dest: "outbox.order.*"},
		{name: "EventType", template: "outbox.{aggregate_type}.{event_type}", ev: ev("order", "42", "Created"), subject: "outbox.order.Created", dest: "outbox.order.Created"},
		{name: "Literal", template: "events", ev: ev("order", "42", "Created"), subject: "events", dest: "events"},
		{name: "IDInsideToken", template: "o.{aggregate_type}-{aggregate_id}", ev: ev("order", "42", "C"), subject: "o.order-42", dest: "o.order-*"},
		{name: "DotInID", template: DefaultSubject, ev: ev("order", "a.b", "C"), subject: "outbox.order.a.b", dest: "outbox.order.*"},
		{name: "UTF8", template: DefaultSubject, ev: ev("commande", "été", "C"), subject: "outbox.commande.été", dest: "outbox.commande.*"},
		{name: "EmptyID", template: DefaultSubject, ev: ev("order", "", "C"), wantErr: "empty token"},
		{name: "EmptyType", template: DefaultSubject, ev: ev("", "42", "C"), wantErr: `its aggregate_type is empty, and the subject template "outbox.{aggregate_type}.{aggregate_id}" names it`},
		{name: "EmptyEventType", template: "o.{event_type}", ev: ev("order", "42", ""), wantErr: "its event_type is empty"},
		{name: "TrailingDotInID", template: DefaultSubject, ev: ev("order", "a.", "C"), wantErr: "empty token"},
		{name: "DoubleDotInType", template: DefaultSubject, ev: ev("a..b", "1", "C"), wantErr: "empty token"},
		{name: "SpaceInID", template: DefaultSubject, ev: ev("order", "4 2", "C"), wantErr: `holds ' ' at byte 14`},
		{name: "TabInType", template: DefaultSubject, ev: ev("or\tder", "1", "C"), wantErr: `holds '\t'`},
		{name: "NewlineInEventType", template: "x.{event_type}", ev: ev("o", "1", "A\nB"), wantErr: `holds '\n'`},
		{name: "StarInID", template: DefaultSubject, ev: ev("order", "*", "C"), wantErr: `holds '*'`},
		{name: "GreaterInID", template: DefaultSubject, ev: ev("order", "a>b", "C"), wantErr: `holds '>'`},
		{name: "TooLong", template: DefaultSubject, ev: ev("order", strings.Repeat("x", maxSubjectLen), "C"), wantErr: "bytes long"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseSubjectTemplate(tt.template)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.subject(tt.ev)
			if tt.wantErr != "" {
				var pe *delivery.PermanentError
				if !errors.As(err, &pe) || pe.Reason != delivery.ReasonDestination || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("subject(%+v) = %q, %v; want a permanent %s error with %q", tt.ev, got, err, delivery.ReasonDestination, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.subject || tmpl.Label(tt.ev) != tt.dest {
				t.Errorf("subject(%+v) = %q, %v, destination %q; want %q, %q", tt.ev, got, err, tmpl.Label(tt.ev), tt.subject, tt.dest)
			}
		})
	}
}

func TestCheckFilter(t *testing.T) {
	for _, tt := range []struct {
		filter string
		ok     bool
	}{
		{"outbox.>", true},
		{"outbox.*.*", true},
		{">", true},
		{"a", true},
		{"", false},
		{"outbox.>.x", false},
		{"outbox..x", false},
		{".outbox", false},
		{"outbox.a*", false},
		{"out box", false},
	} {
		if err := checkFilter(tt.filter); (err == nil) != tt.ok {
			t.Errorf("checkFilter(%q) = %v, want ok %v", tt.filter, err, tt.ok)
		}
	}
}

func TestCovers(t *testing.T) {
	for _, tt := range []struct {
		filter, pattern string
		want            bool
	}{
		{"outbox.>", "outbox.*.*", true},
		{"outbox.>", "outbox.x", true},
		{"outbox.>", "outbox.>", true},
		{"outbox.>", "outbox", false}, // > needs a token
		{"outbox.*.*", "outbox.*.*", true},
		{"outbox.*.*", "outbox.a.b", true},
		{"outbox.*.*", "outbox.*", false},
		{"outbox.*.*", "outbox.*.*.*", false},
		{"outbox.*.*", "outbox.>", false},
		{"outbox.order.*", "outbox.*.*", false},
		{"outbox.*", "outbox.order", true},
		{"*.*", "outbox.*", true},
		{">", "a.b.c", true},
		{">", "outbox-relay-dlq", true},
		{"outbox-relay-dlq", "outbox-relay-dlq", true},
		{"dlq", "outbox-relay-dlq", false},
		{"other.>", "outbox.*.*", false},
		{"outbox", "outbox.*", false},
	} {
		if got := covers(tt.filter, tt.pattern); got != tt.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.filter, tt.pattern, got, tt.want)
		}
	}
}

func TestSubjectNamer(t *testing.T) {
	name, err := SubjectNamer("")
	if err != nil {
		t.Fatal(err)
	}
	got, err := name(&schema.Event{AggregateType: "order", AggregateID: "7"})
	if got != "outbox.order.7" || err != nil {
		t.Errorf("default namer = %q, %v; want outbox.order.7", got, err)
	}
	if _, err := name(&schema.Event{AggregateType: "order", AggregateID: "a b"}); err == nil {
		t.Error("default namer took an aggregate ID with a space")
	}
	if _, err := SubjectNamer("x.{nope}"); err == nil {
		t.Error("SubjectNamer took an unknown placeholder")
	}
}
