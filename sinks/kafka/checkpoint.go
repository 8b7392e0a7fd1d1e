package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CheckpointTopic is the relay-internal topic that holds the fences of
// exactly-once mode: one record per Config.CheckpointKey, whose value is the
// fence as PostgreSQL prints an LSN (0/16B3748). It is compacted and has one
// partition; its name starts with "__" so that consumers reading every topic
// can skip it.
const CheckpointTopic = "__outbox_relay_checkpoints"

// encodeFence returns the record value for fence: PostgreSQL's text form
// of the LSN, readable with any console consumer.
func encodeFence(fence pglogrepl.LSN) []byte { return []byte(fence.String()) }

func decodeFence(v []byte) (pglogrepl.LSN, error) {
	lsn, err := pglogrepl.ParseLSN(string(v))
	if err != nil {
		return 0, fmt.Errorf("fence record %q in topic %q is not an LSN such as 0/16B3748: %w", v, CheckpointTopic, err)
	}
	return lsn, nil
}

// CreateCheckpointTopic creates CheckpointTopic, compacted and with one
// partition, unless it exists; it does not check an existing topic's
// settings. It blocks until the controller answers or ctx ends. The relay
// calls it once at start in exactly-once mode, before ReadFence; the
// principal needs CREATE on the topic (or the cluster), or an operator
// creates it beforehand.
func (s *Sink) CreateCheckpointTopic(ctx context.Context) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = CheckpointTopic
	rt.NumPartitions = 1
	rt.ReplicationFactor = -1 // the broker's default.replication.factor
	for k, v := range map[string]string{"cleanup.policy": "compact"} {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		rt.Configs = append(rt.Configs, c)
	}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30_000
	resp, err := req.RequestWith(ctx, s.client)
	if err != nil {
		return fmt.Errorf("create topic %q: %w", CheckpointTopic, err)
	}
	if len(resp.Topics) != 1 {
		return fmt.Errorf("create topic %q: the broker answered for %d topics", CheckpointTopic, len(resp.Topics))
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %q (compacted, 1 partition); create it yourself or grant the relay CREATE on it: %w", CheckpointTopic, err)
	}
	return nil
}

// ReadFence returns the newest committed fence of this Sink's
// Config.CheckpointKey: the end LSN CommitTxn last wrote. It returns zero
// and no error when there is none, or no CheckpointTopic yet.
//
// In exactly-once mode it first takes over the transactional ID: the broker
// then fences any other producer with it and aborts that producer's open
// transaction, so no fence can be committed behind the one returned. That
// is also what lets it read to the end: a read_committed reader stops at
// the first open transaction. It fails with an error wrapping ErrFenced if
// a newer producer has already taken the ID from this one. Call it before
// BeginTxn, never while a transaction is open, and not concurrently with
// BeginTxn or CommitTxn. It reads the whole (compacted) partition with
// read_committed, and blocks until done or ctx ends.
func (s *Sink) ReadFence(ctx context.Context) (pglogrepl.LSN, error) {
	if t := s.txn; t != nil {
		if err := t.usable(); err != nil {
			return 0, err
		}
		if _, _, err := s.client.ProducerID(ctx); err != nil {
			if fenced(err) {
				return 0, t.setFenced(err)
			}
			return 0, fmt.Errorf("take over kafka transactional ID %q: %w", t.id, err)
		}
	}
	key := s.checkpointKey()
	var fence pglogrepl.LSN
	err := readCommitted(ctx, s.client, CheckpointTopic, func(r *kgo.Record) error {
		if !bytes.Equal(r.Key, key) {
			return nil
		}
		lsn, err := decodeFence(r.Value)
		if err != nil {
			return fmt.Errorf("offset %d, key %q: %w", r.Offset, r.Key, err)
		}
		fence = lsn
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read fence %q: %w", key, err)
	}
	return fence, nil
}

// checkpointKey returns the key of this Sink's fence record.
func (s *Sink) checkpointKey() []byte {
	if s.txn != nil {
		return s.txn.key
	}
	return nil
}

// readCommitted calls fn for each committed record of partition 0 of topic,
// in offset order, from the log start to the last stable offset at the time
// of the last fetch. A missing topic has no records. It fetches through
// cl with raw requests, so cl needs no consumer settings.
func readCommitted(ctx context.Context, cl *kgo.Client, topic string, fn func(*kgo.Record) error) error {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("metadata of topic %q: %w", topic, err)
	}
	if len(mresp.Topics) != 1 {
		return fmt.Errorf("metadata of topic %q: the broker answered for %d topics", topic, len(mresp.Topics))
	}
	mtopic := mresp.Topics[0]
	if err := kerr.ErrorForCode(mtopic.ErrorCode); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil
		}
		return fmt.Errorf("metadata of topic %q: %w", topic, err)
	}
	leader := int32(-1)
	for _, p := range mtopic.Partitions {
		if p.Partition == 0 {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("metadata of topic %q partition 0: %w", topic, err)
			}
			leader = p.Leader
		}
	}
	if leader < 0 {
		return fmt.Errorf("topic %q has no leader for partition 0", topic)
	}
	broker := cl.Broker(int(leader))

	var offset int64
	for stalls := 0; ; {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 100
		req.MinBytes = 1
		req.MaxBytes = 4 << 20
		req.IsolationLevel = 1 // read_committed
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, mtopic.TopicID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = 0, offset, 4<<20
		rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, broker)
		if err != nil {
			return fmt.Errorf("fetch topic %q partition 0 at offset %d from broker %d: %w", topic, offset, leader, err)
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return fmt.Errorf("fetch topic %q partition 0 at offset %d from broker %d: %w", topic, offset, leader, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return fmt.Errorf("fetch topic %q partition 0 at offset %d: the broker answered for another partition set", topic, offset)
		}
		part := &resp.Topics[0].Partitions[0]
		perr := kerr.ErrorForCode(part.ErrorCode)
		if errors.Is(perr, kerr.OffsetOutOfRange) && part.LogStartOffset > offset {
			offset = part.LogStartOffset // compaction or retention removed the start
			continue
		}
		if perr != nil {
			return fmt.Errorf("fetch topic %q partition 0 at offset %d from broker %d: %w", topic, offset, leader, perr)
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			Offset: offset, IsolationLevel: kgo.ReadCommitted(), Topic: topic, Partition: 0,
		}, part, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			return fmt.Errorf("decode topic %q partition 0 at offset %d: %w", topic, offset, fp.Err)
		}
		for _, r := range fp.Records {
			if err := fn(r); err != nil {
				return err
			}
		}
		end := part.LastStableOffset
		if end < 0 { // brokers before read_committed support
			end = part.HighWatermark
		}
		if next >= end || offset >= end {
			return nil
		}
		if next <= offset {
			// Below the last stable offset yet nothing came back: the
			// broker returns nothing while a fetch's first batch is
			// larger than MaxBytes, which fence records never are.
			if stalls++; stalls == 3 {
				return fmt.Errorf("fetch topic %q partition 0: no progress at offset %d below the last stable offset %d", topic, offset, end)
			}
			continue
		}
		stalls = 0
		offset = next
	}
}
