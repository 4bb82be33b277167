package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"slices"
	"sync"
	"sync/atomic"
)

// maxKeySlots bounds the signing keys cached per credential. Only days within MaxSkew of now
// reach the cache, so two slots are used around midnight and one otherwise.
const maxKeySlots = 4

// credEntry is one configured credential with its cache of derived signing keys.
type credEntry struct {
	cred  Credential
	mu    sync.Mutex                 // serialises key derivation
	slots atomic.Pointer[[]*keySlot] // immutable list, newest day first; read without locking
}

// keySlot holds HMAC-SHA256 instances keyed with one day's signing key, pooled so that the hot
// path neither derives a key nor allocates an HMAC.
type keySlot struct {
	day  uint32 // yyyymmdd
	macs sync.Pool
}

// slot returns the slot for the scope date (yyyymmdd as text and as a number), deriving the
// signing key on first use.
func (e *credEntry) slot(day uint32, date, region, service string) *keySlot {
	if s := findSlot(e.slots.Load(), day); s != nil {
		return s
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.slots.Load()
	if s := findSlot(old, day); s != nil {
		return s
	}
	key := deriveSigningKey(e.cred.Secret, date, region, service)
	s := &keySlot{day: day}
	s.macs.New = func() any { return hmac.New(sha256.New, key) }
	list := []*keySlot{s}
	if old != nil {
		list = append(list, *old...)
	}
	slices.SortFunc(list, func(a, b *keySlot) int { return int(b.day) - int(a.day) })
	if len(list) > maxKeySlots {
		list = list[:maxKeySlots]
	}
	e.slots.Store(&list)
	return s
}

func findSlot(p *[]*keySlot, day uint32) *keySlot {
	if p == nil {
		return nil
	}
	for _, s := range *p {
		if s.day == day {
			return s
		}
	}
	return nil
}

// sign writes HMAC-SHA256(signing key, msg) into out.
func (s *keySlot) sign(out *[32]byte, msg []byte) {
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(msg)
	h.Sum(out[:0])
	s.macs.Put(h)
}

// deriveSigningKey is SigV4's chain: HMAC("AWS4"+secret, date) -> region -> service ->
// "aws4_request".
func deriveSigningKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, scopeTerminator)
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}
