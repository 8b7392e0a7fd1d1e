package pgtest

import (
	"slices"
	"testing"
)

func TestParseVersion(t *testing.T) {
	for _, tt := range []struct {
		dir  string
		want []int
		ok   bool
	}{
		{"15", []int{15}, true},
		{"9.6", []int{9, 6}, true},
		{"16beta", nil, false},
		{"", nil, false},
	} {
		got, ok := parseVersion(tt.dir)
		if !slices.Equal(got, tt.want) || ok != tt.ok {
			t.Errorf("parseVersion(%q) = %v, %v, want %v, %v", tt.dir, got, ok, tt.want, tt.ok)
		}
	}
	if a, _ := parseVersion("9.6"); slices.Compare(a, []int{15}) >= 0 {
		t.Error("version 9.6 sorts after 15")
	}
}
