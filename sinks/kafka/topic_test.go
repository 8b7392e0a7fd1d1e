package kafka

import (
	"errors"
	"runtime"
	"testing"
	"unsafe"

	"github.com/outbox-relay/outbox-relay/schema"
)

// TestTopicCacheKeepsNoMessage maps a 50 MB event of a new aggregate type
// whose strings, as the stream's do, are views into its whole WAL message;
// the record is refused for its size. Once the event is dropped, the heap
// must give the message back: the topic cache keeps copies of its keys.
func TestTopicCacheKeepsNoMessage(t *testing.T) {
	const size = 50 << 20
	m := newTestMapper(t, "outbox.{aggregate_type}.{event_type}", DefaultMaxMessageBytes)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	func() {
		msg := make([]byte, size)
		copy(msg, "huge-aggregate-typeCreated")
		view := func(from, to int) string { return unsafe.String(&msg[from], to-from) }
		ev := &schema.Event{ID: "e-1", AggregateType: view(0, 19), EventType: view(19, 26), AggregateID: "a-1", Payload: msg[26:]}
		_, _, err := m.record(ev)
		var re *RecordError
		if !errors.As(err, &re) || re.Reason != ReasonSize {
			t.Fatalf("record(50 MB event) error %v, want a RecordError of reason %q", err, ReasonSize)
		}
	}()
	after := heap()
	if len(m.topics.topics) != 1 {
		t.Fatalf("topic cache holds %d topics, want the new one cached", len(m.topics.topics))
	}
	if grown := int64(after) - int64(before); grown > size/2 {
		t.Errorf("heap grew by %d MB after the event was dropped: the topic cache pins its WAL message", grown>>20)
	}
	runtime.KeepAlive(m)
}
