package pgtest

import (
	"net/url"
	"testing"
)

func TestWithDatabase(t *testing.T) {
	for _, tt := range []struct {
		dsn, database, want string
	}{
		{"postgres://u:pw@db:5433/app?sslmode=require", "t1", "postgres://u:pw@db:5433/t1?sslmode=require"},
		{"postgresql://u@db/app", "", "postgresql://u@db/app"},
		{"postgres://u@db", "t1", "postgres://u@db/t1"},
		{"host=db user=u dbname=app", "t1", "host=db user=u dbname=app dbname='t1'"},
		{"host=db", `it's`, `host=db dbname='it\'s'`},
	} {
		r := &remote{dsn: tt.dsn}
		if u, err := url.Parse(tt.dsn); err == nil && u.Scheme != "" {
			r.url = u
		}
		if got := r.withDatabase(tt.database); got != tt.want {
			t.Errorf("withDatabase(%q, %q) = %q, want %q", tt.dsn, tt.database, got, tt.want)
		}
	}
}
