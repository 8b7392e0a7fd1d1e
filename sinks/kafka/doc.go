// Package kafka publishes outbox events to Kafka with franz-go; it is the only
// package of the relay that imports kgo. A Sink turns each schema.Event into a
// record keyed by the event's aggregate ID, on a topic named by a template,
// with the event's identity and position in record headers.
//
// Invariant: done reports success for an event only after every in-sync
// replica of its partition has the record, and records with the same key and
// topic reach the same partition in Publish order, across retries, with no
// duplicates from the producer's own retries.
//
// An event that can never become a legal record (no aggregate ID, a topic name
// Kafka rejects, headers that are not a JSON object, a record larger than
// Config.MaxMessageBytes) fails at once with a *RecordError and is not
// produced; callers hand it to their poison-row policy. A batch the broker
// refuses for good is sent again one record at a time, so that only a record
// refused on its own is reported as the broker's refusal of it (also poison);
// a topic the broker refuses is held and retried. Every other failure means
// the producer could not deliver and is not the event's fault.
package kafka
