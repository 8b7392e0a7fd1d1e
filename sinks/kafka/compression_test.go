package kafka_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// batchCodecs records the batches a consumer reads; it is a kgo hook.
type batchCodecs struct {
	mu      sync.Mutex
	batches []kgo.FetchBatchMetrics
}

func (b *batchCodecs) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batches = append(b.batches, m)
}

// TestPublishCompression publishes a batch of events with each codec and
// reads them back with an independent consumer, which sees the codec in
// the attributes of the batch the broker stored: kfake keeps batches as
// produced, as Kafka does under compression.type=producer.
func TestPublishCompression(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		compression kafka.Compression
		want        kgo.CompressionCodecType
	}{
		{"zero means snappy", "", kgo.CodecSnappy},
		{"none", kafka.CompressionNone, kgo.CodecNone},
		{"snappy", kafka.CompressionSnappy, kgo.CodecSnappy},
		{"lz4", kafka.CompressionLZ4, kgo.CodecLz4},
		{"zstd", kafka.CompressionZstd, kgo.CodecZstd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const topic, n = "outbox.order", 50
			c := newCluster(t, kfake.SeedTopics(1, topic))
			// A linger longer than the test keeps the events in one
			// batch, or a few, until Flush sends them.
			s := newSink(t, c, kafka.Config{Compression: tt.compression, Linger: time.Minute}, nil)
			ctx := testContext(t)
			a := newAcks(t)
			var want []string
			for i := range n {
				ev := event("order", "order-1", i)
				ev.Payload = fmt.Appendf(nil, `{"seq": %d, "status": "placed", "currency": "EUR", "customer_id": "cus_%06d"}`, i, i%7)
				want = append(want, string(ev.Payload))
				s.Publish(ctx, ev, a.done(ev))
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if errs := a.errors(); len(errs) > 0 || a.count() != n {
				t.Fatalf("after Flush, done called for %d of %d events, errors %v", a.count(), n, errs)
			}

			hook := new(batchCodecs)
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.WithHooks(hook),
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
				kgo.FetchMaxWait(100*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			var got []string
			for len(got) < n {
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("consumed %d of %d records before the timeout", len(got), n)
				}
				fs.EachError(func(topic string, p int32, err error) { t.Fatalf("consume %s/%d: %v", topic, p, err) })
				fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("consumed values (-want +got):\n%s", diff)
			}

			// Usually one batch; under load the client may have sent a
			// first part before Flush. Every batch must use the codec.
			hook.mu.Lock()
			defer hook.mu.Unlock()
			records, multi := 0, 0
			for _, b := range hook.batches {
				records += int(b.NumRecords)
				if b.NumRecords < 2 {
					continue // a lone record may be stored uncompressed: compression would not shrink it
				}
				multi++
				if got := kgo.CompressionCodecType(b.CompressionType); got != tt.want {
					t.Errorf("stored batch of %d records compressed with codec %d, want codec %d", b.NumRecords, got, tt.want)
				}
				if tt.want != kgo.CodecNone && b.NumRecords > 1 && b.CompressedBytes >= b.UncompressedBytes {
					t.Errorf("stored batch of %d records: %d bytes compressed from %d, want fewer", b.NumRecords, b.CompressedBytes, b.UncompressedBytes)
				}
			}
			if multi == 0 || records != n {
				t.Errorf("consumer read %d records in %d batches %+v, want %d", records, len(hook.batches), hook.batches, n)
			}
		})
	}
}

// benchRecord is what the Sink makes of an event: the aggregate ID as key,
// the payload as value, and the four headers every record carries.
type benchRecord struct {
	key, value []byte
	headers    []kmsg.Header
}

// batchBody encodes recs as franz-go encodes the records of one record
// batch: the bytes its compressor is given.
func batchBody(recs []benchRecord) []byte {
	var body []byte
	for i, r := range recs {
		rec := kmsg.Record{
			TimestampDelta64: int64(i / 8), // a few milliseconds apart
			OffsetDelta:      int32(i),
			Key:              r.key,
			Value:            r.value,
			Headers:          r.headers,
		}
		// Length covers what follows it: encode once with a zero
		// length (one byte) to learn it.
		rec.Length = int32(len(rec.AppendTo(nil)) - 1)
		body = rec.AppendTo(body)
	}
	return body
}

// benchRecords returns n records of aggregate type typ with payloads from
// payload, on 1,000 aggregates, with random event IDs.
func benchRecords(rng *rand.Rand, n int, typ string, payload func(i int) []byte) []benchRecord {
	recs := make([]benchRecord, n)
	for i := range recs {
		id := make([]byte, 16)
		for j := range id {
			id[j] = byte(rng.Uint32())
		}
		uuid := hex.EncodeToString(id)
		uuid = uuid[:8] + "-" + uuid[8:12] + "-" + uuid[12:16] + "-" + uuid[16:20] + "-" + uuid[20:]
		recs[i] = benchRecord{
			key:   []byte(typ + "-" + strconv.Itoa(rng.IntN(1000))),
			value: payload(i),
			headers: []kmsg.Header{
				{Key: kafka.HeaderID, Value: []byte(uuid)},
				{Key: kafka.HeaderEventType, Value: []byte("OrderPlaced")},
				{Key: kafka.HeaderAggregateType, Value: []byte(typ)},
				{Key: kafka.HeaderPosition, Value: fmt.Appendf(nil, "%016X%08X", 0x16B3748+i*400, i%10)},
			},
		}
	}
	return recs
}

// orderJSON returns a typical outbox event payload of about 300 bytes, as
// PostgreSQL prints jsonb (keys shortest first, ", " and ": "): field names
// repeat from event to event, values do not.
func orderJSON(rng *rand.Rand) []byte {
	id := make([]byte, 16)
	for j := range id {
		id[j] = byte(rng.Uint32())
	}
	qty, price := 1+rng.IntN(4), 100+rng.IntN(9900)
	qty2, price2 := 1+rng.IntN(4), 100+rng.IntN(9900)
	return fmt.Appendf(nil, `{"lines": [{"qty": %d, "sku": "SKU-%05d", "price": %d}, {"qty": %d, "sku": "SKU-%05d", "price": %d}], `+
		`"total": {"amount": %d, "currency": "EUR"}, "status": "placed", "order_id": "%x", `+
		`"placed_at": "2026-11-26T12:%02d:%02d.%06d+00:00", "customer_id": "cus_%06d"}`,
		qty, rng.IntN(100000), price, qty2, rng.IntN(100000), price2,
		qty*price+qty2*price2, id, rng.IntN(60), rng.IntN(60), rng.IntN(1000000),
		rng.IntN(1000000))
}

// padJSON returns a payload like the end-to-end benchmark's W4: about 8 KB,
// {"n": N, "pad": "..."} with the pad base64 of random bytes. W4 draws its
// pads from 64; here each record has its own, so no codec finds repeats
// across records. Base64 carries 6 bits in each 8, which only entropy
// coding wins back: snappy and lz4 have none, and zstd at the level
// franz-go uses does not apply it to literals alone.
func padJSON(rng *rand.Rand, n int) []byte {
	raw := make([]byte, (8192-26)*3/4)
	for j := range raw {
		raw[j] = byte(rng.Uint32())
	}
	return fmt.Appendf(nil, `{"n": %d, "pad": "%s"}`, n, base64.StdEncoding.EncodeToString(raw))
}

// BenchmarkCompression compresses one record batch with franz-go's own
// compressor, as the producer does before it sends the batch, for each
// codec the Sink offers. MB/s is of uncompressed batch bytes; ratio is
// compressed over uncompressed bytes (franz-go sends a batch uncompressed
// when the ratio is 1 or more, having spent the time all the same). The
// none codec calls no compressor, so it costs nothing and has ratio 1.
func BenchmarkCompression(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	batches := []struct {
		name string
		recs []benchRecord
	}{
		// A full backlog batch of small events, about 87 KB.
		{"json-300B-x200", benchRecords(rng, 200, "order", func(int) []byte { return orderJSON(rng) })},
		// A batch at low load, the relay lingering 0.
		{"json-300B-x10", benchRecords(rng, 10, "order", func(int) []byte { return orderJSON(rng) })},
		// W4's rows, about 67 KB.
		{"base64-8KB-x8", benchRecords(rng, 8, "order", func(i int) []byte { return padJSON(rng, i) })},
	}
	codecs := []struct {
		name  kafka.Compression
		codec kgo.CompressionCodec
	}{
		{kafka.CompressionSnappy, kgo.SnappyCompression()},
		{kafka.CompressionLZ4, kgo.Lz4Compression()},
		{kafka.CompressionZstd, kgo.ZstdCompression()},
	}
	for _, batch := range batches {
		body := batchBody(batch.recs)
		for _, c := range codecs {
			b.Run(fmt.Sprintf("%s/%s", batch.name, c.name), func(b *testing.B) {
				comp, err := kgo.DefaultCompressor(c.codec)
				if err != nil {
					b.Fatal(err)
				}
				// franz-go's pooled buffer starts at 8 KiB.
				dst := bytes.NewBuffer(make([]byte, 8<<10))
				// Once before timing, so the codec's pooled state
				// (zstd's encoder, lz4's writer) exists, as it does
				// in a running producer.
				dst.Reset()
				out, used := comp.Compress(dst, body)
				if used == kgo.CodecError {
					b.Fatalf("compress %s: codec error", c.name)
				}
				ratio := float64(len(out)) / float64(len(body))
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					dst.Reset()
					comp.Compress(dst, body)
				}
				b.ReportMetric(ratio, "ratio")
				b.ReportMetric(float64(len(body)), "batch-bytes")
			})
		}
	}
}
