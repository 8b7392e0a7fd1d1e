package jsonscan

import "testing"

func TestValueEnd(t *testing.T) {
	tests := []struct {
		in   string
		want string // the value ValueEnd spans from the first byte
	}{
		{`"a\"b" ,`, `"a\"b"`},
		{`{"a": [1, {"b": "}"}]}, 2`, `{"a": [1, {"b": "}"}]}`},
		{`[]`, `[]`},
		{`-1.5e3}`, `-1.5e3`},
		{`true,`, `true`},
		{`null]`, `null`},
	}
	for _, tt := range tests {
		if got := tt.in[:ValueEnd([]byte(tt.in), 0)]; got != tt.want {
			t.Errorf("ValueEnd(%q) spans %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := ValueEnd([]byte(`"unterminated`), 0); got != len(`"unterminated`) {
		t.Errorf("ValueEnd of an unterminated string = %d, want the length", got)
	}
}

func TestUnquote(t *testing.T) {
	for in, want := range map[string]string{`"plain"`: "plain", `"a\"b\u00e9"`: `a"bé`, `""`: ""} {
		got, err := Unquote([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("Unquote(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestKindAndSpace(t *testing.T) {
	for in, want := range map[string]string{"{": "object", "[": "array", `"`: "string", "t": "boolean", "f": "boolean", "n": "null", "-": "number", "7": "number"} {
		if got := Kind(in[0]); got != want {
			t.Errorf("Kind(%q) = %s, want %s", in, got, want)
		}
	}
	if got := SkipSpace([]byte(" \t\r\n x"), 0); got != 5 {
		t.Errorf("SkipSpace = %d, want 5", got)
	}
}
