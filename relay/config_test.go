package relay

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "zero", cfg: Config{}},
		{name: "positive", cfg: Config{MaxInflightEvents: 1, MaxInflightBytes: 1}},
		{name: "defaults spelled out", cfg: Config{}.withDefaults()},
		{name: "halt", cfg: Config{PoisonPolicy: PolicyHalt}},
		{name: "negative events", cfg: Config{MaxInflightEvents: -1}, wantErr: true},
		{name: "negative bytes", cfg: Config{MaxInflightBytes: -1}, wantErr: true},
		{name: "unknown policy", cfg: Config{PoisonPolicy: "drop"}, wantErr: true},
		{name: "unknown delivery", cfg: Config{Delivery: "at-most-once"}, wantErr: true},
		{name: "negative interval", cfg: Config{TransactionInterval: -time.Second}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Errorf("Validate(%+v) = %v, want error %t", tt.cfg, err, tt.wantErr)
			}
			r, err := New(tt.cfg, (&held{}).sink(), nil, nil)
			if (err != nil) != tt.wantErr {
				t.Errorf("New(%+v) = %v, want error %t", tt.cfg, err, tt.wantErr)
			}
			if (r == nil) != tt.wantErr {
				t.Errorf("New(%+v) relay = %v, want nil %t", tt.cfg, r, tt.wantErr)
			}
		})
	}
}

func TestConfigWithDefaults(t *testing.T) {
	defaults := Config{
		MaxInflightEvents:   DefaultMaxInflightEvents,
		MaxInflightBytes:    DefaultMaxInflightBytes,
		PoisonPolicy:        DefaultPoisonPolicy,
		Delivery:            DefaultDelivery,
		TransactionInterval: DefaultTransactionInterval,
	}
	set := Config{
		MaxInflightEvents:   7,
		MaxInflightBytes:    1 << 10,
		PoisonPolicy:        PolicyHalt,
		Delivery:            DeliveryExactlyOnce,
		TransactionInterval: time.Second,
	}
	tests := []struct {
		name string
		cfg  Config
		want Config
	}{
		{name: "zero takes every default", cfg: Config{}, want: defaults},
		{name: "set fields stay", cfg: set, want: set},
		{
			// Validate, which applies the defaults first, must still see them.
			name: "negative fields stay",
			cfg:  Config{MaxInflightEvents: -1, MaxInflightBytes: -1, TransactionInterval: -1},
			want: Config{MaxInflightEvents: -1, MaxInflightBytes: -1, PoisonPolicy: DefaultPoisonPolicy, Delivery: DefaultDelivery, TransactionInterval: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.cfg.withDefaults()); diff != "" {
				t.Errorf("%+v.withDefaults() (-want +got):\n%s", tt.cfg, diff)
			}
		})
	}
	if DefaultPoisonPolicy != PolicyDLQ || DefaultDelivery != DeliveryAtLeastOnce {
		t.Errorf("DefaultPoisonPolicy, DefaultDelivery = %q, %q; want %q, %q as documented",
			DefaultPoisonPolicy, DefaultDelivery, PolicyDLQ, DeliveryAtLeastOnce)
	}
}
