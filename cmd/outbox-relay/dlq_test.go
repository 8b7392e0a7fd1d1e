package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

func TestChooseLetters(t *testing.T) {
	letters := []*kafka.Letter{
		{Partition: 0, Offset: 0, Kind: kafka.KindRelay, ID: "a"},
		{Partition: 0, Offset: 1, Kind: kafka.KindRelay, ID: "b"},
		{Partition: 1, Offset: 0, Kind: kafka.KindInbox, ID: "c"},
		{Partition: 1, Offset: 1, Kind: kafka.KindRelay, ID: "a"}, // a dead-lettered again
		{Partition: 2, Offset: 5, Kind: kafka.KindUnknown},
	}
	tests := []struct {
		name string
		ro   dlqOptions
		want []string // Where of each chosen letter
		err  string   // part of the usage error; empty for none
	}{
		{"all, each event once", dlqOptions{all: true}, []string{"0/1", "1/0", "1/1", "2/5"}, ""},
		{"id: its last dead letter", dlqOptions{ids: stringList{"a"}}, []string{"1/1"}, ""},
		{"ids", dlqOptions{ids: stringList{"c", "b"}}, []string{"0/1", "1/0"}, ""},
		{"partition/offset", dlqOptions{offs: stringList{"0/0"}}, []string{"0/0"}, ""},
		{"offset of one partition", dlqOptions{offs: stringList{"5"}}, []string{"2/5"}, ""},
		{"offset of several partitions", dlqOptions{offs: stringList{"1"}}, nil, "give PARTITION/OFFSET"},
		{"unknown id", dlqOptions{ids: stringList{"zz"}}, nil, "--id zz: no dead letter"},
		{"unknown offset", dlqOptions{offs: stringList{"3/1"}}, nil, "holds no dead letter there"},
		{"bad offset", dlqOptions{offs: stringList{"x/1"}}, nil, "use PARTITION/OFFSET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseLetters(letters, tt.ro, "dead")
			var ue usageError
			if tt.err != "" {
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("chooseLetters = %v, want a usage error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var where []string
			for _, l := range got {
				where = append(where, l.Where())
			}
			if diff := cmp.Diff(tt.want, where); diff != "" {
				t.Errorf("chosen (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 2, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"2026-05-01T12:00:00Z": now.Add(-24 * time.Hour),
		"36h":                  now.Add(-36 * time.Hour),
		"1d":                   now.Add(-24 * time.Hour),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	var ue usageError
	if _, err := parseSince("yesterday", now); !errors.As(err, &ue) {
		t.Errorf("parseSince(yesterday) = %v, want a usage error", err)
	}
}
