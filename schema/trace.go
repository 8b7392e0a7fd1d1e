package schema

import (
	"context"
	"maps"
)

// Names of the W3C Trace Context headers (https://www.w3.org/TR/trace-context/)
// that Insert writes into a row's headers, and that the relay then carries
// as Kafka record headers of the same names, so that a consumer continues
// the writer's trace.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

type traceKey struct{}

type traceContext struct{ parent, state string }

// ContextWithTrace returns a copy of ctx that carries a W3C trace context:
// Insert and InsertSQL, given the returned context, write traceparent and
// tracestate into the headers of each message. An invalid traceparent
// returns ctx unchanged; an invalid tracestate (not printable ASCII) is
// dropped. Use it where the trace context arrives as text, such as an
// incoming HTTP request's traceparent header; with OpenTelemetry, set
// Outbox.Trace instead.
func ContextWithTrace(ctx context.Context, traceparent, tracestate string) context.Context {
	if !validTraceparent(traceparent) {
		return ctx
	}
	if !validTracestate(tracestate) {
		tracestate = ""
	}
	return context.WithValue(ctx, traceKey{}, traceContext{traceparent, tracestate})
}

// TraceFromContext returns the trace context ContextWithTrace put in ctx,
// or empty strings. It is the trace source of an Outbox whose Trace is nil.
func TraceFromContext(ctx context.Context) (traceparent, tracestate string) {
	tc, _ := ctx.Value(traceKey{}).(traceContext)
	return tc.parent, tc.state
}

// traced returns msgs with the trace context of ctx added to the headers of
// each message that has no traceparent header of its own. It copies what
// it changes, never the caller's slice or maps. It returns msgs itself when
// there is no valid trace context, or when the table has no headers column:
// tracing is best effort and never makes an insert fail.
func (o Outbox) traced(ctx context.Context, msgs []Message) []Message {
	if o.Columns != (Columns{}) && o.Columns.Headers == "" {
		return msgs
	}
	trace := o.Trace
	if trace == nil {
		trace = TraceFromContext
	}
	parent, state := trace(ctx)
	if !validTraceparent(parent) {
		return msgs
	}
	if !validTracestate(state) {
		state = ""
	}
	out := make([]Message, len(msgs))
	for i, m := range msgs {
		out[i] = m
		if _, ok := m.Headers[HeaderTraceparent]; ok {
			continue
		}
		h := make(map[string]string, len(m.Headers)+2)
		maps.Copy(h, m.Headers)
		h[HeaderTraceparent] = parent
		if _, ok := h[HeaderTracestate]; !ok && state != "" {
			h[HeaderTracestate] = state
		}
		out[i].Headers = h
	}
	return out
}

// validTraceparent reports whether s is a W3C traceparent:
// version-traceid-parentid-flags in lower-case hex, as in
// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01. The trace and
// parent IDs must not be all zeros and version ff is invalid. Version 00 is
// exactly 55 characters; a later version may append "-" and more fields.
func validTraceparent(s string) bool {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	version, traceID, parentID, flags := s[0:2], s[3:35], s[36:52], s[53:55]
	if !lowerHex(version) || version == "ff" || !lowerHex(flags) ||
		!lowerHex(traceID) || allZeros(traceID) || !lowerHex(parentID) || allZeros(parentID) {
		return false
	}
	if version == "00" {
		return len(s) == 55
	}
	return len(s) == 55 || s[55] == '-'
}

// validTracestate reports whether s can travel as a header value: printable
// ASCII, as the W3C tracestate grammar requires. Its list members are not
// parsed; the empty string is valid.
func validTracestate(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func lowerHex(s string) bool {
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZeros(s string) bool {
	for i := range len(s) {
		if s[i] != '0' {
			return false
		}
	}
	return true
}
