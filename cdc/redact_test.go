package cdc

import (
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"postgres://u:secret@h:5432/db", "postgres://u:xxxxx@h:5432/db"},
		{"postgresql://u@h/db?password=secret&sslmode=require", "postgresql://u@h/db?password=xxxxx&sslmode=require"},
		{"postgres://u@h/db?sslpassword=secret", "postgres://u@h/db?sslpassword=xxxxx"},
		{"host=h user=u password=secret dbname=db", "host=h user=u password=xxxxx dbname=db"},
		{"host=h password='se cret' sslpassword=secret", "host=h password=xxxxx sslpassword=xxxxx"},
		{"postgres://u@h/db", "postgres://u@h/db"},
	}
	for _, tt := range tests {
		got := RedactDSN(tt.dsn)
		if got != tt.want || strings.Contains(got, "secret") {
			t.Errorf("RedactDSN(%q) = %q, want %q", tt.dsn, got, tt.want)
		}
	}
}
