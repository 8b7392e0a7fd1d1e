package schema_test

import (
	"testing"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestParseTable(t *testing.T) {
	tests := []struct {
		in      string
		want    schema.Table
		wantErr bool
	}{
		{in: "outbox", want: schema.Table{Schema: "public", Name: "outbox"}},
		{in: "public.outbox", want: schema.Table{Schema: "public", Name: "outbox"}},
		{in: "a.b", want: schema.Table{Schema: "a", Name: "b"}},
		{in: "Events.OutBox", want: schema.Table{Schema: "Events", Name: "OutBox"}},
		{in: "", wantErr: true},
		{in: "a.", wantErr: true},
		{in: ".b", wantErr: true},
		{in: ".", wantErr: true},
		{in: "a.b.c", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := schema.ParseTable(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseTable(%q) = %+v, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTable(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseTable(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if tt.want.Schema+"."+tt.want.Name != got.String() {
				t.Errorf("ParseTable(%q).String() = %q, want %q", tt.in, got.String(), tt.want.Schema+"."+tt.want.Name)
			}
		})
	}
}

func TestParseTableString(t *testing.T) {
	// String is the qualified form, which ParseTable reads back.
	for _, tbl := range []schema.Table{schema.DefaultTable, {Schema: "app", Name: "Events"}} {
		got, err := schema.ParseTable(tbl.String())
		if err != nil {
			t.Fatalf("ParseTable(%q): %v", tbl.String(), err)
		}
		if got != tbl {
			t.Errorf("ParseTable(%q) = %+v, want %+v", tbl.String(), got, tbl)
		}
	}
}

func TestTableQuoted(t *testing.T) {
	tests := []struct {
		name string
		tbl  schema.Table
		want string
	}{
		{"default", schema.DefaultTable, `"public"."outbox"`},
		{"upper case kept", schema.Table{Schema: "App", Name: "OutBox"}, `"App"."OutBox"`},
		{"double quotes doubled", schema.Table{Schema: `my"schema`, Name: `"outbox"`}, `"my""schema"."""outbox"""`},
		{"dot inside a name", schema.Table{Schema: "a.b", Name: "c"}, `"a.b"."c"`},
		{"space and single quote", schema.Table{Schema: "public", Name: "it's an outbox"}, `"public"."it's an outbox"`},
		{"sql injection", schema.Table{Schema: "public", Name: `x"; DROP TABLE t; --`}, `"public"."x""; DROP TABLE t; --"`},
		{"unicode", schema.Table{Schema: "public", Name: "ausgänge"}, `"public"."ausgänge"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tbl.Quoted(); got != tt.want {
				t.Errorf("%+v.Quoted() = %s, want %s", tt.tbl, got, tt.want)
			}
		})
	}
}
