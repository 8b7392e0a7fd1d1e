package kafka

import (
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCompression checks which Compression values Validate accepts and the
// one codec each gives the producer.
func TestCompression(t *testing.T) {
	tests := []struct {
		compression Compression
		want        kgo.CompressionCodec // of an accepted value
		invalid     bool
	}{
		{compression: "", want: kgo.SnappyCompression()},
		{compression: CompressionNone, want: kgo.NoCompression()},
		{compression: CompressionSnappy, want: kgo.SnappyCompression()},
		{compression: CompressionLZ4, want: kgo.Lz4Compression()},
		{compression: CompressionZstd, want: kgo.ZstdCompression()},
		{compression: "gzip", invalid: true},
		{compression: "LZ4", invalid: true},
		{compression: "snapy", invalid: true},
		{compression: " none", invalid: true},
	}
	for _, tt := range tests {
		name := string(tt.compression)
		if name == "" {
			name = "zero"
		}
		t.Run(name, func(t *testing.T) {
			cfg := Config{Brokers: []string{"127.0.0.1:1"}, Compression: tt.compression}
			err := cfg.Validate()
			if tt.invalid {
				const choices = "use none, snappy, lz4 or zstd"
				if err == nil || !strings.Contains(err.Error(), choices) || !strings.Contains(err.Error(), `"`+string(tt.compression)+`"`) {
					t.Errorf("Validate() with Compression %q = %v, want an error naming the value and saying %q", tt.compression, err, choices)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() with Compression %q = %v, want nil", tt.compression, err)
			}
			cl, err := kgo.NewClient(cfg.withDefaults().opts()...)
			if err != nil {
				t.Fatalf("NewClient(%+v opts): %v", cfg, err)
			}
			defer cl.Close()
			got, _ := cl.OptValue(kgo.ProducerBatchCompression).([]kgo.CompressionCodec)
			if want := []kgo.CompressionCodec{tt.want}; !slices.Equal(got, want) {
				t.Errorf("Compression %q: OptValue(ProducerBatchCompression) = %+v, want %+v alone", tt.compression, got, want)
			}
		})
	}
}
