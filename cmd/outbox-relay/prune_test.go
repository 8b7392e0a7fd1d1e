package main

import (
	"testing"
	"time"
)

func TestParseRetention(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "7d", want: 7 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "36h", want: 36 * time.Hour},
		{in: "90m", want: 90 * time.Minute},
		{in: "0s", want: 0},
		{in: "0d", want: 0},
		{in: "", wantErr: true},
		{in: "d", wantErr: true},
		{in: "7x", wantErr: true},
		{in: "-1h", wantErr: true},
		{in: "-1d", wantErr: true},
		{in: "1.5d", wantErr: true},
		{in: "7d7d", wantErr: true},
		{in: "7", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseRetention(tt.in)
			if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
				t.Errorf("parseRetention(%q) = %s, %v; want %s, error %t", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
