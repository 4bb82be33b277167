package cosmian

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A listing of every owned object is decoded as it arrives, within its own size bound: ids and
// states only, whatever else each entry carries; anything but one JSON array is a bad reply.
func TestDecodeOwned(t *testing.T) {
	entry := `{"object_id":"k-%d","state":"Active","attributes":{"CryptographicAlgorithm":"AES","Attribute":[{"AttributeName":"tag","AttributeValue":"[\"aws-xks\"]"}]}}`
	many := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(entry, i)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	for _, tc := range []struct {
		name, body string
		max        int64
		n          int
		err        error // nil: success
	}{
		{"empty", `[]`, 100, 0, nil},
		{"one", many(1), 1 << 10, 1, nil},
		{"thousands", many(5000), 1 << 22, 5000, nil},
		{"trailing newline", many(2) + "\n", 1 << 10, 2, nil},
		{"one byte too many", many(2), int64(len(many(2)) - 1), 0, ErrResponseTooLarge},
		{"exactly the bound", many(2), int64(len(many(2))), 2, nil},
		{"not an array", `{"object_id":"k"}`, 100, 0, errBad},
		{"truncated", many(3)[:40], 1 << 10, 0, errBad},
		{"two arrays", `[][]`, 100, 0, errBad},
		{"wrong type", `[{"object_id":7}]`, 100, 0, errBad},
		{"not JSON", `<html>`, 100, 0, errBad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := decodeOwned(strings.NewReader(tc.body), tc.max)
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("err = %v", err)
			case tc.err == ErrResponseTooLarge && !errors.Is(err, ErrResponseTooLarge):
				t.Fatalf("err = %v, want too large", err)
			case tc.err == errBad && (err == nil || errors.Is(err, ErrResponseTooLarge)):
				t.Fatalf("err = %v, want a decoding error", err)
			}
			if tc.err == nil && (len(out) != tc.n || tc.n > 0 && (out[tc.n-1].ObjectID != fmt.Sprintf("k-%d", tc.n-1) || out[0].State != StateActive)) {
				t.Fatalf("decoded %d entries (%+v), want %d", len(out), out, tc.n)
			}
		})
	}
}

var errBad = errors.New("bad reply")

// Owned through a real TLS server: the listing's own bound applies (not MaxResponseBytes), and
// a reply over it is ErrResponseTooLarge naming the server.
func TestOwnedBounds(t *testing.T) {
	body := `[` + strings.Repeat(`{"object_id":"k","state":"Active","attributes":{}},`, 999) + `{"object_id":"k","state":"Active"}]`
	c, srv := newTestClient(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	cfg := c.cfg
	cfg.MaxResponseBytes = 1 << 10 // far below the listing: not its bound
	big, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := big.Owned(context.Background()); err != nil || len(o) != 1000 {
		t.Fatalf("Owned = %d entries, %v", len(o), err)
	}
	cfg.MaxListBytes = int64(len(body) / 2)
	small, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = small.Owned(context.Background())
	if !errors.Is(err, ErrResponseTooLarge) || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("err = %v, want too large naming %s", err, srv.URL)
	}
}

// FuzzDecodeOwned: any reply decodes to entries or an error, within the bound.
func FuzzDecodeOwned(f *testing.F) {
	f.Add([]byte(`[{"object_id":"k-1","state":"Active","attributes":{}}]`), int64(1<<10))
	f.Add([]byte(`[]`), int64(1))
	f.Add([]byte(`[{"object_id":"k-1"}`), int64(100))
	f.Fuzz(func(t *testing.T, data []byte, max int64) {
		if max < 0 || max > 1<<20 {
			return
		}
		out, err := decodeOwned(strings.NewReader(string(data)), max)
		if err == nil && int64(len(data)) > max {
			t.Fatalf("accepted %d bytes over a bound of %d", len(data), max)
		}
		if err != nil && out != nil {
			t.Fatal("entries returned with an error")
		}
	})
}
