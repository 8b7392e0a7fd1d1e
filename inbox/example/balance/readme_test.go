package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEShowsThisProgram checks that every Go block the README says
// is from this program's files is a verbatim part of the file, so that the
// README's example compiles and stays in sync with the program the e2e
// tests run.
func TestREADMEShowsThisProgram(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// A block is claimed by a mention of one of our files in the text just
	// before it (no other block between).
	block := regexp.MustCompile("(?s)`inbox/example/balance/([a-z_]+\\.go)`(?:[^`]|`[^`]|``[^`])*?```go\n(.*?)```")
	matches := block.FindAllStringSubmatch(string(readme), -1)
	if len(matches) < 2 {
		t.Fatalf("README shows %d blocks from inbox/example/balance, want the handler and the consumer", len(matches))
	}
	for _, m := range matches {
		src, err := os.ReadFile(m[1])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(src), m[2]) {
			t.Errorf("README's block from inbox/example/balance/%s is not part of the file; copy it again:\n%s", m[1], m[2])
		}
	}
}
