package redis

import (
	"strings"
	"testing"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestTemplate(t *testing.T) {
	ev := &schema.Event{AggregateType: "Order", EventType: "Placed", AggregateID: "o-1"}
	for _, tc := range []struct {
		template, key, dest string
	}{
		{DefaultStream, "outbox.Order", "outbox.Order"},
		{"events", "events", "events"},
		{"{aggregate_type}", "Order", "Order"},
		{"{aggregate_type}:{event_type}", "Order:Placed", "Order:Placed"},
		{"outbox.{aggregate_type}.{aggregate_id}", "outbox.Order.o-1", "outbox.Order.*"},
		{"{aggregate_id}", "o-1", "*"},
		{"a b\x00c/{event_type}", "a b\x00c/Placed", "a b\x00c/Placed"},
	} {
		t.Run(tc.template, func(t *testing.T) {
			tmpl, err := parseTemplate(tc.template)
			if err != nil {
				t.Fatalf("parseTemplate(%q): %v", tc.template, err)
			}
			key, dest := tmpl.Render(ev), tmpl.Label(ev)
			if key != tc.key || dest != tc.dest {
				t.Errorf("Render, Label of %q = %q, %q; want %q, %q", tc.template, key, dest, tc.key, tc.dest)
			}
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, tc := range []struct {
		name, template, want string
	}{
		{"empty", "", "is empty"},
		{"unknown placeholder", "outbox.{aggregate}", `unknown placeholder "{aggregate}"`},
		{"unclosed", "outbox.{aggregate_type", "is not a placeholder"},
		{"closing brace alone", "outbox}", "is not a placeholder"},
		{"hash tag", "{outbox}.{aggregate_type}", `unknown placeholder "{outbox}"`},
		{"nested", "{{aggregate_type}}", "unknown placeholder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTemplate(tc.template)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseTemplate(%q) = %v, want an error with %q", tc.template, err, tc.want)
			}
		})
	}
}
