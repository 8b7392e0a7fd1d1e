package pgtest

import (
	"regexp"
	"strings"
	"testing"
)

func TestDatabaseName(t *testing.T) {
	valid := regexp.MustCompile(`^pgtest_[a-z0-9_]*_[0-9a-f]{8}$`)
	for _, test := range []string{
		"TestStream",
		"TestStream/restart_mid-transaction#01",
		"Test" + strings.Repeat("VeryLong/", 20),
		"Тест",
	} {
		name := databaseName(test)
		if !valid.MatchString(name) || len(name) > 63 || strings.Contains(name, "__") {
			t.Errorf("databaseName(%q) = %q, want a name matching %s of at most 63 bytes", test, name, valid)
		}
		if again := databaseName(test); again == name {
			t.Errorf("databaseName(%q) returned %q twice", test, name)
		}
	}
}
