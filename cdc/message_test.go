package cdc

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
)

// messageMsg builds a Message as pgoutput protocol version 1 sends it.
func messageMsg(flags uint8, lsn pglogrepl.LSN, prefix string, content []byte) []byte {
	return wire{msgMessage}.u8(flags).u64(uint64(lsn)).str(prefix).u32(uint32(len(content))).raw(content)
}

const sampleContent = `{"id":"0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f","aggregate_type":"order","aggregate_id":"order-42","event_type":"OrderPlaced","payload":{"total":12.5}}`

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want message
	}{
		{
			name: "transactional",
			msg:  messageMsg(1, 0x1_6B3748, "outbox", []byte(sampleContent)),
			want: message{Transactional: true, LSN: 0x1_6B3748, Prefix: []byte("outbox"), Content: []byte(sampleContent)},
		},
		{
			name: "non-transactional",
			msg:  messageMsg(0, 0x80000001_00000002, "audit", []byte("hello")),
			want: message{LSN: 0x80000001_00000002, Prefix: []byte("audit"), Content: []byte("hello")},
		},
		{
			name: "empty prefix and content",
			msg:  messageMsg(1, 7, "", nil),
			want: message{Transactional: true, LSN: 7, Prefix: []byte{}, Content: []byte{}},
		},
		{
			name: "content with NUL bytes",
			msg:  messageMsg(1, 7, "outbox", []byte("a\x00b")),
			want: message{Transactional: true, LSN: 7, Prefix: []byte("outbox"), Content: []byte("a\x00b")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeMessage(tt.msg)
			if err != nil {
				t.Fatalf("decodeMessage(%s) = %v", hx(tt.msg), err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decodeMessage(%s) mismatch (-want +got):\n%s", hx(tt.msg), diff)
			}
			// Prefix and content alias the message and cannot grow into
			// what follows them.
			if len(got.Prefix) > 0 && !within(tt.msg, &got.Prefix[0], len(got.Prefix)) {
				t.Errorf("prefix does not alias the message")
			}
			if cap(got.Prefix) != len(got.Prefix) || cap(got.Content) != len(got.Content) {
				t.Errorf("prefix cap %d len %d, content cap %d len %d: want capped slices", cap(got.Prefix), len(got.Prefix), cap(got.Content), len(got.Content))
			}
		})
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	good := messageMsg(1, 0x16B3748, "outbox", []byte(sampleContent))
	checkPrefixes(t, "decodeMessage", good, func(b []byte) error { _, err := decodeMessage(b); return err })

	tests := []struct {
		name string
		msg  []byte
		why  string
	}{
		{"unknown flag", messageMsg(3, 1, "outbox", nil), "unknown flags 0x3"},
		{"no prefix terminator", wire{msgMessage}.u8(1).u64(1).raw([]byte("outbox")), "prefix"},
		{"no content length", wire{msgMessage}.u8(1).u64(1).str("outbox").u16(0), "content length"},
		{"content shorter than its length", wire{msgMessage}.u8(1).u64(1).str("outbox").u32(10).raw([]byte("abc")), "10 content bytes"},
		{"content length past int32", wire{msgMessage}.u8(1).u64(1).str("outbox").u32(0xFFFFFFFF).raw([]byte("abc")), "4294967295 content bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call := fmt.Sprintf("decodeMessage(%s)", hx(tt.msg))
			err := noPanic(t, call, func() error { _, err := decodeMessage(tt.msg); return err })
			wantDecodeError(t, call, err, msgMessage, tt.why)
		})
	}
}

func TestDecodeMessageAllocs(t *testing.T) {
	b := messageMsg(1, 0x16B3748, "outbox", []byte(sampleContent))
	if n := testing.AllocsPerRun(100, func() {
		if _, err := decodeMessage(b); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("decodeMessage allocates %v times per message, want 0", n)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(messageMsg(1, 0x16B3748, "outbox", []byte(sampleContent)))
	f.Add(messageMsg(0, 1, "", nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if len(m.Prefix)+len(m.Content) > len(b) {
			t.Errorf("decodeMessage(%s): prefix and content hold %d bytes of a %d-byte message", hx(b), len(m.Prefix)+len(m.Content), len(b))
		}
	})
}
