package certs

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/internal/metrictest"
)

func TestCredentialAges(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		creds   []CredentialAge
		wantErr error
		want    map[string]float64 // access key id -> seconds
	}{
		{name: "two sets", creds: []CredentialAge{
			{AccessKeyID: "AKIANEW", Created: now.Add(-36 * time.Hour)},
			{AccessKeyID: "AKIAOLD", Created: now.AddDate(0, 0, -90)},
		}, want: map[string]float64{"AKIANEW": 36 * 3600, "AKIAOLD": 90 * 86400}},
		{name: "too many", creds: func() []CredentialAge {
			var c []CredentialAge
			for i := range MaxCredentialsPerPrefix + 1 {
				c = append(c, CredentialAge{AccessKeyID: fmt.Sprint("AKIA", i), Created: now})
			}
			return c
		}(), wantErr: ErrTooManyCredentials},
		{name: "missing created", creds: []CredentialAge{{AccessKeyID: "AKIA"}}, wantErr: errors.New("any")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			m.SetNow(func() time.Time { return now })
			err := m.SetCredentialAges("/kms/a", tc.creds)
			if tc.wantErr != nil {
				if err == nil || (errors.Is(tc.wantErr, ErrTooManyCredentials) && !errors.Is(err, ErrTooManyCredentials)) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for id, want := range tc.want {
				got, ok := metrictest.Value(t, reg, MetricCredentialAgeSeconds, map[string]string{"prefix": "/kms/a", "access_key_id": id})
				if !ok || got != want {
					t.Errorf("%s age = %v (present %v), want %v", id, got, ok, want)
				}
			}
			// Replacing the list removes sets that are gone (rotation done).
			if err := m.SetCredentialAges("/kms/a", tc.creds[:1]); err != nil {
				t.Fatal(err)
			}
			if _, ok := metrictest.Value(t, reg, MetricCredentialAgeSeconds, map[string]string{"access_key_id": "AKIAOLD"}); ok {
				t.Error("removed credential set still reported")
			}
			if err := m.SetCredentialAges("/kms/a", nil); err != nil {
				t.Fatal(err)
			}
			if _, ok := metrictest.Value(t, reg, MetricCredentialAgeSeconds, nil); ok {
				t.Error("prefix with no credentials still reported")
			}
		})
	}
}

func TestNilMetricsIsSafe(t *testing.T) {
	var m *Metrics
	m.reloaded("files", nil)
	m.setLeaf("files", "x", nil)
	if err := m.SetCredentialAges("/p", []CredentialAge{{AccessKeyID: "A", Created: time.Now()}}); err != nil {
		t.Fatal(err)
	}
}
