package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
)

// The derivation example from AWS's SigV4 documentation.
func TestDeriveSigningKey(t *testing.T) {
	k := deriveSigningKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
	if got := hex.EncodeToString(k); got != "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d" {
		t.Fatalf("signing key %s", got)
	}
}

func TestKeyCache(t *testing.T) {
	e := &credEntry{cred: credA}
	s1 := e.slot(20260314, "20260314", "us-east-1", "kms-xks-proxy")
	if e.slot(20260314, "20260314", "us-east-1", "kms-xks-proxy") != s1 {
		t.Fatal("same day derived twice")
	}
	var out [32]byte
	msg := []byte("string to sign")
	s1.sign(&out, msg)
	h := hmac.New(sha256.New, deriveSigningKey(credA.Secret, "20260314", "us-east-1", "kms-xks-proxy"))
	h.Write(msg)
	if !hmac.Equal(out[:], h.Sum(nil)) {
		t.Fatal("pooled HMAC differs from crypto/hmac")
	}
	// Concurrent first use of new days: bounded, newest days kept.
	var wg sync.WaitGroup
	for d := uint32(1); d <= 9; d++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.slot(20260320+d, "202603"+string(rune('0'+(20+d)/10))+string(rune('0'+(20+d)%10)), "us-east-1", "kms-xks-proxy")
		}()
	}
	wg.Wait()
	list := *e.slots.Load()
	if len(list) != maxKeySlots {
		t.Fatalf("%d slots, want %d", len(list), maxKeySlots)
	}
	for i, s := range list {
		if want := uint32(20260329 - i); s.day != want {
			t.Fatalf("slot %d holds day %d, want %d", i, s.day, want)
		}
	}
}
