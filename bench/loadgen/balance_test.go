package loadgen

import (
	"net"
	"testing"
	"time"
)

// Requests spread over every endpoint; one whose replica is down refuses the connection and the
// request goes to the next, so nothing fails.
func TestEndpointsRoundRobinPastADownReplica(t *testing.T) {
	emu, cfg := startEmu(t)
	second, err := emu.Start("127.0.0.1:0", true) // a second replica over the same keys
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + l.Addr().String()
	l.Close() // nothing listens there any more: connections are refused
	cfg.Endpoints = []string{second.URL, down}
	// Each listener has its own self-signed certificate: trust both.
	cfg.TLS.RootCAs.AddCert(second.Cert)
	cfg.Duration = 500 * time.Millisecond
	cfg.Mix = Mix{Encrypt: 0.5, Decrypt: 0.5}
	_, rep := runOnce(t, cfg)
	if rep.Failed != 0 || rep.Total == 0 {
		t.Fatalf("failed %d of %d: %v", rep.Failed, rep.Total, rep.ByError)
	}
	first := cfg.Endpoint
	for _, tc := range []struct {
		name, url string
		live      bool
	}{{"first", first, true}, {"second", second.URL, true}, {"down", down, false}} {
		s, ok := rep.ByEndpoint[tc.url]
		switch {
		case !ok:
			t.Errorf("%s: no stats in %v", tc.name, rep.ByEndpoint)
		case tc.live && (s.Requests == 0 || s.Failed != 0 || s.Refused != 0):
			t.Errorf("%s: %+v", tc.name, s)
		case !tc.live && (s.Requests != 0 || s.Refused == 0):
			t.Errorf("%s (down): %+v", tc.name, s)
		}
	}
	if got := rep.ByEndpoint[first].Requests + rep.ByEndpoint[second.URL].Requests; got != rep.Total {
		t.Errorf("endpoints served %d of %d requests", got, rep.Total)
	}
}
