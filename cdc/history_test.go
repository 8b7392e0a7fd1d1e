package cdc

import (
	"errors"
	"testing"
	"time"
)

func TestIdentityFollows(t *testing.T) {
	first := identity{SystemID: "7301", Timeline: 1}
	tests := []struct {
		name string
		cur  identity
		want error
	}{
		{"same server", identity{SystemID: "7301", Timeline: 1}, nil},
		{"another system", identity{SystemID: "7999", Timeline: 1}, ErrSystemChanged},
		{"promoted standby", identity{SystemID: "7301", Timeline: 2}, ErrSystemChanged},
		{"another system and timeline", identity{SystemID: "7999", Timeline: 3}, ErrSystemChanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := first.follows(tt.cur, "s", 0x100)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("follows(%+v) = %v, want %v", tt.cur, err, tt.want)
			}
			if err != nil && !permanent(err) {
				t.Errorf("permanent(%v) = false, want true", err)
			}
		})
	}
}

func TestSilenceFor(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"60s", time.Minute, false},
		{"1min", time.Minute, false},
		{"5s", 5 * time.Second, false},
		{"500ms", 500 * time.Millisecond, false},
		{"2500", 2500 * time.Millisecond, false},
		{"0", defaultSilence, false},
		{"1h", time.Hour, false},
		{"x", 0, true},
		{"5parsecs", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := silenceFor(tt.in)
			if got != tt.want || (err != nil) != tt.err {
				t.Errorf("silenceFor(%q) = %s, %v; want %s, error %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}
