package delivery_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

func TestPlaceholders(t *testing.T) {
	for _, tt := range []struct {
		fields delivery.Fields
		want   string
	}{
		{0, ""},
		{delivery.FieldEventType, "{event_type}"},
		{delivery.FieldAggregateType | delivery.FieldEventType, "{aggregate_type} and {event_type}"},
		{delivery.FieldAggregateType | delivery.FieldAggregateID, "{aggregate_type} and {aggregate_id}"},
		{delivery.AllFields, "{aggregate_type}, {event_type} and {aggregate_id}"},
	} {
		if got := tt.fields.Placeholders(); got != tt.want {
			t.Errorf("Fields(%d).Placeholders() = %q, want %q", tt.fields, got, tt.want)
		}
	}
}

func TestTemplateRender(t *testing.T) {
	ev := &schema.Event{AggregateType: "Order", EventType: "Placed", AggregateID: "o-1"}
	for _, tt := range []struct {
		template, render, label string
		uses                    delivery.Fields
	}{
		{"", "", "", 0},
		{"events", "events", "events", 0},
		{"outbox.{aggregate_type}", "outbox.Order", "outbox.Order", delivery.FieldAggregateType},
		{"{aggregate_type}.{event_type}.v1", "Order.Placed.v1", "Order.Placed.v1", delivery.FieldAggregateType | delivery.FieldEventType},
		{"outbox.{aggregate_type}.{aggregate_id}", "outbox.Order.o-1", "outbox.Order.*", delivery.FieldAggregateType | delivery.FieldAggregateID},
		{"{aggregate_id}", "o-1", "*", delivery.FieldAggregateID},
		{"{aggregate_id}-{aggregate_id}", "o-1-o-1", "*-*", delivery.FieldAggregateID},
		{"a}b/{event_type}", "a}b/Placed", "a}b/Placed", delivery.FieldEventType},
	} {
		t.Run(tt.template, func(t *testing.T) {
			tmpl, err := delivery.ParseTemplate(tt.template, delivery.TemplateSyntax{Fields: delivery.AllFields})
			if err != nil {
				t.Fatalf("ParseTemplate(%q): %v", tt.template, err)
			}
			if got := tmpl.Render(ev); got != tt.render {
				t.Errorf("Render = %q, want %q", got, tt.render)
			}
			if got := tmpl.Label(ev); got != tt.label {
				t.Errorf("Label = %q, want %q", got, tt.label)
			}
			if tmpl.String() != tt.template {
				t.Errorf("String = %q, want %q", tmpl.String(), tt.template)
			}
			for _, f := range []delivery.Fields{delivery.FieldAggregateType, delivery.FieldEventType, delivery.FieldAggregateID} {
				if got, want := tmpl.Uses(f), tt.uses&f != 0; got != want {
					t.Errorf("Uses(%s) = %v, want %v", f.Placeholders(), got, want)
				}
			}
			if got, want := tmpl.Literal(), tt.uses == 0; got != want {
				t.Errorf("Literal = %v, want %v", got, want)
			}
		})
	}
}

// TestTemplateUnfilled checks that a template naming a field the event
// leaves empty says which, and that one not naming it, or an event that
// fills it, passes.
func TestTemplateUnfilled(t *testing.T) {
	full := &schema.Event{ID: "e-1", AggregateType: "Order", EventType: "Placed", AggregateID: "o-1"}
	noType := &schema.Event{ID: "e-2", EventType: "Placed", AggregateID: "o-1"}
	noEvent := &schema.Event{ID: "e-3", AggregateType: "Order", AggregateID: "o-1"}
	for _, tt := range []struct {
		template string
		ev       *schema.Event
		want     string // in the error; empty for none
	}{
		{"outbox.{aggregate_type}", full, ""},
		{"outbox.{aggregate_type}", noType, `event e-2: its aggregate_type is empty, and the topic template "outbox.{aggregate_type}" names it`},
		{"outbox.{aggregate_type}", noEvent, ""},
		{"{aggregate_type}.{event_type}", noEvent, "its event_type is empty"},
		{"events", noType, ""},
		{"{aggregate_id}", noType, ""},
	} {
		tmpl, err := delivery.ParseTemplate(tt.template, delivery.TemplateSyntax{Fields: delivery.AllFields})
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", tt.template, err)
		}
		err = tmpl.Unfilled(tt.ev, "topic")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q.Unfilled(%s) = %v, want nil", tt.template, tt.ev.ID, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q.Unfilled(%s) = %v, want an error saying %q", tt.template, tt.ev.ID, err, tt.want)
		}
	}
}

func TestTemplateLiteralLen(t *testing.T) {
	for _, tt := range []struct {
		template string
		want     int
	}{
		{"", 0},
		{"outbox", 6},
		{"{event_type}", 0},
		{"outbox.{aggregate_type}.v1", 10},
	} {
		tmpl, err := delivery.ParseTemplate(tt.template, delivery.TemplateSyntax{Fields: delivery.AllFields})
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", tt.template, err)
		}
		if got := tmpl.LiteralLen(); got != tt.want {
			t.Errorf("ParseTemplate(%q).LiteralLen() = %d, want %d", tt.template, got, tt.want)
		}
	}
}

func TestParseTemplateErrors(t *testing.T) {
	errDigit := errors.New("digits are not allowed")
	noDigits := func(lit string) error {
		if strings.ContainsAny(lit, "0123456789") {
			return errDigit
		}
		return nil
	}
	twoFields := delivery.FieldAggregateType | delivery.FieldEventType
	for _, tt := range []struct {
		name     string
		template string
		syntax   delivery.TemplateSyntax
		want     string // "" for no error
	}{
		{"unknown", "outbox.{table}", delivery.TemplateSyntax{Fields: delivery.AllFields},
			`unknown placeholder "{table}"; the allowed placeholders are {aggregate_type}, {event_type} and {aggregate_id}`},
		{"not allowed", "outbox.{aggregate_id}", delivery.TemplateSyntax{Fields: twoFields},
			`unknown placeholder "{aggregate_id}"; the allowed placeholders are {aggregate_type} and {event_type}`},
		{"case matters", "{Aggregate_Type}", delivery.TemplateSyntax{Fields: twoFields}, `unknown placeholder "{Aggregate_Type}"`},
		{"empty placeholder", "{}", delivery.TemplateSyntax{Fields: twoFields}, `unknown placeholder "{}"`},
		{"nested", "{{aggregate_type}}", delivery.TemplateSyntax{Fields: twoFields}, `unknown placeholder "{{aggregate_type}"`},
		{"not closed", "outbox.{aggregate_type", delivery.TemplateSyntax{Fields: twoFields},
			`"{aggregate_type" is not closed; the allowed placeholders are {aggregate_type} and {event_type}`},
		{"closing brace is text", "a}b", delivery.TemplateSyntax{Fields: twoFields}, ""},
		{"strict: closing brace", "a}b{event_type}", delivery.TemplateSyntax{Fields: twoFields, StrictBraces: true},
			`"}b{event_type}" is not a placeholder; the allowed placeholders are {aggregate_type} and {event_type}, and braces are allowed nowhere else`},
		{"strict: not closed", "a{event_type", delivery.TemplateSyntax{Fields: twoFields, StrictBraces: true},
			`"{event_type" is not a placeholder`},
		{"strict: unknown", "{x}", delivery.TemplateSyntax{Fields: twoFields, StrictBraces: true}, `unknown placeholder "{x}"`},
		{"literal refused", "v1.{event_type}", delivery.TemplateSyntax{Fields: twoFields, Literal: noDigits}, errDigit.Error()},
		{"literal after a placeholder", "{event_type}.v1", delivery.TemplateSyntax{Fields: twoFields, Literal: noDigits}, errDigit.Error()},
		// The first fault is reported: a refused literal before an
		// unknown placeholder, and the reverse.
		{"literal first", "v1.{x}", delivery.TemplateSyntax{Fields: twoFields, Literal: noDigits}, errDigit.Error()},
		{"placeholder first", "{x}.v1", delivery.TemplateSyntax{Fields: twoFields, Literal: noDigits}, `unknown placeholder "{x}"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := delivery.ParseTemplate(tt.template, tt.syntax)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("ParseTemplate(%q) = %v, want nil", tt.template, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ParseTemplate(%q) = %v, want an error with %q", tt.template, err, tt.want)
			}
		})
	}
}

// TestTemplateRenderProperty checks Render and Label against a plain
// replacement of the placeholders, for any template without braces in its
// text and any event.
func TestTemplateRenderProperty(t *testing.T) {
	pieces := []string{"{aggregate_type}", "{event_type}", "{aggregate_id}", "a", ".", "-", "é", " "}
	rapid.Check(t, func(t *rapid.T) {
		parts := rapid.SliceOf(rapid.SampledFrom(pieces)).Draw(t, "parts")
		s := strings.Join(parts, "")
		ev := &schema.Event{
			AggregateType: rapid.String().Draw(t, "aggregate_type"),
			EventType:     rapid.String().Draw(t, "event_type"),
			AggregateID:   rapid.String().Draw(t, "aggregate_id"),
		}
		tmpl, err := delivery.ParseTemplate(s, delivery.TemplateSyntax{Fields: delivery.AllFields, StrictBraces: true})
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", s, err)
		}
		replace := func(id string) string {
			return strings.NewReplacer("{aggregate_type}", ev.AggregateType, "{event_type}", ev.EventType, "{aggregate_id}", id).Replace(s)
		}
		if diff := cmp.Diff(replace(ev.AggregateID), tmpl.Render(ev)); diff != "" {
			t.Errorf("Render of %q mismatch (-want +got):\n%s", s, diff)
		}
		if diff := cmp.Diff(replace("*"), tmpl.Label(ev)); diff != "" {
			t.Errorf("Label of %q mismatch (-want +got):\n%s", s, diff)
		}
	})
}
