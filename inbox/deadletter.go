package inbox

// Headers a dead-lettered record carries besides the original record's own.
// The dead letter has the original key, value and headers; these are
// appended after them. Numbers are decimal text; times are RFC 3339 with
// nanoseconds, in UTC (time.RFC3339Nano).
const (
	// HeaderDLQTopic is the topic the record was consumed from.
	HeaderDLQTopic = "inbox_dlq_topic"
	// HeaderDLQPartition is its partition.
	HeaderDLQPartition = "inbox_dlq_partition"
	// HeaderDLQOffset is its offset.
	HeaderDLQOffset = "inbox_dlq_offset"
	// HeaderDLQConsumer is the consumer's name (Config.Name): the inbox
	// rows a replay of the dead letter must be checked against.
	HeaderDLQConsumer = "inbox_dlq_consumer"
	// HeaderDLQGroup is the consumer group (Config.Group).
	HeaderDLQGroup = "inbox_dlq_group"
	// HeaderDLQError is the text of the last error.
	HeaderDLQError = "inbox_dlq_error"
	// HeaderDLQAttempts is how many handler failures were counted: at most
	// Config.MaxAttempts; fewer for a Permanent error; 0 when the handler
	// was never called (no deduplication key).
	HeaderDLQAttempts = "inbox_dlq_attempts"
	// HeaderDLQFirstAttempt is when the first attempt started.
	HeaderDLQFirstAttempt = "inbox_dlq_first_attempt"
	// HeaderDLQLastAttempt is when the last attempt started.
	HeaderDLQLastAttempt = "inbox_dlq_last_attempt"
	// HeaderDLQRecordTime is the original record's timestamp.
	HeaderDLQRecordTime = "inbox_dlq_record_time"
)
