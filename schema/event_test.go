package schema_test

import (
	"bytes"
	"cmp"
	"testing"

	"github.com/jackc/pglogrepl"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestPositionText(t *testing.T) {
	tests := []struct {
		name string
		pos  schema.Position
		want string
	}{
		{"zero", schema.Position{}, "000000000000000000000000"},
		{"lsn and index", schema.Position{CommitLSN: 0x16B3748, Index: 2}, "00000000016b374800000002"},
		{"high lsn", schema.Position{CommitLSN: pglogrepl.LSN(0xABCDEF0123456789), Index: 0}, "abcdef012345678900000000"},
		{"max", schema.Position{CommitLSN: pglogrepl.LSN(^uint64(0)), Index: ^uint32(0)}, "ffffffffffffffffffffffff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.pos.String(); got != tt.want {
				t.Errorf("%+v.String() = %q, want %q", tt.pos, got, tt.want)
			}
			if got := string(tt.pos.AppendText([]byte("pos="))); got != "pos="+tt.want {
				t.Errorf("%+v.AppendText(\"pos=\") = %q, want %q", tt.pos, got, "pos="+tt.want)
			}
			if len(tt.want) != schema.PositionLen {
				t.Fatalf("len(%q) = %d, want PositionLen %d", tt.want, len(tt.want), schema.PositionLen)
			}
			got, err := schema.ParsePosition(tt.want)
			if err != nil {
				t.Fatalf("ParsePosition(%q): %v", tt.want, err)
			}
			if got != tt.pos {
				t.Errorf("ParsePosition(%q) = %+v, want %+v", tt.want, got, tt.pos)
			}
		})
	}
}

func TestParsePositionErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"one short", "00000000016b37480000000"},
		{"one long", "00000000016b3748000000020"},
		{"lsn only", "00000000016b3748"},
		{"pg lsn form", "0/16B3748"},
		{"non-hex letter", "00000000016b37480000000g"},
		{"space", "00000000016b3748 0000002"},
		{"0x prefix", "0x000000016b374800000002"},
		{"sign", "-00000000016b37480000002"},
		{"multibyte", "00000000016b3748000000é"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := schema.ParsePosition(tt.in)
			if err == nil {
				t.Fatalf("ParsePosition(%q) = %+v, want error", tt.in, got)
			}
			if got != (schema.Position{}) {
				t.Errorf("ParsePosition(%q) = %+v with error, want zero Position", tt.in, got)
			}
		})
	}
}

// positionGen draws positions that often share a commit LSN, so that ties
// on the LSN (ordered by Index) are exercised as much as distinct LSNs.
func positionGen() *rapid.Generator[schema.Position] {
	return rapid.Custom(func(t *rapid.T) schema.Position {
		lsn := rapid.OneOf(
			rapid.Uint64Range(0, 3),
			rapid.Uint64(),
			rapid.SampledFrom([]uint64{^uint64(0), 1 << 63, 1<<32 - 1, 1 << 32}),
		).Draw(t, "lsn")
		idx := rapid.OneOf(
			rapid.Uint32Range(0, 3),
			rapid.Uint32(),
			rapid.SampledFrom([]uint32{^uint32(0), 1 << 31}),
		).Draw(t, "index")
		return schema.Position{CommitLSN: pglogrepl.LSN(lsn), Index: idx}
	})
}

// comparePositions orders positions by (CommitLSN, Index), independently of
// Position.Less.
func comparePositions(p, q schema.Position) int {
	return cmp.Or(cmp.Compare(p.CommitLSN, q.CommitLSN), cmp.Compare(p.Index, q.Index))
}

func TestPositionOrderProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := positionGen()
		p := gen.Draw(t, "p")
		q := gen.Draw(t, "q")
		if rapid.Bool().Draw(t, "same lsn") {
			q.CommitLSN = p.CommitLSN
		}
		pt, qt := p.AppendText(nil), q.AppendText(nil)

		want := comparePositions(p, q)
		if got := bytes.Compare(pt, qt); got != want {
			t.Fatalf("bytes.Compare(%s, %s) = %d, want %d (order of %+v and %+v)", pt, qt, got, want, p, q)
		}
		if got := p.Less(q); got != (want < 0) {
			t.Fatalf("%+v.Less(%+v) = %v, want %v", p, q, got, want < 0)
		}
		if got := q.Less(p); got != (want > 0) {
			t.Fatalf("%+v.Less(%+v) = %v, want %v", q, p, got, want > 0)
		}
		for _, x := range []schema.Position{p, q} {
			s := x.String()
			if len(s) != schema.PositionLen {
				t.Fatalf("len(%+v.String()) = %d, want %d", x, len(s), schema.PositionLen)
			}
			got, err := schema.ParsePosition(s)
			if err != nil {
				t.Fatalf("ParsePosition(%q): %v", s, err)
			}
			if got != x {
				t.Fatalf("ParsePosition(%q) = %+v, want %+v", s, got, x)
			}
		}
	})
}
