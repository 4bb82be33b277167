package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/xks"
)

// Cosmian does not say what a key may do or whether it is enabled: its key selection skips a key
// whose usage mask lacks the bit an Encrypt or Decrypt needs and answers "not found"
// (KeyNotFoundException), and its GetKeyMetadata always reports every AES usage and ENABLED. The
// proxy asks the key's attributes (KMIP GetAttributes, as the keys' owner) only where it
// matters: after a KeyNotFound on Encrypt/Decrypt, and for GetKeyMetadata. The hot path is
// untouched.

// KeyAttributeReader reads a key's attributes on one backend; *cosmian.Client is one.
type KeyAttributeReader interface {
	GetAttributes(ctx context.Context, uid string) (*cosmian.KeyAttributes, error)
}

// KeyInfoConfig configures those look-ups. Backends without a reader keep Cosmian's answers.
type KeyInfoConfig struct {
	Readers    map[string]KeyAttributeReader // backend name → reader authenticated as the keys' owner
	TTL        time.Duration                 // how long an answer is reused; default 5s
	Timeout    time.Duration                 // one look-up, further bounded by the request budget; default 100ms
	MaxEntries int                           // cached keys per backend; default 4096
}

// CheckAndSetDefaults fills the defaults and refuses negative values.
func (c *KeyInfoConfig) CheckAndSetDefaults() error {
	if c.TTL < 0 || c.Timeout < 0 || c.MaxEntries < 0 {
		return configErr("key info: TTL, Timeout and MaxEntries must not be negative")
	}
	setDef(&c.TTL, 5*time.Second)
	setDef(&c.Timeout, 100*time.Millisecond)
	setDef(&c.MaxEntries, 4096)
	for name, r := range c.Readers {
		if r == nil {
			return configErr("key info: backend %q has a nil reader", name)
		}
	}
	return nil
}

// keyFacts is what a look-up learnt: whether the key exists and, if so, its mask and state.
type keyFacts struct {
	exists bool
	mask   int32
	state  string
	at     time.Time
}

type keyInfoCache struct {
	cfg KeyInfoConfig
	now func() time.Time
	mu  sync.Mutex
	m   map[string]map[string]keyFacts // backend → key id → facts
}

func newKeyInfoCache(cfg KeyInfoConfig, now func() time.Time) *keyInfoCache {
	return &keyInfoCache{cfg: cfg, now: now, m: map[string]map[string]keyFacts{}}
}

// lookup returns the facts about keyID on backend, from the cache or from the backend; ok is
// false when they cannot be known (no reader, failure, no time left).
func (c *keyInfoCache) lookup(ctx context.Context, backend, keyID string, deadline time.Time) (keyFacts, bool) {
	r := c.cfg.Readers[backend]
	if r == nil {
		return keyFacts{}, false
	}
	now := c.now()
	c.mu.Lock()
	f, hit := c.m[backend][keyID]
	c.mu.Unlock()
	if hit && now.Sub(f.at) < c.cfg.TTL {
		return f, true
	}
	t := min(c.cfg.Timeout, time.Until(deadline))
	if t < minAttempt {
		return keyFacts{}, false
	}
	lctx, cancel := context.WithTimeout(ctx, t)
	a, err := r.GetAttributes(lctx, keyID)
	cancel()
	switch {
	case err == nil:
		f = keyFacts{exists: true, mask: a.UsageMask, state: a.State, at: now}
	case errors.Is(err, cosmian.ErrNotFound):
		f = keyFacts{at: now}
	default:
		return keyFacts{}, false
	}
	c.mu.Lock()
	keys := c.m[backend]
	if keys == nil {
		keys = map[string]keyFacts{}
		c.m[backend] = keys
	}
	if _, present := keys[keyID]; !present && len(keys) >= c.cfg.MaxEntries {
		// Bounded: drop expired entries, and if none has expired, one arbitrary entry.
		for k, e := range keys {
			if now.Sub(e.at) >= c.cfg.TTL {
				delete(keys, k)
			}
		}
		for k := range keys {
			if len(keys) < c.cfg.MaxEntries {
				break
			}
			delete(keys, k)
		}
	}
	keys[keyID] = f
	c.mu.Unlock()
	return f, true
}

// allows reports whether mask has the bit op needs; Cosmian's non-FIPS Unrestricted bit
// allows everything.
func allows(mask int32, op xks.Operation) bool {
	if mask&cosmian.UsageUnrestricted != 0 {
		return true
	}
	switch op {
	case xks.OpEncrypt:
		return mask&cosmian.UsageEncrypt != 0
	case xks.OpDecrypt:
		return mask&cosmian.UsageDecrypt != 0
	}
	return true
}

// KeyUsages maps a CryptographicUsageMask onto XKS keyUsage values (Encrypt → ENCRYPT,
// Decrypt → DECRYPT, WrapKey → WRAP, UnwrapKey → UNWRAP; Unrestricted → all four).
func KeyUsages(mask int32) []string {
	if mask&cosmian.UsageUnrestricted != 0 {
		mask |= cosmian.UsageXKS
	}
	out := make([]string, 0, 4)
	for _, u := range []struct {
		bit  int32
		name string
	}{{cosmian.UsageEncrypt, "ENCRYPT"}, {cosmian.UsageDecrypt, "DECRYPT"}, {cosmian.UsageWrapKey, "WRAP"}, {cosmian.UsageUnwrapKey, "UNWRAP"}} {
		if mask&u.bit != 0 {
			out = append(out, u.name)
		}
	}
	return out
}

// KeyStatus is ENABLED for an Active key and DISABLED otherwise.
func KeyStatus(state string) string {
	if state == cosmian.StateActive {
		return "ENABLED"
	}
	return "DISABLED"
}

// keyTruth corrects a finished exchange where Cosmian's XKS answer is not the spec's: a
// KeyNotFound on Encrypt/Decrypt for a key that exists without the needed usage bit becomes
// InvalidKeyUsageException, and GetKeyMetadata reports the key's real usage and status. It runs
// after forward, only on those paths; otherwise it returns its inputs.
func (p *Proxy) keyTruth(ex *exchange, status int, out []byte, err error) (int, []byte, error) {
	if p.keyInfo == nil && p.cfg.Migration == nil {
		return status, out, err
	}
	deadline := ex.start.Add(p.cfg.Limits.Budget - 10*time.Millisecond)
	switch {
	case err != nil && ex.op == xks.OpMetadata && isCreateKeyRefusal(err):
		if mig := p.cfg.Migration; mig != nil {
			var xe *xks.Error
			errors.As(err, &xe)
			mig.CreateKeyRefused(ex.keyID, ex.res.Backend, xe.Message)
		}
	case err != nil && (ex.op == xks.OpEncrypt || ex.op == xks.OpDecrypt) && xks.NameOf(err) == xks.KeyNotFoundException:
		for _, b := range []string{ex.res.Backend, ex.res.FellBackFrom} {
			if b == "" {
				continue
			}
			if p.keyInfo == nil {
				break
			}
			f, ok := p.keyInfo.lookup(ex.ctx, b, ex.keyID, deadline)
			if ok && f.exists && !allows(f.mask, ex.op) {
				e := &xks.Error{Name: xks.InvalidKeyUsageException, Message: fmt.Sprintf("key %s does not allow %s: its usage mask lacks the %s bit", ex.keyID, ex.op, ex.op), Err: err}
				ex.res.Backend = b
				o := xks.AppendErrorBody((*ex.outBuf)[:0], e.Name, e.Message)
				*ex.outBuf = o
				return e.Status(), o, e
			}
		}
	case p.keyInfo != nil && err == nil && ex.op == xks.OpMetadata && (ex.v.Metadata.KMSOperation == "GetKeyMetadata" || ex.v.Metadata.KMSOperation == "DescribeKey"):
		f, ok := p.keyInfo.lookup(ex.ctx, ex.res.Backend, ex.keyID, deadline)
		if !ok || !f.exists {
			return status, out, err
		}
		var md struct {
			KeySpec   string   `json:"keySpec"`
			KeyUsage  []string `json:"keyUsage"`
			KeyStatus string   `json:"keyStatus"`
		}
		if json.Unmarshal(out, &md) != nil {
			return status, out, err
		}
		md.KeyUsage, md.KeyStatus = KeyUsages(f.mask), KeyStatus(f.state)
		b, merr := json.Marshal(md)
		if merr != nil {
			return status, out, err
		}
		*ex.outBuf = append((*ex.outBuf)[:0], b...)
		return status, *ex.outBuf, nil
	}
	return status, out, err
}

// isCreateKeyRefusal: Cosmian after 5.26 refuses CreateKey over an existing non-XKS key
// (cosmian.IsXKSCreateKeyRefusal) with an InternalException, a name otherwise retryable.
func isCreateKeyRefusal(err error) bool {
	var xe *xks.Error
	return errors.As(err, &xe) && xe.Name == xks.InternalException && cosmian.IsXKSCreateKeyRefusal(xe.Message)
}
