// Package jsonscan walks JSON text that is known to be valid without
// decoding it, so that the header and message scanners of the relay find
// members and their spans without allocating. Every function expects valid
// JSON (checked first, e.g. with json.Valid) and an index at the start of a
// value; on other input it returns an index within b, never past its end.
package jsonscan

import (
	"bytes"
	"encoding/json"
)

// SkipSpace returns the index of the first byte at or after i in b that is
// not JSON white space, or len(b).
func SkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// StringEnd returns the index just past the JSON string starting at b[i].
func StringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// ValueEnd returns the index just past the JSON value starting at b[i].
func ValueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return StringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = StringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return len(b)
	}
}

// Unquote returns the text of the JSON string s, quotes included in s. It
// aliases s when s has no escapes, and decodes a copy otherwise.
func Unquote(s []byte) ([]byte, error) {
	if bytes.IndexByte(s, '\\') < 0 {
		return s[1 : len(s)-1 : len(s)-1], nil
	}
	var str string
	if err := json.Unmarshal(s, &str); err != nil {
		return nil, err
	}
	return []byte(str), nil
}

// Kind names the kind of the JSON value whose first byte is c: object,
// array, string, boolean, null or number.
func Kind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}
