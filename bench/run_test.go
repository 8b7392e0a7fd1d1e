package main

import "testing"

// TestCeiling checks that of pg_recvlogical's drains the faster is the
// ceiling, with its own CPU figures, and that every drain is listed.
func TestCeiling(t *testing.T) {
	slow := drain{seconds: 10.5, cpu: 3, walsender: 7, busy: 0.9}
	fast := drain{seconds: 5.25, cpu: 2, walsender: 5, busy: 0.6}
	for _, tc := range []struct {
		name   string
		drains []drain
		want   drain
		text   string
	}{
		{"slower after", []drain{fast, slow}, fast, "5.25 / 10.50"},
		{"faster after", []drain{slow, fast}, fast, "10.50 / 5.25"},
		{"one drain", []drain{slow}, slow, "10.50"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := workload{name: "W2"}.newResult(1)
			r.drains = tc.drains
			if got := r.ceiling(); got != tc.want {
				t.Errorf("ceiling() = %+v, want %+v", got, tc.want)
			}
			if s := r.drainsText(); s != tc.text {
				t.Errorf("drainsText() = %q, want %q", s, tc.text)
			}
		})
	}
	none := workload{name: "W3"}.newResult(1)
	if s := none.drainsText(); s != "n/a" {
		t.Errorf("drainsText() without drains = %q, want n/a", s)
	}
	if c := none.ceiling(); c != (drain{seconds: -1, cpu: -1, walsender: -1, busy: -1}) {
		t.Errorf("ceiling() without drains = %+v, want every figure -1", c)
	}
	if r := none.ratio(); r != -1 {
		t.Errorf("ratio() without drains = %v, want -1", r)
	}
}
